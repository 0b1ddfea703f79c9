#include "tests/fakes/common/recorder.hpp"

#include <boost/json.hpp>

#include "gateway/http/multipart.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::fakes {

namespace json = boost::json;

namespace {

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size())
        return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) !=
            std::tolower(static_cast<unsigned char>(prefix[i])))
            return false;
    return true;
}

std::string_view media_type(std::string_view content_type) {
    auto semi = content_type.find(';');
    auto t = content_type.substr(0, semi);
    while (!t.empty() && t.back() == ' ')
        t.remove_suffix(1);
    while (!t.empty() && t.front() == ' ')
        t.remove_prefix(1);
    return t;
}

constexpr std::size_t max_logged_body = 64 * 1024;

}  // namespace

const body_field* parsed_body::field(std::string_view name) const {
    const body_field* found = nullptr;
    for (const auto& f : fields)
        if (f.name == name)
            found = &f;
    return found;
}

std::string_view to_string(parsed_body::kind k) {
    switch (k) {
        case parsed_body::kind::empty:
            return "empty";
        case parsed_body::kind::json:
            return "json";
        case parsed_body::kind::multipart:
            return "multipart";
        case parsed_body::kind::form:
            return "form";
        case parsed_body::kind::other:
            return "other";
    }
    return "other";
}

parsed_body parse_body(std::string_view content_type, const std::string& body) {
    parsed_body out;
    const auto type = media_type(content_type);
    if (starts_with_ci(type, "multipart/form-data")) {
        out.what = parsed_body::kind::multipart;
        auto boundary = http::multipart_boundary(content_type);
        if (!boundary) {
            out.error = "multipart/form-data without a valid boundary";
            return out;
        }
        http::multipart_parser::callbacks cb;
        cb.on_part_begin = [&out](const http::part_info& info) {
            body_field f;
            f.name = info.name;
            f.filename = info.filename;
            f.content_type = info.content_type;
            out.fields.push_back(std::move(f));
            return true;
        };
        cb.on_part_data = [&out](std::string_view data) {
            out.fields.back().data.append(data);
            return true;
        };
        http::multipart_limits limits;
        limits.max_parts = 256;
        http::multipart_parser parser(*boundary, std::move(cb), limits);
        auto err = parser.feed(body);
        if (err == http::multipart_error::none)
            err = parser.finish();
        if (err != http::multipart_error::none)
            out.error = "malformed multipart body: " + std::string(http::to_string(err));
        return out;
    }
    if (body.empty()) {
        out.what = parsed_body::kind::empty;
        return out;
    }
    if (starts_with_ci(type, "application/json") ||
        (type.size() > 5 && type.substr(type.size() - 5) == "+json")) {
        out.what = parsed_body::kind::json;
        boost::system::error_code ec;
        out.json = json::parse(body, ec);
        if (ec) {
            out.json = nullptr;
            out.error = "malformed JSON: " + ec.message();
        }
        return out;
    }
    if (starts_with_ci(type, "application/x-www-form-urlencoded")) {
        out.what = parsed_body::kind::form;
        std::string_view q = body;
        while (!q.empty()) {
            auto amp = q.find('&');
            auto item = q.substr(0, amp);
            q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
            if (item.empty())
                continue;
            auto eq = item.find('=');
            body_field f;
            f.name = url_decode(item.substr(0, eq));
            if (eq != std::string_view::npos)
                f.data = url_decode(item.substr(eq + 1));
            out.fields.push_back(std::move(f));
        }
        return out;
    }
    out.what = parsed_body::kind::other;
    return out;
}

std::int64_t request_log::record(fake_request& request, const parsed_body& body,
                                 std::string_view route) {
    json::object e;
    const std::int64_t seq = next_seq_++;
    e["seq"] = seq;
    e["received_at_ms"] = unix_ms();
    e["received_mono_us"] = request.received_mono_us;
    e["method"] = request.method;
    e["target"] = request.target;
    e["path"] = request.path;
    json::object q;
    for (auto& [k, v] : request.query_params())
        q[k] = v;
    e["query"] = std::move(q);
    json::object h;
    for (const auto& [k, v] : request.headers) {
        if (auto* old = h.if_contains(k))
            *old = json::string(std::string(old->as_string()) + ", " + v);
        else
            h[k] = v;
    }
    e["headers"] = std::move(h);
    e["remote"] = request.remote;
    e["body_size"] = request.body.size();
    e["body_sha256"] = util::sha256_hex(request.body);
    e["body_kind"] = to_string(body.what);
    if (body.what == parsed_body::kind::multipart || body.what == parsed_body::kind::form) {
        json::array fields;
        for (const auto& f : body.fields) {
            json::object fo;
            fo["name"] = f.name;
            if (f.is_file()) {
                fo["filename"] = *f.filename;
                fo["content_type"] = f.content_type;
                fo["size"] = f.data.size();
                fo["sha256"] = util::sha256_hex(f.data);
            } else {
                fo["value"] = f.data;
                if (!f.content_type.empty())
                    fo["content_type"] = f.content_type;
            }
            fields.push_back(std::move(fo));
        }
        e["fields"] = std::move(fields);
    }
    if (body.what == parsed_body::kind::json && !body.json.is_null())
        e["json"] = body.json;
    if (body.what != parsed_body::kind::multipart && !request.body.empty() &&
        request.body.size() <= max_logged_body)
        e["body"] = request.body;
    if (!body.error.empty())
        e["body_error"] = body.error;
    e["route"] = route;
    e["response"] = nullptr;
    entries_.push_back(std::move(e));
    request.log_seq = seq;
    return seq;
}

void request_log::answered(const fake_request& request, const fake_reply& reply) {
    if (request.log_seq < 0)
        return;
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
        if ((*it)["seq"].as_int64() != request.log_seq)
            continue;
        json::object r;
        r["status"] = reply.act == fake_reply::action::respond ? reply.status : 0;
        r["action"] = reply.act == fake_reply::action::respond
                          ? "respond"
                          : (reply.act == fake_reply::action::reset ? "reset" : "close");
        if (reply.delay_ms > 0)
            r["delay_ms"] = reply.delay_ms;
        if (!reply.note.empty())
            r["note"] = reply.note;
        r["answered_at_ms"] = unix_ms();
        (*it)["response"] = std::move(r);
        return;
    }
}

json::array request_log::snapshot(std::string_view path, std::string_view route) const {
    json::array out;
    for (const auto& e : entries_) {
        if (!path.empty() && e.at("path").as_string() != path)
            continue;
        if (!route.empty() && e.at("route").as_string() != route)
            continue;
        out.push_back(e);
    }
    return out;
}

void request_log::clear() {
    entries_.clear();
}

}  // namespace segue::fakes
