#include "gateway/api/files.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <memory>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/model.hpp"
#include "gateway/core/signed_url.hpp"
#include "gateway/http/conditional.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/range.hpp"
#include "gateway/http/router.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/http_date.hpp"

namespace segue::api {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

constexpr std::size_t read_chunk = 256 * 1024;
constexpr std::int64_t max_link_lifetime_s = 7 * 24 * 3600;

std::int64_t unix_now_s() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The file id of a Segue file URL (public_base_url + "/v1/files/<id>"), or "".
std::string file_id_of(std::string_view url, std::string_view base) {
    constexpr std::string_view files = "/v1/files/";
    if (!url.starts_with(base) || url.substr(base.size()).rfind(files, 0) != 0)
        return {};
    const auto id = url.substr(base.size() + files.size());
    if (id.empty() || id.find_first_of("/?#") != std::string_view::npos)
        return {};
    return std::string(id);
}

// Signs every `<name>_url` of `o` that points at a Segue file (unless `sign` is false); one
// that retention deleted gets `<name>_expired_at` instead. True if a link was added.
bool sign_urls(json::object& o, const config::settings& s, std::int64_t expires, bool sign,
               const gone_files& gone) {
    std::vector<std::pair<std::string, json::value>> added;
    bool signed_one = false;
    for (const auto& kv : o) {
        const std::string_view key = kv.key();
        if (!key.ends_with("_url") || key.ends_with("_signed_url") || !kv.value().is_string())
            continue;
        const auto id = file_id_of(kv.value().get_string(), s.api.public_base_url);
        if (id.empty())
            continue;
        const std::string name(key.substr(0, key.size() - 4));
        if (auto g = gone.find(id); g != gone.end()) {
            if (g->second > 0)
                added.emplace_back(name + "_expired_at", core::iso8601(g->second));
            continue;
        }
        if (!sign)
            continue;
        added.emplace_back(name + "_signed_url", signed_file_url(s, id, expires));
        signed_one = true;
    }
    for (auto& [k, v] : added)
        o[k] = std::move(v);
    return signed_one;
}

std::string extension_of(std::string_view content_type, std::string_view key) {
    static constexpr std::pair<std::string_view, std::string_view> known[] = {
        {"audio/mpeg", "mp3"},        {"audio/mp3", "mp3"},     {"audio/wav", "wav"},
        {"audio/x-wav", "wav"},       {"audio/wave", "wav"},    {"audio/flac", "flac"},
        {"audio/ogg", "ogg"},         {"audio/mp4", "m4a"},     {"image/jpeg", "jpg"},
        {"image/png", "png"},         {"image/svg+xml", "svg"}, {"image/webp", "webp"},
        {"application/json", "json"},
    };
    const auto ct = content_type.substr(0, content_type.find(';'));
    for (const auto& [type, ext] : known)
        if (ct == type)
            return std::string(ext);
    const auto slash = key.rfind('/');
    const auto dot = key.rfind('.');
    if (dot != std::string_view::npos && (slash == std::string_view::npos || dot > slash) &&
        key.size() - dot <= 5)
        return std::string(key.substr(dot + 1));
    return "bin";
}

// A title as part of a filename: no separators or control characters, at most ~80 bytes
// (cut at a UTF-8 boundary).
std::string filename_part(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '"')
            out.push_back('_');
        else
            out.push_back(static_cast<char>(c));
        if (out.size() >= 80 && (c < 0x80 || c >= 0xc0))
            break;
    }
    while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xc0) == 0xc0)
        out.pop_back();  // a lead byte without its continuation
    while (!out.empty() && (out.back() == ' ' || out.back() == '.'))
        out.pop_back();
    return out;
}

// Where the file is referred to in an output's data: e.g. "mp3" for audio.mp3_file_id or
// audio.mp3_url, "cover" for cover_url; "" if it is not.
std::string role_in(const json::object& o, std::string_view file_id) {
    for (const auto& kv : o) {
        if (kv.value().is_object()) {
            if (auto r = role_in(kv.value().get_object(), file_id); !r.empty())
                return r;
            continue;
        }
        if (!kv.value().is_string())
            continue;
        const std::string_view v = kv.value().get_string();
        if (v == file_id || (v.ends_with(file_id) && v.size() > file_id.size() &&
                             v[v.size() - file_id.size() - 1] == '/')) {
            std::string_view key = kv.key();
            for (std::string_view suffix : {"_file_id", "_url"})
                if (key.ends_with(suffix))
                    key.remove_suffix(suffix.size());
            return std::string(key);
        }
    }
    return {};
}

// The client's own name for its upload, made safe; cut to length before its extension, never
// through it (a long "....wav" stays a .wav). "" when nothing of it is left.
std::string upload_name(std::string_view client) {
    const auto dot = client.rfind('.');
    const bool has_ext = dot != std::string_view::npos && dot > 0 && dot + 1 < client.size() &&
                         client.size() - dot - 1 <= 10;
    if (!has_ext)
        return filename_part(client);
    const std::string stem = filename_part(client.substr(0, dot));
    const std::string ext = filename_part(client.substr(dot + 1));
    if (stem.empty())
        return ext.empty() ? std::string() : filename_part(client);
    return ext.empty() ? stem : stem + "." + ext;
}

// "<title or task id>-<output>.<ext>" for an output (a cover: "...-<output>-cover.jpg"), the
// client's own name for an upload, "<file id>.<ext>" for anything else.
std::string download_name(const store::file_row& f, const std::optional<store::task_row>& t,
                          const std::vector<store::output_row>& outs) {
    const std::string ext = extension_of(f.content_type, f.path);
    if (!t)
        return f.id + "." + ext;
    if (f.kind == "upload") {
        try {
            const auto req = core::request_from_json(t->request_json);
            if (auto n = upload_name(req.audio_filename); !n.empty())
                return n;
        } catch (const std::exception&) {
        }
        return t->id + "-source." + ext;
    }
    for (const auto& o : outs) {
        boost::system::error_code ec;
        auto data = json::parse(o.data_json, ec);
        if (ec || !data.is_object())
            continue;
        const auto role = role_in(data.get_object(), f.id);
        if (role.empty())
            continue;
        std::string base = t->id;
        if (auto it = data.get_object().find("title");
            it != data.get_object().end() && it->value().is_string())
            if (auto title = filename_part(it->value().get_string()); !title.empty())
                base = title;
        base += "-" + std::to_string(o.index);
        if (role.find("cover") != std::string::npos)
            base += "-cover";
        return base + "." + ext;
    }
    return t->id + "-" + f.id + "." + ext;
}

std::string content_type_of(const store::file_row& f) {
    if (!f.content_type.empty())
        return f.content_type;
    const auto ext = extension_of("", f.path);
    if (ext == "mp3")
        return "audio/mpeg";
    if (ext == "wav")
        return "audio/wav";
    if (ext == "jpg" || ext == "jpeg")
        return "image/jpeg";
    if (ext == "png")
        return "image/png";
    return "application/octet-stream";
}

// Strong: a file's bytes never change under its id. Its SHA-256 when the store has it.
std::string etag_of(const store::file_row& f) {
    if (!f.sha256.empty())
        return "\"sha256-" + f.sha256 + "\"";
    return "\"" + f.id + "-" + std::to_string(f.size) + "\"";
}

struct file_handlers : std::enable_shared_from_this<file_handlers> {
    explicit file_handlers(const api_deps& d)
        : deps(d),
          rejected(d.metrics.counter_family("segue_api_rejected_total",
                                            "Requests refused by the API, by reason.", {"reason"})),
          served(d.metrics.counter_family(
              "segue_file_responses_total",
              "GET/HEAD /v1/files/{id} answers, by outcome (whole, partial, not_modified, "
              "expired, link_expired).",
              {"outcome"})) {}

    // Who may read: a valid signed link (query expires + sig) or the tenant of the API key.
    // nullopt (with the problem set) when neither.
    struct access {
        bool signed_link = false;
        std::string tenant;
        std::int64_t expires_s = 0;  // a signed link's end (unix seconds)
    };
    std::optional<access> admit(http::context& ctx, const std::string& id);
    awaitable<void> get(http::context& ctx);
    awaitable<void> link(http::context& ctx);

    api_deps deps;
    metrics::family<metrics::counter>& rejected;
    metrics::family<metrics::counter>& served;
};

std::optional<file_handlers::access> file_handlers::admit(http::context& ctx,
                                                          const std::string& id) {
    std::optional<std::string> sig;
    std::optional<std::string> expires;
    if (!only_params(ctx, {"sig", "expires", "download"}) || !text_param(ctx, "sig", sig) ||
        !text_param(ctx, "expires", expires))
        return std::nullopt;
    if (sig.has_value() != expires.has_value()) {
        // Half a link: not a key-authenticated request with a stray parameter either.
        set_problem(ctx.res(), error_kind::bad_request,
                    "a signed link has both sig and expires (or neither, with an API key)",
                    ctx.path(), {{sig ? "expires" : "sig", "missing"}});
        return std::nullopt;
    }
    if (!sig) {
        auto t = authenticate(ctx, deps.auth);
        if (!t) {
            rejected.with({"unauthorized"}).inc();
            return std::nullopt;
        }
        return access{false, *t};
    }
    const auto& key = deps.settings.api.url_signing_key;
    // The signature first, whatever the time: a link that was never valid says nothing more
    // than a missing file would.
    if (!core::verify_file_signature(key, id, *expires, *sig, 0)) {
        rejected.with({"bad_signature"}).inc();
        set_problem(ctx.res(), error_kind::not_found, "no such file, or the link is not valid",
                    ctx.path());
        return std::nullopt;
    }
    if (!core::verify_file_signature(key, id, *expires, *sig, unix_now_s())) {
        served.with({"link_expired"}).inc();
        set_problem(ctx.res(), error_kind::link_expired,
                    "this link expired at " + core::iso8601(std::stoll(*expires) * 1000) +
                        "; ask for a new one (POST /v1/files/" + id +
                        "/links, or read the task again)",
                    ctx.path());
        return std::nullopt;
    }
    return access{true, {}, std::stoll(*expires)};
}

awaitable<void> file_handlers::get(http::context& ctx) {
    auto self = shared_from_this();
    const std::string id(ctx.param("id"));
    const auto who = admit(ctx, id);
    if (!who)
        co_return;
    std::optional<store::file_row> f;
    std::optional<store::file_tombstone_row> gone;
    std::optional<store::task_row> task;
    std::vector<store::output_row> outs;
    co_await deps.db.read([&](store::transaction& tx) {
        f = tx.get_file(id);
        if (!f) {
            gone = tx.get_file_tombstone(id);
            return;
        }
        if (!f->task_id.empty()) {
            task = tx.get_task(f->task_id);
            if (task)
                outs = tx.get_outputs(f->task_id);
        }
    });
    const auto owner = f ? f->tenant : gone ? gone->tenant : std::string();
    // Another tenant's file answers exactly like a missing one.
    if ((!f && !gone) || (!who->signed_link && owner != who->tenant)) {
        set_problem(ctx.res(), error_kind::not_found, "no such file", ctx.path());
        co_return;
    }
    if (!f) {
        served.with({"expired"}).inc();
        set_problem(ctx.res(), error_kind::file_expired,
                    "this file expired and was deleted at " + core::iso8601(gone->deleted_at) +
                        " (retention." + (gone->kind == "upload" ? "uploads" : "outputs") +
                        ", or retention.tasks for its task)",
                    ctx.path());
        co_return;
    }
    const std::string etag = etag_of(*f);
    const std::string type = content_type_of(*f);
    std::optional<std::string> download;
    if (!text_param(ctx, "download", download))
        co_return;
    auto& res = ctx.res();
    // The file's own headers, on its 200, 206, 304 and 416; never on an error about it.
    const auto file_headers = [&] {
        res.set_header("ETag", etag);
        res.set_header("Last-Modified", http::http_date(f->created_at));
        // Immutable under its URL; private: it is one tenant's. A signed URL is cached as
        // itself, and no longer than it is valid.
        std::int64_t max_age = 3600;
        if (who->signed_link)
            max_age = std::clamp<std::int64_t>(who->expires_s - unix_now_s(), 0, max_age);
        res.set_header("Cache-Control", "private, max-age=" + std::to_string(max_age));
        res.set_header("Accept-Ranges", "bytes");
        // ?download (any value but 0 or false): save it rather than play it.
        const bool attachment = download && *download != "0" && *download != "false";
        res.set_header("Content-Disposition",
                       http::content_disposition(attachment, download_name(*f, task, outs)));
        // A file is served as its probed type, never sniffed as another; opened as a page (an
        // SVG cover, say one copied from a provider), it runs no script and loads nothing but
        // itself: the browser's own player or viewer of a link opened in a tab loads the file
        // as media or an image, which media-src and img-src let through.
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_header("Content-Security-Policy",
                       "default-src 'none'; media-src 'self'; img-src 'self'; "
                       "style-src 'unsafe-inline'; sandbox");
    };
    // If-None-Match decides when sent; else If-Modified-Since (RFC 9110 13.1.3): a file never
    // changes after it was made, so any date not before it (to the second) is a 304.
    const auto inm = ctx.header("If-None-Match");
    const auto ims = inm ? std::nullopt : ctx.header("If-Modified-Since");
    const auto since = ims ? util::parse_http_date(*ims) : std::nullopt;
    if ((inm && http::none_match(*inm, etag)) || (since && *since >= f->created_at / 1000 * 1000)) {
        served.with({"not_modified"}).inc();
        file_headers();
        res.status = 304;
        co_return;
    }
    // The blob, streamed a piece at a time off the IO thread: constant memory at any size.
    std::optional<store::blob_result<std::unique_ptr<store::blob_reader>>> opened;
    co_await deps.blocking.run([&] { opened = deps.blobs.open(f->path); });
    if (!*opened) {
        log::error("file unreadable in the blob store",
                   {{"file_id", id},
                    {"key", f->path},
                    {"backend", std::string(deps.blobs.backend())},
                    {"error", opened->error().message}});
        set_problem(res, error_kind::internal, "the file cannot be read", ctx.path());
        co_return;
    }
    std::unique_ptr<store::blob_reader> reader = std::move(**opened);
    const std::uint64_t size = reader->size();
    // The blob is not the file that was stored (cut short, or grown, on the disk): served, it
    // would go out under the stored file's strong ETag, and a cache would keep it as that.
    if (f->size > 0 && size != static_cast<std::uint64_t>(f->size)) {
        log::error("file in the blob store does not have its stored size",
                   {{"file_id", id},
                    {"key", f->path},
                    {"backend", std::string(deps.blobs.backend())},
                    {"size", static_cast<std::int64_t>(size)},
                    {"stored_size", f->size}});
        set_problem(res, error_kind::internal, "the file cannot be read", ctx.path());
        co_return;
    }
    file_headers();
    // One byte range (Range: bytes=...), unless an If-Range names another version: then the
    // whole file, as RFC 9110 says.
    const auto range = http::parse_range(
        http::if_range_matches(ctx.header("If-Range"), etag) ? ctx.header("Range") : std::nullopt,
        size);
    if (range.what == http::range_request::kind::unsatisfiable) {
        res.set_header("Content-Range", "bytes */" + std::to_string(size));
        set_problem(res, error_kind::range_not_satisfiable,
                    "the file has " + std::to_string(size) + " bytes", ctx.path());
        co_return;
    }
    const bool partial = range.what == http::range_request::kind::partial;
    const std::uint64_t first = partial ? range.first : 0;
    const std::uint64_t length = partial ? range.last - range.first + 1 : size;
    if (partial)
        res.set_header("Content-Range", "bytes " + std::to_string(range.first) + "-" +
                                            std::to_string(range.last) + "/" +
                                            std::to_string(size));
    served.with({partial ? "partial" : "whole"}).inc();
    if (!co_await ctx.begin_stream(partial ? 206 : 200, type, length))
        co_return;
    if (ctx.method() == "HEAD")
        co_return;
    std::vector<char> buf(read_chunk);
    std::uint64_t sent = 0;
    std::optional<store::blob_error> failure;
    if (first > 0) {
        co_await deps.blocking.run([&] {
            if (auto r = reader->seek(first); !r)
                failure = r.error();
        });
    }
    while (!failure && sent < length) {
        std::size_t n = 0;
        const auto want =
            static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), length - sent));
        co_await deps.blocking.run([&] {
            auto r = reader->read(std::span<char>(buf.data(), want));
            if (r)
                n = *r;
            else
                failure = r.error();
        });
        if (failure || n == 0)
            break;
        if (!co_await ctx.write_stream(std::string_view(buf.data(), n)))
            co_return;
        sent += n;
    }
    // The headers are gone: a short body is all that can tell the client (the connection is
    // closed by the server when a body falls short of its Content-Length).
    if (sent < length)
        log::error("file download cut short",
                   {{"file_id", id},
                    {"sent", static_cast<std::int64_t>(sent)},
                    {"length", static_cast<std::int64_t>(length)},
                    {"error", failure ? failure->message : "end of blob"}});
}

// POST /v1/files/{id}/links {"expires_in": seconds}: a signed link for the tenant's file.
awaitable<void> file_handlers::link(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = authenticate(ctx, deps.auth);
    if (!tenant) {
        rejected.with({"unauthorized"}).inc();
        co_return;
    }
    if (!only_params(ctx, {}))
        co_return;
    const std::string id(ctx.param("id"));
    std::int64_t lifetime =
        std::chrono::duration_cast<std::chrono::seconds>(deps.settings.api.signed_url_lifetime)
            .count();
    if (!ctx.body().empty()) {
        if (!http::media_type_is(ctx.header("Content-Type").value_or(""), "application/json")) {
            set_problem(ctx.res(), error_kind::unsupported_media_type,
                        "send the body as application/json (or send none)", ctx.path());
            co_return;
        }
        // Not JSON, not an object, a field twice: each said as the other JSON routes say it.
        auto body = json_object_body(ctx);
        if (!body)
            co_return;
        std::vector<field_error> errors;
        for (const auto& field : *body) {
            if (field.key() != "expires_in") {
                errors.push_back({std::string(field.key()), "unknown field"});
                continue;
            }
            const auto& v = field.value();
            const bool whole = v.is_int64() || v.is_uint64();
            const auto n =
                v.is_int64() ? v.get_int64()
                : v.is_uint64()
                    ? static_cast<std::int64_t>(std::min<std::uint64_t>(v.get_uint64(), INT64_MAX))
                    : 0;
            if (!whole || n < 1 || n > max_link_lifetime_s)
                errors.push_back({"expires_in", "must be whole seconds from 1 to " +
                                                    std::to_string(max_link_lifetime_s)});
            else
                lifetime = n;
        }
        if (!errors.empty()) {
            set_validation_problem(ctx.res(), ctx.path(), errors);
            co_return;
        }
    }
    std::optional<store::file_row> f;
    std::optional<store::file_tombstone_row> gone;
    co_await deps.db.read([&](store::transaction& tx) {
        f = tx.get_file(id);
        if (!f)
            gone = tx.get_file_tombstone(id);
    });
    if (f ? f->tenant != *tenant : !gone || gone->tenant != *tenant) {
        set_problem(ctx.res(), error_kind::not_found, "no such file", ctx.path());
        co_return;
    }
    if (!f) {
        set_problem(ctx.res(), error_kind::file_expired,
                    "this file expired and was deleted at " + core::iso8601(gone->deleted_at),
                    ctx.path());
        co_return;
    }
    // Exactly the lifetime asked for (no rounding: the caller chose it).
    const std::int64_t expires = unix_now_s() + lifetime;
    json::object o;
    o["object"] = "file_link";
    o["file_id"] = id;
    o["url"] = signed_file_url(deps.settings, id, expires);
    o["expires_at"] = core::iso8601(expires * 1000);
    json_response(ctx, 201, o);
}

}  // namespace

std::int64_t link_expiry(std::int64_t now_s, std::chrono::seconds lifetime) {
    const std::int64_t life = std::max<std::int64_t>(1, lifetime.count());
    const std::int64_t step = std::clamp<std::int64_t>(life / 4, 1, 3600);
    const std::int64_t at = now_s + life;
    return (at + step - 1) / step * step;
}

std::string signed_file_url(const config::settings& s, std::string_view file_id,
                            std::int64_t expires_s) {
    return s.api.public_base_url +
           core::signed_file_path(s.api.url_signing_key, file_id, expires_s);
}

void add_signed_links(json::object& task, const config::settings& s, std::int64_t now_s,
                      const gone_files& gone) {
    const bool sign = !s.api.url_signing_key.empty();
    const std::int64_t expires = link_expiry(
        now_s, std::chrono::duration_cast<std::chrono::seconds>(s.api.signed_url_lifetime));
    const std::string expires_at = core::iso8601(expires * 1000);
    if (auto* outs = task.if_contains("outputs"); outs && outs->is_array()) {
        for (auto& out : outs->get_array()) {
            if (!out.is_object())
                continue;
            auto& o = out.get_object();
            if (sign_urls(o, s, expires, sign, gone))
                o["signed_url_expires_at"] = expires_at;
            if (auto* audio = o.if_contains("audio"); audio && audio->is_object())
                if (sign_urls(audio->get_object(), s, expires, sign, gone))
                    audio->get_object()["signed_url_expires_at"] = expires_at;
        }
    }
    auto* req = task.if_contains("request");
    auto* src = req && req->is_object() ? req->get_object().if_contains("source") : nullptr;
    if (!src || !src->is_object())
        return;
    auto& source = src->get_object();
    auto* id = source.if_contains("file_id");
    if (!id || !id->is_string() || id->get_string().empty())
        return;
    const std::string file_id(id->get_string());
    if (auto g = gone.find(file_id); g != gone.end()) {
        if (g->second > 0)
            source["expired_at"] = core::iso8601(g->second);
        if (sign)
            source["url"] = s.api.public_base_url + "/v1/files/" + file_id;
        return;
    }
    if (!sign)
        return;
    source["url"] = s.api.public_base_url + "/v1/files/" + file_id;
    source["signed_url"] = signed_file_url(s, file_id, expires);
    source["signed_url_expires_at"] = expires_at;
}

std::vector<std::string> file_ids_in(const json::object& task, const config::settings& s) {
    std::vector<std::string> ids;
    auto scan = [&](const json::object& o) {
        for (const auto& kv : o)
            if (kv.key().ends_with("_url") && !kv.key().ends_with("_signed_url") &&
                kv.value().is_string())
                if (auto id = file_id_of(kv.value().get_string(), s.api.public_base_url);
                    !id.empty())
                    ids.push_back(std::move(id));
    };
    if (auto* outs = task.if_contains("outputs"); outs && outs->is_array())
        for (const auto& out : outs->get_array()) {
            if (!out.is_object())
                continue;
            scan(out.get_object());
            if (auto* audio = out.get_object().if_contains("audio"); audio && audio->is_object())
                scan(audio->get_object());
        }
    if (auto* req = task.if_contains("request"); req && req->is_object())
        if (auto* src = req->get_object().if_contains("source"); src && src->is_object())
            if (auto* id = src->get_object().if_contains("file_id");
                id && id->is_string() && !id->get_string().empty())
                ids.emplace_back(id->get_string());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

void add_file_routes(http::router& routes, const api_deps& deps) {
    auto h = std::make_shared<file_handlers>(deps);
    routes.add("GET", "/v1/files/{id}", [h](http::context& c) { return h->get(c); });
    routes.add("POST", "/v1/files/{id}/links", [h](http::context& c) { return h->link(c); });
}

}  // namespace segue::api
