#include "gateway/core/mirror.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <system_error>

#include "gateway/audio/verify.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/lease_worker.hpp"
#include "gateway/core/model.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/http_client.hpp"
#include "gateway/net/url_guard.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/fd_io.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::core {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

struct mirror_lease_lost : std::runtime_error {
    mirror_lease_lost() : std::runtime_error("mirror job lease lost") {}
};

// One file downloaded to scratch.
struct fetched {
    std::string format;  // "mp3", "wav", "cover"
    std::string url;
    bool ok = false;
    bool permanent = false;  // retrying cannot help (the guard refused it, over the cap)
    bool gone = false;       // the provider's host answered 404 or 410: it has no such file
    std::string error;
    std::string path;
    std::string sha256;
    std::uint64_t size = 0;
    std::string content_type;
};

// The streamed body: written to a scratch file and hashed on the blocking pool, chunk by chunk.
struct sink_state {
    int fd = -1;
    int err = 0;
    std::uint64_t bytes = 0;
    util::sha256_stream sha;
};

std::optional<double> number_of(const json::object& o, std::string_view key) {
    auto v = o.if_contains(key);
    if (!v)
        return std::nullopt;
    if (v->is_double())
        return v->as_double();
    if (v->is_int64())
        return static_cast<double>(v->as_int64());
    if (v->is_uint64())
        return static_cast<double>(v->as_uint64());
    return std::nullopt;
}

std::string cover_type(const std::string& header, const std::string& url) {
    const std::string t = header.substr(0, header.find(';'));
    if (t.rfind("image/", 0) == 0)
        return t;
    const auto dot = url.rfind('.');
    const std::string ext = dot == std::string::npos ? "" : url.substr(dot + 1);
    if (ext == "png")
        return "image/png";
    if (ext == "jpg" || ext == "jpeg")
        return "image/jpeg";
    if (ext == "webp")
        return "image/webp";
    return "application/octet-stream";
}

std::string extension_of(const std::string& content_type) {
    if (content_type == "image/png")
        return ".png";
    if (content_type == "image/jpeg")
        return ".jpg";
    if (content_type == "image/webp")
        return ".webp";
    if (content_type == "image/gif")
        return ".gif";
    if (content_type == "image/svg+xml")
        return ".svg";
    return "";
}

double unit_random() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// The sink's step: hash and write one chunk (or close the file at the end) off the IO thread.
asio::awaitable<bool> write_chunk(std::shared_ptr<sink_state> st, runtime::blocking_pool* pool,
                                  std::string_view chunk) {
    co_await pool->run([st, chunk] {
        if (st->err != 0)
            return;
        if (chunk.empty()) {           // the end of the body
            if (::close(st->fd) != 0)  // put() makes the stored copy durable
                st->err = errno;
            st->fd = -1;
            return;
        }
        st->sha.update(chunk);
        st->bytes += chunk.size();
        st->err = util::write_all(st->fd, chunk);
    });
    co_return st->err == 0;
}

json::value number_or_null(const std::optional<double>& v) {
    return v ? json::value(std::round(*v * 100) / 100) : json::value(nullptr);
}

}  // namespace

std::string verify_output(const std::vector<verify_file>& files, const verify_request& req) {
    if (files.empty())
        return {};
    audio::verify_options o;
    o.reported_duration = req.reported_duration;
    if (req.length)
        o.expected_duration = req.extend_after + *req.length;
    if (req.extend_after > 0)
        o.splice_at = req.extend_after;
    // The WAV is lossless and exact in length: it speaks for the output; the others are
    // decoded too (each must play), and their flags count.
    std::vector<verify_file> order = files;
    std::stable_sort(order.begin(), order.end(), [](const verify_file& a, const verify_file& b) {
        return a.format == "wav" && b.format != "wav";
    });
    json::object out;
    json::object formats;
    std::set<std::string> flags;
    bool first = true;
    for (const auto& f : order) {
        const auto v = audio::verify(f.path, o);
        json::object fo;
        fo["duration"] = std::round(v.duration * 1000) / 1000;
        json::array ff;
        for (const auto& flag : v.flags) {
            ff.emplace_back(flag);
            flags.insert(flag);
        }
        fo["flags"] = std::move(ff);
        if (!v.ok)
            fo["error"] = v.error;
        formats[f.format] = std::move(fo);
        if (!first)
            continue;
        first = false;
        out["source"] = f.format;
        if (!v.ok) {
            out["error"] = v.error;
            continue;
        }
        out["duration"] = std::round(v.duration * 1000) / 1000;
        out["format"] = v.format;
        out["sample_rate"] = v.sample_rate;
        out["channels"] = v.channels;
        out["peak_dbfs"] = number_or_null(v.peak_dbfs);
        out["loudness_lufs"] = number_or_null(v.loudness_lufs);
        if (req.length)
            out["expected_duration"] = req.extend_after + *req.length;
        if (v.splice.checked) {
            json::object s;
            s["at"] = v.splice.at;
            s["level_before_dbfs"] = std::round(v.splice.level_before_dbfs * 100) / 100;
            s["level_after_dbfs"] = std::round(v.splice.level_after_dbfs * 100) / 100;
            s["level_jump_db"] = std::round(v.splice.level_jump_db * 100) / 100;
            s["brightness_ratio"] = std::round(v.splice.brightness_ratio * 1000) / 1000;
            out["splice"] = std::move(s);
        }
    }
    json::array all;
    for (const auto& f : flags)
        all.emplace_back(f);
    out["flags"] = std::move(all);
    out["formats"] = std::move(formats);
    return util::json_text(out);
}

struct output_mirror::impl : std::enable_shared_from_this<output_mirror::impl> {
    explicit impl(deps d)
        : d(std::move(d)),
          runs(this->d.metrics.counter_family(
              "segue_output_mirrors_total",
              "Mirror job runs, by what they copied (audio, cover) and outcome (ok, retry, "
              "failed, obsolete).",
              {"kind", "outcome"})),
          bytes(this->d.metrics.make_counter("segue_output_mirror_bytes_total",
                                             "Bytes copied from providers into the blob store.")),
          flags(this->d.metrics.counter_family("segue_output_verification_flags_total",
                                               "Outputs whose verification raised a flag, by flag.",
                                               {"flag"})) {}

    asio::awaitable<fetched> fetch_one(std::string format, std::string url, std::string path,
                                       store::millis deadline);
    asio::awaitable<transition::result> run(store::job_row job, const lease_state& lease);

    deps d;
    metrics::family<metrics::counter>& runs;
    metrics::counter& bytes;
    metrics::family<metrics::counter>& flags;
};

output_mirror::output_mirror(deps d) : impl_(std::make_shared<impl>(std::move(d))) {}
output_mirror::~output_mirror() = default;

asio::awaitable<transition::result> output_mirror::run(store::job_row job,
                                                       const lease_state& lease) {
    auto self = impl_;
    co_return co_await self->run(std::move(job), lease);
}

asio::awaitable<fetched> output_mirror::impl::fetch_one(std::string format, std::string url,
                                                        std::string path, store::millis deadline) {
    auto self = shared_from_this();
    fetched f;
    f.format = std::move(format);
    f.url = url;
    f.path = path;
    const auto& ms = d.settings.outputs.mirror;
    if (!d.fetch) {
        f.error = "no client for provider files";
        f.permanent = true;
        co_return f;
    }
    auto st = std::make_shared<sink_state>();
    co_await d.blocking.run([st, path] {
        st->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (st->fd < 0)
            st->err = errno;
    });
    if (st->fd < 0) {
        f.error = "cannot open " + path + ": " + std::strerror(st->err);
        co_return f;
    }
    auto* pool = &d.blocking;
    net::body_sink sink = [st, pool](std::string_view chunk) {
        return write_chunk(st, pool, chunk);
    };
    net::request r;
    r.url = url;
    r.metrics_host = "provider_file";  // a bounded label set
    const auto left = std::max<store::millis>(1000, deadline - now_ms());
    r.timeout = std::chrono::milliseconds(std::min<store::millis>(
        left, std::chrono::duration_cast<std::chrono::milliseconds>(ms.timeout).count()));
    auto got = d.url_policy
                   ? co_await net::download_following(*d.fetch, std::move(r), sink, ms.max_bytes,
                                                      d.url_policy, net::fetch_max_redirects)
                   : co_await d.fetch->download(std::move(r), sink, ms.max_bytes);
    const bool complete = got.ok() && got.res.status / 100 == 2 && st->fd < 0 && st->err == 0;
    if (!complete) {
        co_await d.blocking.run([st, path] {
            if (st->fd >= 0)
                ::close(st->fd);
            st->fd = -1;
            ::unlink(path.c_str());
        });
        if (got.ok() && got.res.status / 100 != 2) {
            f.error = "HTTP " + std::to_string(got.res.status);
            f.gone = got.res.status == 404 || got.res.status == 410;
        } else if (st->err != 0)
            f.error = "writing " + path + ": " + std::strerror(st->err);
        else
            f.error = std::string(net::to_string(got.error)) +
                      (got.message.empty() ? "" : " (" + got.message + ")");
        f.permanent =
            got.error == net::failure::refused_address || got.error == net::failure::bad_url ||
            got.error == net::failure::plain_http_refused || got.error == net::failure::too_large;
        co_return f;
    }
    f.ok = true;
    f.size = st->bytes;
    f.sha256 = st->sha.hex_digest();
    f.content_type = got.res.header("Content-Type").value_or("");
    co_return f;
}

asio::awaitable<transition::result> output_mirror::impl::run(store::job_row job,
                                                             const lease_state& lease) {
    auto self = shared_from_this();
    const store::lease_ref ref{job.id, d.owner, job.attempts, &lease.released};
    auto payload = parse_object(job.payload_json);
    const bool cover = payload.contains("cover");
    const int index =
        static_cast<int>(number_of(payload, cover ? "cover" : "index").value_or(cover ? 0 : 1));
    const store::millis deadline =
        static_cast<store::millis>(number_of(payload, "deadline").value_or(0));
    // Retries stop here: the earlier of the mirror's deadline and the task's (a job scheduled
    // before retry_until existed has only its own).
    const store::millis retry_until =
        static_cast<store::millis>(number_of(payload, "retry_until").value_or(deadline));
    const int tries = static_cast<int>(number_of(payload, "tries").value_or(0));
    const char* kind = cover ? "cover" : "audio";

    std::optional<store::task_row> task;
    std::vector<store::output_row> outs;
    co_await d.db.read([&](store::transaction& tx) {
        task = tx.get_task(job.task_id);
        if (task)
            outs = tx.get_outputs(job.task_id);
    });
    // What this job still has to copy: nothing when its output no longer waits for it.
    std::vector<std::pair<std::string, std::string>> sources;  // (format, url)
    verify_request vreq;
    if (task && !is_terminal(parse_task_status(task->status).value_or(task_status::failed))) {
        try {
            const auto req = request_from_json(task->request_json);
            vreq.extend_after = req.extend_after;
            vreq.length = req.length;
        } catch (const std::exception&) {
        }
        for (const auto& o : outs) {
            auto dat = parse_object(o.data_json);
            if (cover) {
                const char* key = index == 0 ? "_cover_pending" : "_own_cover_pending";
                if ((index == 0 || o.index == index) && dat.contains(key) && sources.empty())
                    if (auto u = payload.if_contains("url"); u && u->is_string())
                        sources.emplace_back("cover", std::string(u->as_string()));
                continue;
            }
            if (o.index != index || o.status != to_string(output_status::pending))
                continue;
            auto m = dat.if_contains("_mirror");
            if (!m || !m->is_object())
                continue;
            auto a = m->as_object().if_contains("audio");
            if (!a || !a->is_object())
                continue;
            const auto& audio = a->as_object();
            for (const char* fmt : {"mp3", "wav"})
                if (auto u = audio.if_contains(std::string(fmt) + "_url"); u && u->is_string())
                    sources.emplace_back(fmt, std::string(u->as_string()));
            vreq.reported_duration = number_of(audio, "duration");
        }
    }
    if (sources.empty()) {
        co_await d.db.write([&](store::transaction& tx) { tx.complete_job(ref); });
        runs.with({kind, "obsolete"}).inc();
        co_return transition::result{};
    }

    // Download every file of the set to scratch.
    const fs::path dir = fs::path(d.work_dir_of(job.task_id)) / "mirror";
    co_await d.blocking.run([dir] { fs::create_directories(dir); });
    std::vector<fetched> got;
    std::string error;
    bool permanent = false;
    bool gone = false;
    for (const auto& [fmt, url] : sources) {
        if (lease.lost)
            break;
        auto f = co_await fetch_one(fmt, url, (dir / util::random_id("part_")).string(), deadline);
        if (!f.ok) {
            error = fmt + ": " + f.error;
            permanent = f.permanent;
            gone = f.gone;
            break;
        }
        got.push_back(std::move(f));
    }
    auto discard = [&got] {
        for (const auto& f : got) {
            std::error_code ec;
            fs::remove(f.path, ec);
        }
    };
    if (lease.lost) {
        co_await d.blocking.run(discard);
        co_return transition::result{};
    }
    const auto now = now_ms();
    const bool complete = got.size() == sources.size();
    if (!complete) {
        co_await d.blocking.run(discard);
        const auto& ms = d.settings.outputs.mirror;
        const double base = static_cast<double>(
            std::chrono::duration_cast<std::chrono::milliseconds>(ms.initial_backoff).count());
        const double cap = static_cast<double>(
            std::chrono::duration_cast<std::chrono::milliseconds>(ms.max_backoff).count());
        const auto delay = static_cast<store::millis>(
            std::min(cap, base * std::pow(2.0, std::min(tries, 30))) * (0.5 + 0.5 * unit_random()));
        if (!permanent && now + delay < retry_until) {
            payload["tries"] = tries + 1;
            payload["last_error"] = error;
            bool held = true;
            co_await d.db.write([&](store::transaction& tx) {
                held = tx.reschedule_job(ref, now + delay, util::json_text(payload));
            });
            runs.with({kind, held ? "retry" : "lease_lost"}).inc();
            log::warn("mirror failed; retrying", {{"task_id", job.task_id},
                                                  {"kind", kind},
                                                  {"index", index},
                                                  {"tries", tries + 1},
                                                  {"retry_in_ms", delay},
                                                  {"error", error}});
            co_return transition::result{};
        }
        log::warn("mirror gave up", {{"task_id", job.task_id},
                                     {"kind", kind},
                                     {"index", index},
                                     {"tries", tries + 1},
                                     {"error", error}});
    }

    mirror_outcome m;
    m.index = index;
    m.cover = cover;
    m.ok = complete;
    m.error = error;
    m.gone = !complete && gone;
    if (complete) {
        // Verify (decode) while the files are local, then store them.
        co_await d.blocking.run([&] {
            if (!cover && d.settings.outputs.verify) {
                std::vector<verify_file> files;
                for (const auto& f : got)
                    files.push_back({f.format, f.path});
                m.verification_json = verify_output(files, vreq);
            }
            try {
                for (auto& f : got) {
                    mirror_outcome::file mf;
                    mf.format = f.format;
                    mf.provider_url = f.url;
                    mf.row.id = util::sortable_id("file_");
                    mf.row.kind = "output";
                    mf.row.content_type = f.format == "mp3"   ? "audio/mpeg"
                                          : f.format == "wav" ? "audio/wav"
                                                              : cover_type(f.content_type, f.url);
                    const std::string name =
                        f.format == "cover" ? "cover" + extension_of(mf.row.content_type)
                                            : "output-" + std::to_string(index) + "." + f.format;
                    mf.row.path = "outputs/" + job.task_id + "/" + mf.row.id + "-" + name;
                    mf.row.sha256 = f.sha256;
                    m.files.push_back(std::move(mf));
                }
                std::vector<store::blob_put> set;
                for (std::size_t i = 0; i < got.size(); ++i)
                    set.push_back({m.files[i].row.path, got[i].path});
                const auto sizes = d.blobs.put_all(set, store::put_mode::take).value();
                for (std::size_t i = 0; i < sizes.size(); ++i)
                    m.files[i].row.size = static_cast<std::int64_t>(sizes[i]);
            } catch (...) {
                m.files.clear();  // put_all removed what it had stored of the set
                for (const auto& f : got) {
                    std::error_code ec;
                    fs::remove(f.path, ec);
                }
                throw;
            }
        });
    }
    transition::result res;
    bool lost = false;
    std::exception_ptr failed;
    try {
        co_await d.db.write([&](store::transaction& tx) {
            res = {};
            if (!tx.complete_job(ref))
                throw mirror_lease_lost();
            res = d.trans.mirror_done(tx, job.task_id, m, now_ms());
        });
    } catch (const mirror_lease_lost&) {
        lost = true;
    } catch (...) {
        failed = std::current_exception();
    }
    // Nothing awaited it any more (the task moved on): keep no copy.
    const bool unused = !lost && !failed && !res.mirrored;
    if (lost || failed || unused) {
        // Nothing points at the stored files: a new run stores its own.
        co_await d.blocking.run([&] {
            for (const auto& mf : m.files)
                (void)d.blobs.remove(mf.row.path);
        });
        if (failed)
            std::rethrow_exception(failed);
        runs.with({kind, lost ? "lease_lost" : "obsolete"}).inc();
        co_return unused ? res : transition::result{};
    }
    runs.with({kind, complete ? "ok" : "failed"}).inc();
    for (const auto& f : m.files)
        bytes.inc(static_cast<double>(f.row.size));
    if (!m.verification_json.empty()) {
        auto v = parse_object(m.verification_json);
        if (auto fl = v.if_contains("flags"); fl && fl->is_array())
            for (const auto& x : fl->as_array())
                if (x.is_string())
                    flags.with({std::string(x.as_string())}).inc();
    }
    co_return res;
}

}  // namespace segue::core
