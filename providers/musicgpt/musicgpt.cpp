#include "providers/musicgpt/musicgpt.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "gateway/net/http_client.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/util/crypto.hpp"
#include "providers/common/transport.hpp"
#include "providers/musicgpt/transform.hpp"

namespace segue::providers::musicgpt {
namespace {

namespace fs = std::filesystem;

// The multipart body, produced as the client asks for it: text fields, then the spooled file in
// 4 MiB reads on the blocking pool, then the closing boundary. Never all in memory. (Measured:
// each read-then-write round costs ~20 ms beyond its I/O here, so 256 KiB reads forwarded at
// ~12 MB/s and 4 MiB reads at ~110 MB/s, with RSS growth ~9 MiB; bench/forward_musicgpt.sh.)
struct multipart_stream {
    runtime::blocking_pool* blocking = nullptr;
    std::string head;  // fields + the file part's header
    std::string tail;  // CRLF + closing boundary
    std::string path;
    int fd = -1;
    int stage = 0;  // 0 head, 1 file, 2 tail, 3 done
    ~multipart_stream() {
        if (fd >= 0)
            ::close(fd);
    }
};

// A plain function with the state as a parameter: coroutine lambdas with captures are avoided.
boost::asio::awaitable<std::string> next_part(std::shared_ptr<multipart_stream> s) {
    if (s->stage == 0) {
        s->stage = 1;
        co_return s->head;
    }
    if (s->stage == 1) {
        std::string chunk;
        bool failed = false;
        co_await s->blocking->run([&] {
            if (s->fd < 0)
                s->fd = ::open(s->path.c_str(), O_RDONLY | O_CLOEXEC);
            if (s->fd < 0) {
                failed = true;
                return;
            }
            chunk.resize(4 * 1024 * 1024);
            ssize_t n = ::read(s->fd, chunk.data(), chunk.size());
            if (n < 0)
                failed = true;
            chunk.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
        });
        if (failed)
            throw std::runtime_error("cannot read the spooled upload");
        if (!chunk.empty())
            co_return chunk;
        s->stage = 2;
    }
    if (s->stage == 2) {
        s->stage = 3;
        co_return s->tail;
    }
    co_return std::string();
}

update transport_failure(const net::result& r, std::string_view what) {
    return wire::transport_failure(r, "MusicGPT", what);
}

}  // namespace

musicgpt_provider::musicgpt_provider(musicgpt_settings settings) : settings_(std::move(settings)) {
    caps_.source_file = true;
    caps_.source_url = true;
    caps_.max_outputs = 2;
    caps_.webhooks = true;
    caps_.polling = true;
    caps_.separate_artifacts = true;
    // MusicGPT's first webhook comes when the generation is done: wait as long as we would
    // before asking byId.
    caps_.reconcile_window_ms = settings_.reconcile_after.count();
}

boost::asio::awaitable<update> musicgpt_provider::submit(const task_view& task, services& svc) {
    auto sr = build_submit(task.request, task.callback_url);
    if (sr.kind == submit_request::body_kind::none) {
        update u;
        u.what = update::kind::failed;
        u.error = core::error_class::rejected;
        u.error_code = sr.error_code;
        u.error_message = sr.error;
        co_return u;
    }
    net::request req;
    req.method = "POST";
    req.url = settings_.base_url + std::string(extend_path);
    req.metrics_host = "musicgpt";  // upstream metrics by provider; the method tells the call
    req.headers.emplace_back("Authorization", authorization_value(settings_.api_key));
    req.headers.emplace_back("Accept", "application/json");
    req.timeout = settings_.submit_timeout;
    if (sr.kind == submit_request::body_kind::json) {
        req.headers.emplace_back("Content-Type", "application/json");
        req.body = sr.json_body;
    } else {
        auto s = std::make_shared<multipart_stream>();
        s->blocking = &svc.blocking;
        s->path = task.input_path;
        const std::string boundary = "segue-" + util::random_hex(12);
        for (const auto& f : sr.fields)
            s->head += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + f.name +
                       "\"\r\n\r\n" + f.value + "\r\n";
        s->head += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + sr.file_field +
                   "\"; filename=\"" + sr.file_name +
                   "\"\r\nContent-Type: " + sr.file_content_type + "\r\n\r\n";
        s->tail = "\r\n--" + boundary + "--\r\n";
        std::uint64_t file_size = 0;
        bool ok = true;
        const std::string path = task.input_path;
        co_await svc.blocking.run([&] {
            std::error_code ec;
            file_size = fs::file_size(path, ec);
            ok = !ec;
        });
        if (!ok) {
            update u;
            u.what = update::kind::failed;
            u.error = core::error_class::unknown;
            u.error_code = "upload_missing";
            u.error_message = "the spooled upload is gone";
            co_return u;
        }
        req.headers.emplace_back("Content-Type", "multipart/form-data; boundary=" + boundary);
        req.body_size = s->head.size() + file_size + s->tail.size();
        req.body_source = [s] { return next_part(s); };
    }
    auto r = co_await svc.http->send(std::move(req));
    if (!r.ok())
        co_return transport_failure(r, "submit");
    auto u = parse_submit_response(r.res.status, r.res.body, r.res.headers);
    // A 2xx we cannot read may still be a task that exists upstream.
    u.ambiguous = u.what == update::kind::failed && u.error_code == "malformed_response";
    for (auto& w : sr.warnings)
        u.warnings.push_back(w);
    if (u.what == update::kind::accepted)
        u.poll_after_ms =
            (task.callback_url.empty() ? settings_.poll_interval : settings_.reconcile_after)
                .count();
    co_return u;
}

boost::asio::awaitable<update> musicgpt_provider::poll(const task_view& task, services& svc) {
    auto state = parse_state(task.state_json);
    const std::string& upstream = state.task_id.empty() ? task.provider_task_id : state.task_id;
    if (upstream.empty() && state.lookup_conversion_id.empty()) {
        // Known upstream only by callbacks that named nothing to look it up by: nothing to ask.
        update u;
        u.what = update::kind::running;
        u.poll_after_ms = settings_.reconcile_after.count();
        co_return u;
    }
    net::request req;
    req.url = settings_.base_url + (upstream.empty()
                                        ? by_id_target_for_conversion(state.lookup_conversion_id)
                                        : by_id_target(upstream));
    req.headers.emplace_back("Authorization", authorization_value(settings_.api_key));
    req.headers.emplace_back("Accept", "application/json");
    req.timeout = settings_.poll_timeout;
    req.metrics_host = "musicgpt";
    auto r = co_await svc.http->send(std::move(req));
    if (!r.ok()) {
        // A failed poll is not a failed task: try again later.
        update u;
        u.what = update::kind::running;
        u.poll_after_ms = settings_.poll_interval.count();
        co_return u;
    }
    if (upstream.empty() && r.res.status == 404) {
        // Asked by a conversion that a callback with this attempt's token named: MusicGPT has
        // the task, so a 404 is "not findable by that conversion (yet)", not "no such task".
        // Ask again after a window; the reconcile fails the attempt at its retry deadline if
        // nothing names the task by then.
        update u;
        u.what = update::kind::running;
        u.poll_after_ms = settings_.reconcile_after.count();
        u.warnings.push_back("musicgpt: byId does not know conversion '" +
                             state.lookup_conversion_id + "' (HTTP 404); asking again later");
        co_return u;
    }
    auto u = parse_by_id(task.state_json, r.res.status, r.res.body, r.res.headers);
    if (u.what == update::kind::running && !u.poll_after_ms)
        u.poll_after_ms = settings_.poll_interval.count();
    if (u.what == update::kind::running || u.what == update::kind::progress)
        u.poll_after_ms =
            std::max<std::int64_t>(u.poll_after_ms.value_or(0), settings_.poll_interval.count());
    co_return u;
}

std::optional<update> musicgpt_provider::on_webhook(const task_view& task,
                                                    const inbound_webhook& hook,
                                                    webhook_refusal& refused) const {
    auto u = parse_webhook(task.state_json, hook.body, refused.message, &refused.too_early,
                           &refused.upstream_task_id, &refused.state_json);
    if (u) {
        u->webhook_kind = !u->cover_url.empty() ? "cover" : "audio";
        for (const auto& o : u->outputs)
            if (o.lyrics_timestamped && o.status == core::output_status::pending)
                u->webhook_kind = "lyrics";
    }
    return u;
}

}  // namespace segue::providers::musicgpt
