#include "gateway/api/compat.hpp"

#include <boost/json.hpp>

#include <chrono>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/files.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/signed_url.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/text.hpp"

namespace segue::api {

namespace json = boost::json;

namespace {

// How long a signed link to an output handed out by a drop-in shape stays valid.
constexpr std::int64_t link_ttl_s = 7 * 24 * 3600;

// Relative without api.public_base_url, as /v1's signed links: a client that reads a drop-in
// shape sends no Bearer key to fetch a file, so a link is signed either way. Its expiry moves
// in steps (link_expiry, as /v1's): a file keeps one URL across reads and webhooks for an hour.
std::string signed_link(const config::settings& s, std::string_view file_id) {
    const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    return signed_file_url(s, file_id, link_expiry(now_s, std::chrono::seconds(link_ttl_s)));
}

}  // namespace

std::optional<std::string> tenant_of_key(const authenticator& auth,
                                         std::optional<std::string_view> authorization) {
    if (!authorization)
        return std::nullopt;
    std::string_view v = *authorization;
    while (!v.empty() && v.front() == ' ')
        v.remove_prefix(1);
    constexpr std::string_view scheme = "bearer ";
    if (v.size() > scheme.size() && util::iequals(v.substr(0, scheme.size()), scheme))
        return auth.authenticate(v);
    return auth.authenticate("Bearer " + std::string(v));
}

std::string_view status_in(std::string_view s, const status_words& w) {
    if (s == "queued" || s == "submitted")
        return w.waiting;
    if (s == "running")
        return w.working;
    if (s == "succeeded" || s == "partially_succeeded")
        return w.done;
    return w.failed;
}

boost::asio::awaitable<std::optional<task_snapshot>> load_task(store::db& db, std::string id,
                                                               std::string tenant) {
    std::optional<task_snapshot> out;
    co_await db.read([&](store::transaction& tx) {
        auto t = tx.get_task(id);
        if (!t || t->tenant != tenant)
            return;
        out.emplace();
        out->task = std::move(*t);
        out->outputs = tx.get_outputs(id);
        out->ledger = tx.ledger_for_task(id);
    });
    if (out) {
        try {
            out->request = core::request_from_json(out->task.request_json);
        } catch (const std::exception&) {
        }
    }
    co_return out;
}

std::string public_url(const config::settings& settings, std::string_view url) {
    constexpr std::string_view files = "/v1/files/";
    const auto& base = settings.api.public_base_url;
    if (!base.empty() && url.rfind(base, 0) == 0)
        url.remove_prefix(base.size());
    if (url.rfind(files, 0) == 0 && url.find('?') == std::string_view::npos)
        return signed_link(settings, url.substr(files.size()));
    return url.rfind(files, 0) == 0 ? base + std::string(url) : std::string(url);
}

std::string public_audio_url(const config::settings& settings, const json::object& output,
                             std::string_view kind) {
    const auto* audio = output.if_contains("audio");
    if (!audio || !audio->is_object())
        return "";
    const auto& a = audio->as_object();
    const std::string file_key = std::string(kind) + "_file_id";
    const std::string url_key = std::string(kind) + "_url";
    if (const auto* f = a.if_contains(file_key); f && f->is_string())
        return signed_link(settings, f->as_string());
    if (const auto* u = a.if_contains(url_key); u && u->is_string())
        return std::string(u->as_string());
    return "";
}

namespace {

json::object object_of(const std::string& text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object())
        return {};
    return std::move(v.as_object());
}

std::string string_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

}  // namespace

std::string failure_message(const store::task_row& task,
                            const std::vector<store::output_row>& outputs) {
    const auto error = object_of(task.error_json);
    std::string message = string_at(error, "message");
    if (string_at(error, "code") == "no_outputs" || message.empty())
        for (const auto& out : outputs)
            if (out.status == "failed")
                if (auto m = string_at(output_data(out), "error"); !m.empty())
                    return m;
    return message;
}

json::object output_data(const store::output_row& o) {
    return object_of(o.data_json);
}

std::string output_id(std::string_view task_id, int index) {
    return std::string(task_id) + "-" + std::to_string(index);
}

std::optional<output_ref> parse_output_id(std::string_view id) {
    const auto dash = id.rfind('-');
    if (dash == std::string_view::npos || dash == 0 || dash + 1 >= id.size())
        return std::nullopt;
    // Only the spelling output_id makes: "-01" names no output.
    const auto digits = id.substr(dash + 1);
    auto n = parse_int(digits);
    if (!n || *n < 1 || *n > 16 || digits.size() > 2 || digits.front() == '0')
        return std::nullopt;
    return output_ref{std::string(id.substr(0, dash)), static_cast<int>(*n)};
}

}  // namespace segue::api
