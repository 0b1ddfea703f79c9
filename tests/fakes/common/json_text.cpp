#include "tests/fakes/common/json_text.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cmath>

namespace segue::fakes {

namespace json = boost::json;

namespace {
void write_json(const json::value& v, std::string& out) {
    switch (v.kind()) {
        case json::kind::object: {
            out.push_back('{');
            bool first = true;
            for (const auto& kv : v.get_object()) {
                if (!first)
                    out.push_back(',');
                first = false;
                out += json::serialize(json::string_view(kv.key()));
                out.push_back(':');
                write_json(kv.value(), out);
            }
            out.push_back('}');
            break;
        }
        case json::kind::array: {
            out.push_back('[');
            bool first = true;
            for (const auto& x : v.get_array()) {
                if (!first)
                    out.push_back(',');
                first = false;
                write_json(x, out);
            }
            out.push_back(']');
            break;
        }
        case json::kind::double_: {
            const double d = v.get_double();
            char buf[64];
            auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
            if (ec != std::errc() || !std::isfinite(d)) {
                out += "null";
            } else {
                out.append(buf, end);
                // Keep it a float to JSON readers that care ("6.0", not "6").
                if (std::string_view(buf, end - buf).find_first_of(".eE") == std::string::npos)
                    out += ".0";
            }
            break;
        }
        default:
            out += json::serialize(v);
    }
}
}  // namespace

std::string to_json_text(const json::value& v) {
    std::string out;
    write_json(v, out);
    return out;
}

}  // namespace segue::fakes
