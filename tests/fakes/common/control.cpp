#include "tests/fakes/common/control.hpp"

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace segue::fakes {

namespace json = boost::json;

fake_reply json_reply(int status, const json::value& v) {
    return fake_reply::json(status, to_json_text(v));
}

bool is_control_path(std::string_view path) {
    return path == "/_control" || path.substr(0, 10) == "/_control/";
}

namespace {

json::object state_of(control_hooks& h) {
    json::object o;
    o["settings"] = h.describe ? h.describe() : json::object();
    o["faults"] = h.faults ? h.faults->to_json() : json::array();
    return o;
}

fake_reply refuse(std::string why) {
    json::object o;
    o["error"] = std::move(why);
    return json_reply(400, o);
}

}  // namespace

fake_reply handle_control(const fake_request& req, control_hooks& h) {
    const std::string& p = req.path;
    if (p == "/_control/health" && req.method == "GET")
        return json_reply(200, json::object{{"ok", true}});
    if (p == "/_control" && req.method == "GET")
        return json_reply(200, state_of(h));
    if (p == "/_control" && req.method == "POST") {
        boost::system::error_code ec;
        auto v = json::parse(req.body, ec);
        if (ec || !v.is_object())
            return refuse("the control body must be a JSON object");
        json::object rest = v.as_object();
        // All or nothing: faults are parsed into a copy, committed only if the rest applies.
        std::optional<fault_table> faults;
        for (const char* key : {"faults", "add_faults"}) {
            auto* f = rest.if_contains(key);
            if (!f)
                continue;
            if (!h.faults)
                return refuse("this fake has no fault injection");
            if (!faults)
                faults = *h.faults;
            auto err = faults->load(*f, std::string_view(key) == "add_faults");
            if (!err.empty())
                return refuse(std::string(key) + ": " + err);
            rest.erase(key);
        }
        if (!rest.empty()) {
            if (!h.apply)
                return refuse("unknown control key '" + std::string(rest.begin()->key()) + "'");
            auto err = h.apply(rest);
            if (!err.empty())
                return refuse(err);
        }
        if (faults)
            *h.faults = std::move(*faults);
        return json_reply(200, state_of(h));
    }
    if (p == "/_control/reset" && req.method == "POST") {
        if (h.requests)
            h.requests->clear();
        if (h.webhooks)
            h.webhooks->reset();
        if (h.faults)
            h.faults->clear();
        if (h.reset)
            h.reset();
        return json_reply(200, state_of(h));
    }
    if (p == "/_control/requests" && req.method == "GET") {
        json::object o;
        const auto path = req.query_param("path").value_or("");
        const auto route = req.query_param("route").value_or("");
        o["requests"] = h.requests ? h.requests->snapshot(path, route) : json::array();
        return json_reply(200, o);
    }
    if (p == "/_control/webhooks" && req.method == "GET") {
        json::object o;
        o["webhooks"] = h.webhooks ? h.webhooks->log() : json::array();
        o["in_flight"] = h.webhooks ? h.webhooks->in_flight() : 0;
        return json_reply(200, o);
    }
    if (h.extra)
        if (auto r = h.extra(req))
            return *r;
    json::object o;
    o["error"] = "no control route " + req.method + " " + p;
    return json_reply(404, o);
}

void write_port_file(const std::string& path, std::uint16_t port) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << port << "\n";
        if (!out)
            throw std::runtime_error("cannot write port file " + tmp);
    }
    std::filesystem::rename(tmp, path);
}

}  // namespace segue::fakes
