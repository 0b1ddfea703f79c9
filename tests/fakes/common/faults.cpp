#include "tests/fakes/common/faults.hpp"

#include <boost/json.hpp>

#include <cmath>

#include "tests/fakes/common/json_text.hpp"

namespace segue::fakes {

namespace json = boost::json;

namespace {

std::string default_message(int status) {
    switch (status) {
        case 400:
            return "Bad Request";
        case 401:
            return "Invalid API key";
        case 402:
            return "INSUFFICIENT FUNDS";
        case 403:
            return "Forbidden";
        case 404:
            return "Conversion not found";
        case 409:
            return "Conflict";
        case 422:
            return "field required";
        case 429:
            return "Too many requests";
        case 500:
            return "Internal Server Error";
        case 502:
            return "Bad Gateway";
        case 503:
            return "Service Unavailable";
        case 504:
            return "Gateway Timeout";
        default:
            return "Error " + std::to_string(status);
    }
}

std::string auto_style(int status) {
    switch (status) {
        case 401:
        case 404:
            return "error";
        case 402:
        case 429:
            return "message";
        default:
            return "detail";
    }
}

std::string format_seconds(double s) {
    if (std::floor(s) == s)
        return std::to_string(static_cast<long long>(s));
    return json::serialize(json::value(s));
}

}  // namespace

std::string fault_rule::describe() const {
    std::string d;
    auto add = [&d](const std::string& s) {
        if (!d.empty())
            d += ", ";
        d += s;
    };
    if (status)
        add("status " + std::to_string(status) + (style != "auto" ? " (" + style + ")" : ""));
    if (delay_ms)
        add("delay " + std::to_string(delay_ms) + " ms");
    if (reset)
        add("reset");
    if (close)
        add("close");
    return "fault[" + match + "]: " + d;
}

std::string parse_fault(const json::value& v, fault_rule& r) {
    if (!v.is_object())
        return "a fault must be a JSON object";
    for (const auto& kv : v.as_object()) {
        const json::value& val = kv.value();  // not a structured binding: lambdas capture it
        const std::string k(kv.key());
        auto want_int = [&](std::int64_t& out) -> bool {
            if (val.is_int64()) {
                out = val.as_int64();
                return true;
            }
            if (val.is_uint64()) {
                out = static_cast<std::int64_t>(val.as_uint64());
                return true;
            }
            return false;
        };
        std::int64_t n = 0;
        if (k == "match") {
            if (!val.is_string())
                return "fault.match must be a string";
            r.match = std::string(val.as_string());
        } else if (k == "status") {
            if (!want_int(n) || n < 100 || n > 599)
                return "fault.status must be an HTTP status (100-599)";
            r.status = static_cast<int>(n);
        } else if (k == "style") {
            if (!val.is_string())
                return "fault.style must be a string";
            r.style = std::string(val.as_string());
            if (r.style != "auto" && r.style != "detail" && r.style != "message" &&
                r.style != "error" && r.style != "mix" && r.style != "code_message")
                return "fault.style must be auto, detail, message, error, mix or code_message";
        } else if (k == "message") {
            if (!val.is_string())
                return "fault.message must be a string";
            r.message = std::string(val.as_string());
        } else if (k == "body") {
            if (!val.is_string())
                return "fault.body must be a string (the exact body)";
            r.body = std::string(val.as_string());
        } else if (k == "content_type") {
            if (!val.is_string())
                return "fault.content_type must be a string";
            r.content_type = std::string(val.as_string());
        } else if (k == "retry_after") {
            if (!val.is_number() || val.to_number<double>() < 0)
                return "fault.retry_after must be a number of seconds >= 0";
            r.retry_after = val.to_number<double>();
        } else if (k == "delay_ms") {
            if (!want_int(n) || n < 0)
                return "fault.delay_ms must be an integer >= 0";
            r.delay_ms = n;
        } else if (k == "reset") {
            if (!val.is_bool())
                return "fault.reset must be a boolean";
            r.reset = val.as_bool();
        } else if (k == "close") {
            if (!val.is_bool())
                return "fault.close must be a boolean";
            r.close = val.as_bool();
        } else if (k == "skip") {
            if (!want_int(n) || n < 0)
                return "fault.skip must be an integer >= 0";
            r.skip = static_cast<int>(n);
        } else if (k == "times") {
            if (!want_int(n) || n < 1)
                return "fault.times must be an integer >= 1 (omit it for a sticky fault)";
            r.times = static_cast<int>(n);
        } else {
            return "unknown fault key '" + k + "'";
        }
    }
    if (!r.status && !r.delay_ms && !r.reset && !r.close)
        return "a fault needs status, delay_ms, reset or close";
    if (r.reset && r.close)
        return "a fault cannot both reset and close";
    return {};
}

fake_reply error_reply(int status, std::string_view style_in, std::string message,
                       std::optional<double> retry_after, unsigned rotation) {
    std::string style(style_in);
    if (style == "auto" || style.empty())
        style = auto_style(status);
    if (style == "mix") {
        static constexpr std::string_view styles[] = {"detail", "message", "error"};
        style = std::string(styles[rotation % 3]);
    }
    const bool default_text = message.empty();
    if (default_text)
        message = default_message(status);
    if (status == 429 && !retry_after)
        retry_after = 1;
    json::object o;
    if (style == "detail") {
        if (status == 422) {
            json::array detail;
            json::object item;
            // The default is the FastAPI answer to a missing required field.
            item["loc"] = default_text ? json::array{"body", "extend_after"} : json::array{"body"};
            item["msg"] = message;
            item["type"] = default_text ? "value_error.missing" : "value_error";
            detail.push_back(std::move(item));
            o["detail"] = std::move(detail);
        } else {
            o["detail"] = message;
        }
    } else if (style == "message") {
        o["success"] = false;
        o["message"] = message;
    } else if (style == "code_message") {
        o["code"] = status;
        o["message"] = message;
    } else {
        o["error"] = message;
    }
    fake_reply r;
    r.status = status;
    if (retry_after) {
        o["retry_after"] = std::floor(*retry_after) == *retry_after
                               ? json::value(static_cast<std::int64_t>(*retry_after))
                               : json::value(*retry_after);
        r.headers.emplace_back("Retry-After", format_seconds(std::ceil(*retry_after)));
    }
    r.body = to_json_text(o);
    return r;
}

std::string fault_table::load(const json::value& rules, bool append) {
    if (!rules.is_array())
        return "faults must be a JSON array";
    std::vector<fault_rule> parsed;
    for (const auto& v : rules.as_array()) {
        fault_rule r;
        auto err = parse_fault(v, r);
        if (!err.empty())
            return err;
        parsed.push_back(std::move(r));
    }
    if (!append)
        rules_.clear();
    for (auto& r : parsed)
        rules_.push_back(std::move(r));
    return {};
}

std::optional<fault_rule> fault_table::take(std::string_view route) {
    for (auto& r : rules_) {
        if (r.match != "any" && r.match != route)
            continue;
        if (r.times && *r.times <= 0)
            continue;
        if (r.skip > 0) {
            --r.skip;
            continue;
        }
        if (r.times)
            --*r.times;
        ++r.applied;
        return r;
    }
    return std::nullopt;
}

std::optional<fake_reply> fault_table::reply_for(const fault_rule& rule) {
    fake_reply rep;
    if (rule.reset || rule.close) {
        rep.act = rule.reset ? fake_reply::action::reset : fake_reply::action::close;
    } else if (rule.status) {
        if (rule.body) {
            rep.status = rule.status;
            rep.body = *rule.body;
            rep.content_type = rule.content_type;
            if (rule.retry_after)
                rep.headers.emplace_back("Retry-After",
                                         format_seconds(std::ceil(*rule.retry_after)));
        } else {
            rep = error_reply(rule.status, rule.style, rule.message, rule.retry_after, rotation_++);
        }
    } else {
        return std::nullopt;  // delay only
    }
    rep.delay_ms = rule.delay_ms;
    rep.note = rule.describe();
    return rep;
}

json::array fault_table::to_json() const {
    json::array out;
    for (const auto& r : rules_) {
        json::object o;
        o["match"] = r.match;
        if (r.status)
            o["status"] = r.status;
        o["style"] = r.style;
        if (!r.message.empty())
            o["message"] = r.message;
        if (r.body)
            o["body"] = *r.body;
        if (r.retry_after)
            o["retry_after"] = *r.retry_after;
        if (r.delay_ms)
            o["delay_ms"] = r.delay_ms;
        if (r.reset)
            o["reset"] = true;
        if (r.close)
            o["close"] = true;
        if (r.skip)
            o["skip"] = r.skip;
        if (r.times)
            o["times_left"] = *r.times;
        else
            o["sticky"] = true;
        o["applied"] = r.applied;
        out.push_back(std::move(o));
    }
    return out;
}

}  // namespace segue::fakes
