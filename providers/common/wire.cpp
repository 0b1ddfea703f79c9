#include "providers/common/wire.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <cctype>
#include <charconv>

namespace segue::providers::wire {

namespace json = boost::json;

bool icontains(std::string_view hay, std::string_view needle) {
    if (needle.empty())
        return true;
    for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i)
        if (iequals(hay.substr(i, needle.size()), needle))
            return true;
    return false;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

std::optional<std::string_view> find_header(const header_list& headers, std::string_view name) {
    for (const auto& [k, v] : headers)
        if (iequals(k, name))
            return std::string_view(v);
    return std::nullopt;
}

std::string format_number(double v) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    if (ec != std::errc())
        return "0";
    return std::string(buf, end);
}

std::string json_string(std::string_view s) {
    return json::serialize(json::string_view(s.data(), s.size()));
}

const json::value* field(const json::object& o, std::string_view key) {
    return o.if_contains(json::string_view(key.data(), key.size()));
}

std::string printable_prefix(std::string_view body, std::size_t max) {
    std::string out;
    for (char c : trim(body)) {
        if (out.size() >= max) {
            out += "…";
            break;
        }
        const auto u = static_cast<unsigned char>(c);
        out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
    }
    return out;
}

update failed(core::error_class cls, std::string code, std::string message) {
    update u;
    u.what = update::kind::failed;
    u.error = cls;
    u.error_code = std::move(code);
    u.error_message = std::move(message);
    return u;
}

std::optional<webhook_body> open_webhook(std::string_view provider, std::string_view body,
                                         std::string_view attempt_task_id, std::string& error) {
    boost::system::error_code ec;
    auto v = json::parse(json::string_view(body.data(), body.size()), ec);
    if (ec || !v.is_object()) {
        error = std::string(provider) + " webhook body is not a JSON object";
        return std::nullopt;
    }
    webhook_body w;
    w.object = std::move(v.as_object());
    if (auto* id = field(w.object, "task_id"); id && id->is_string())
        w.task_id = std::string(id->as_string());
    if (!w.task_id.empty() && !attempt_task_id.empty() && w.task_id != attempt_task_id) {
        error = std::string(provider) + " webhook for task '" + w.task_id + "', expected '" +
                std::string(attempt_task_id) + "'";
        return std::nullopt;
    }
    w.provider_task_id = attempt_task_id.empty() ? w.task_id : std::string(attempt_task_id);
    return w;
}

}  // namespace segue::providers::wire
