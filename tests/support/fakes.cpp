#include "tests/support/fakes.hpp"

#include <boost/json.hpp>

#include <stdexcept>

namespace segue::test {

fake_provider::fake_provider(const std::string& binary, const std::vector<std::string>& args) {
    const std::string port_file = dir_.file("port");
    std::vector<std::string> argv = {binary, "--listen", "127.0.0.1:0", "--port-file", port_file};
    argv.insert(argv.end(), args.begin(), args.end());
    proc_.start(argv, dir_.file("log"));
    port_ = wait_port_file(port_file);
    if (port_ == 0)
        throw std::runtime_error(binary + " did not start: " + read_file(dir_.file("log")));
}

bool fake_provider::control(const std::string& body, std::string* error) {
    auto r = http_request(port_, "POST", "/_control", body, {"Content-Type: application/json"});
    if (r && r->status == 200)
        return true;
    if (error)
        *error = r ? r->body : "no answer";
    return false;
}

boost::json::object fake_provider::get(const std::string& path) {
    auto r = http_request(port_, "GET", path);
    if (!r || r->status != 200)
        return {};
    auto v = boost::json::parse(r->body);
    return v.is_object() ? v.as_object() : boost::json::object{};
}

boost::json::array fake_provider::requests(const std::string& route) {
    auto doc = get("/_control/requests?route=" + route);
    auto it = doc.find("requests");
    return it != doc.end() && it->value().is_array() ? it->value().as_array()
                                                     : boost::json::array{};
}

}  // namespace segue::test
