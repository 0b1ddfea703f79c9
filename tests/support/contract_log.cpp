#include "tests/support/contract_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <cstdlib>
#include <filesystem>

#include "gateway/util/utf8.hpp"
#include "tests/support/process.hpp"

namespace segue::test {
namespace {

// Bodies the validator reads: JSON, problems, event streams and text. Anything else (audio) is
// checked by its status and Content-Type only; its size is kept.
bool textual(const std::string& content_type) {
    return content_type.find("json") != std::string::npos || content_type.rfind("text/", 0) == 0;
}

}  // namespace

void record_response(const std::string& method, const std::string& target, const http_response& r) {
    const char* dir = std::getenv("SEGUE_CONTRACT_LOG");
    if (dir == nullptr || *dir == '\0')
        return;
    const std::string content_type = r.header("content-type").value_or("");
    // A proxy's own error page (nginx in front of replicas: "502 Bad Gateway" in HTML) is not
    // the gateway's answer; what nginx passes on from a replica is, and is checked.
    if (r.status >= 500 && r.header("server").value_or("").rfind("nginx", 0) == 0 &&
        content_type.rfind("text/html", 0) == 0)
        return;
    boost::json::object o;
    o["method"] = method;
    o["target"] = util::sanitize_utf8(target);
    o["status"] = r.status;
    o["content_type"] = content_type;
    if (textual(content_type))
        o["body"] = util::sanitize_utf8(r.body);
    o["body_bytes"] = r.body.size();
    if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info())
        o["test"] = std::string(info->test_suite_name()) + "." + info->name();
    const std::string line = boost::json::serialize(o) + "\n";
    // One file per process, one write per line: concurrent test processes never interleave.
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);  // CTest's contract.reset removed it
    const std::string path = std::string(dir) + "/" + std::to_string(::getpid()) + ".jsonl";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    [[maybe_unused]] auto n = ::write(fd, line.data(), line.size());
    ::close(fd);
}

}  // namespace segue::test
