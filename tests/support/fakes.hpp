#pragma once
// A fake provider binary (tests/fakes/) as a child process on 127.0.0.1:<ephemeral>, with its
// /_control API (see tests/fakes/common/control.hpp).

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace segue::test {

class fake_provider {
  public:
    // `binary` is SEGUE_FAKE_MUSICGPT_PATH or SEGUE_FAKE_MUSICAPI_PATH; `args` are extra flags.
    fake_provider(const std::string& binary, const std::vector<std::string>& args);
    std::uint16_t port() const { return port_; }
    std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
    // POST /_control; false (and the answer in `error`) unless 200.
    bool control(const std::string& body, std::string* error = nullptr);
    boost::json::object get(const std::string& path);
    boost::json::array requests(const std::string& route);

  private:
    temp_dir dir_;
    child_process proc_;
    std::uint16_t port_ = 0;
};

}  // namespace segue::test
