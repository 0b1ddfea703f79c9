#include "gateway/api/create_flow.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>

#include "gateway/api/compat.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/db.hpp"
#include "gateway/store/disk.hpp"
#include "gateway/util/json_text.hpp"
#include "providers/provider.hpp"
#include "providers/registry.hpp"

namespace segue::api::create {

namespace fs = std::filesystem;
using boost::asio::awaitable;

struct flow_state {
    bool grant_known(const std::string& tenant) {
        std::lock_guard lk(m);
        return granted.count(tenant) != 0;
    }
    void grant_ensured(const std::string& tenant) {
        std::lock_guard lk(m);
        granted.insert(tenant);
    }
    store::space_gate space;
    std::mutex m;
    std::set<std::string> granted;
};

std::shared_ptr<flow_state> make_flow_state() {
    return std::make_shared<flow_state>();
}

flow::flow(const api_deps& d)
    : deps_(d),
      shared_(d.creates ? d.creates : make_flow_state()),
      created_(d.metrics.counter_family("segue_tasks_created_total", "Tasks accepted, by provider.",
                                        {"provider"})),
      rejected_(d.metrics.counter_family("segue_api_rejected_total",
                                         "Requests refused by the API, by reason.", {"reason"})),
      upload_bytes_(
          d.metrics.make_counter("segue_upload_bytes_total", "Audio bytes received in uploads.")),
      spool_bytes_(
          d.metrics.make_gauge("segue_spool_bytes", "Bytes of uploads being spooled right now.")) {}

void flow::count_refusal(std::string_view reason) {
    rejected_.with({reason}).inc();
}

read_env flow::reading() {
    const auto& s = deps_.settings;
    return {s.api.max_upload_bytes,
            s.api.max_json_bytes,
            (fs::path(s.storage.blob_dir) / "spool").string(),
            deps_.blocking,
            upload_bytes_,
            spool_bytes_};
}

validate_env flow::validating() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    auto& providers = deps_.providers;
    return {deps_.settings,
            [&providers](std::string_view n) { return providers.find(n) != nullptr; },
            [&providers](std::string_view n) -> const providers::capabilities* {
                auto* p = providers.find(n);
                return p ? &p->caps() : nullptr;
            },
            std::uniform_real_distribution<double>(0.0, 1.0)(rng)};
}

awaitable<std::optional<refusal>> flow::resolve_output_clip(submission& s,
                                                            const std::string& tenant,
                                                            std::optional<double>& duration,
                                                            bool& ours) {
    auto* clip = s.fields.if_contains("clip");
    if (!clip)
        co_return std::nullopt;
    boost::json::value parsed;
    if (clip->is_string() && s.from_form) {
        boost::system::error_code ec;
        parsed = boost::json::parse(clip->get_string(), ec);
        if (ec)
            co_return std::nullopt;  // validation names it
        clip = &parsed;
    }
    const auto* fields = clip->if_object();
    const auto* id = fields ? fields->if_contains("id") : nullptr;
    const auto* provider = fields ? fields->if_contains("provider") : nullptr;
    if (!id || !id->is_string() || !provider || !provider->is_string())
        co_return std::nullopt;
    // A field of its own besides these two: validation names it, so the clip is checked but
    // not rewritten into a source that would drop it.
    const bool extra_fields = std::any_of(fields->begin(), fields->end(), [](const auto& kv) {
        return kv.key() != "id" && kv.key() != "provider";
    });
    auto not_usable = [](std::string why) {
        return refusal{error_kind::validation_failed,
                       "validation",
                       "clip.id: " + why,
                       {{"clip.id", std::move(why)}}};
    };
    auto ref = parse_output_id(id->get_string());
    if (!ref || ref->task_id.rfind("ext_", 0) != 0) {
        // "<task id>-<n>" with an n no output has ("-0", "-99999"): one of ours, not a
        // provider's clip to send upstream.
        const std::string_view text = id->get_string();
        const auto dash = text.rfind('-');
        if (text.rfind("ext_", 0) == 0 && dash != std::string_view::npos &&
            dash + 1 < text.size() &&
            text.find_first_not_of("0123456789", dash + 1) == std::string_view::npos) {
            ours = true;
            co_return not_usable("no such output");
        }
        co_return std::nullopt;  // a provider's own clip
    }
    ours = true;
    auto t = co_await load_task(deps_.db, ref->task_id, tenant);
    const store::output_row* out = nullptr;
    if (t)
        for (const auto& o : t->outputs)
            if (o.index == ref->index)
                out = &o;
    if (!out)
        co_return not_usable("no such output");
    if (out->status != core::to_string(core::output_status::ready))
        co_return not_usable("the output is " + out->status + ", not ready");
    const auto data = output_data(*out);
    if (const auto* audio = data.if_contains("audio"); audio && audio->is_object()) {
        const auto& a = audio->get_object();
        if (const auto* d = a.if_contains("duration"); d && d->is_number())
            duration = d->to_number<double>();
        // Its files are the gateway's: gone once retention deleted them.
        std::vector<std::string> files;
        for (const char* k : {"wav_file_id", "mp3_file_id"})
            if (const auto* f = a.if_contains(k); f && f->is_string() && !f->get_string().empty())
                files.emplace_back(f->get_string());
        if (!files.empty()) {
            bool any = false;
            co_await deps_.db.read([&](store::transaction& tx) {
                for (const auto& f : files)
                    any = any || tx.get_file(f).has_value();
            });
            if (!any)
                co_return not_usable("its audio expired and was deleted (retention)");
        }
    }
    // Another source beside it: validation says to give one (the clip is not rewritten into a
    // URL that would replace the other).
    if (extra_fields || s.file || s.fields.contains("audio_url"))
        co_return std::nullopt;
    const auto* own = data.if_contains("provider_output_id");
    if (own && own->is_string() && t->task.provider == provider->get_string()) {
        // Made by that provider: its own clip, extended there.
        boost::json::object c{{"provider", provider->get_string()}, {"id", own->get_string()}};
        s.fields["clip"] =
            s.from_form ? boost::json::value(util::json_text(c)) : boost::json::value(std::move(c));
        co_return std::nullopt;
    }
    // Otherwise its audio, by the output's signed link: any provider that takes URLs.
    auto url = public_audio_url(deps_.settings, data, "wav");
    if (url.empty())
        url = public_audio_url(deps_.settings, data, "mp3");
    if (url.rfind("http", 0) != 0)
        co_return not_usable("its audio has no URL a provider can fetch (set api.public_base_url)");
    s.fields.erase("clip");
    s.fields["audio_url"] = url;
    co_return std::nullopt;
}

awaitable<std::optional<refusal>> flow::room_for(std::uint64_t incoming) {
    const auto& st = deps_.settings.storage;
    if (st.min_free_bytes == 0)
        co_return std::nullopt;
    if (shared_->space.admits(st.min_free_bytes, incoming, store::space_gate::clock::now()))
        co_return std::nullopt;
    std::vector<std::string> paths{st.blob_dir};
    if (st.engine == config::storage_engine::sqlite)
        paths.push_back(std::filesystem::path(st.sqlite_path).parent_path().string());
    std::optional<store::volume_space> v;
    co_await deps_.blocking.run([&] { v = store::tightest_volume(paths); });
    const bool room = !v || v->available >= st.min_free_bytes + incoming;
    shared_->space.measured(v, store::space_gate::clock::now(), room ? incoming : 0);
    if (room)
        co_return std::nullopt;
    co_return refusal{
        error_kind::insufficient_storage,
        "disk_full",
        "the data volume has " + std::to_string(v->available) + " bytes free" +
            (incoming ? " for an upload of " + std::to_string(incoming) + " bytes" : "") +
            ", and storage.min_free_bytes keeps " + std::to_string(st.min_free_bytes) +
            " free: new uploads are refused until space is freed (tasks already "
            "accepted go on)",
        {}};
}

// read -> validate -> prepare the source -> admit (create_pipeline.hpp).
awaitable<flow_result> flow::run(http::context& ctx, const std::string& tenant,
                                 const flow_hooks& hooks) {
    flow_result out;
    auto refused = [&](refusal r) {
        count_refusal(r.reason);
        // What a refusal says in headers, whichever shape the caller writes its body in: a full
        // disk asks the client to come back later.
        if (r.kind == error_kind::insufficient_storage)
            ctx.res().set_header("Retry-After", std::to_string(disk_retry_after_s));
        out.what = flow_result::kind::refused;
        out.refused = std::move(r);
        return out;
    };
    auto key = read_idempotency_key(ctx.header("Idempotency-Key"));
    if (auto* r = std::get_if<refusal>(&key))
        co_return refused(std::move(*r));
    // With the database out of reach nothing can be created: 503 before a byte of the body is
    // read (an upload would be read whole, and then fail to be stored where blobs live in it).
    deps_.db.refuse_if_unreachable();
    // A file is coming: refused before a byte of it is spooled when the disk is short.
    if (auto ct = ctx.header("Content-Type"); ct && http::media_type_is(*ct, "multipart/form-data"))
        if (auto r = co_await room_for(ctx.content_length().value_or(0)))
            co_return refused(std::move(*r));
    auto read = co_await read_submission(ctx, reading());
    if (auto* r = std::get_if<refusal>(&read))
        co_return refused(std::move(*r));
    auto& submitted = std::get<submission>(read);
    if (hooks.translate)
        if (auto r = co_await hooks.translate(submitted))
            co_return refused(std::move(*r));
    // Every bad field at once: what the clip's lookup, the URL guard and the upload's probe
    // find joins the fields' own errors, rather than each hiding the others.
    std::vector<field_error> clip_errors;
    std::optional<double> clip_duration;
    const bool had_url = submitted.fields.contains("audio_url");
    bool our_output = false;
    if (auto r = co_await resolve_output_clip(submitted, tenant, clip_duration, our_output)) {
        if (r->kind != error_kind::validation_failed || r->errors.empty())
            co_return refused(std::move(*r));
        clip_errors = std::move(r->errors);
    }

    auto checked = validate_submission(submitted, validating());
    std::vector<std::string> warnings;
    if (checked.unroutable && !hooks.best_effort.empty() &&
        std::all_of(checked.errors.begin(), checked.errors.end(), [&](const field_error& e) {
            return std::find(hooks.best_effort.begin(), hooks.best_effort.end(), e.field) !=
                   hooks.best_effort.end();
        })) {
        for (const auto& e : checked.errors) {
            submitted.fields.erase(e.field);
            warnings.push_back(e.field + " left out: " + e.message);
        }
        checked = validate_submission(submitted, validating());
    }
    if (our_output)
        // One of our outputs goes to any provider as its audio: not a clip to route, so neither
        // "the provider takes no clips" nor its clip.provider matters (a field of its own was
        // refused, or its lookup failed; either is named below). A MusicAPI drop-in client
        // names no provider at all (found by a black-box run: "clip_id: is not an enabled
        // provider" beside the real reason).
        std::erase_if(checked.errors, [](const field_error& e) {
            return e.field == "clip" || e.field == "clip.provider";
        });
    if (!clip_errors.empty()) {
        // The clip could not be resolved: its own error says why, not one about its id. Its
        // other fields' errors stay.
        std::erase_if(checked.errors, [](const field_error& e) { return e.field == "clip.id"; });
        checked.errors.insert(checked.errors.begin(), clip_errors.begin(), clip_errors.end());
    }
    // An output of ours has a known length: extend_after past it is refused now, as for an
    // upload (422 unprocessable_audio alone, named with the others), not by the provider once
    // the task runs.
    bool clip_too_short = false;
    if (clip_duration && checked.request.extend_after > *clip_duration + 0.001 &&
        std::none_of(checked.errors.begin(), checked.errors.end(),
                     [](const field_error& e) { return e.field == "extend_after"; })) {
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.3f", *clip_duration);
        checked.errors.push_back(
            {"extend_after", "is beyond the end of the clip (" + std::string(secs) + " s)"});
        clip_too_short = true;
    }
    co_await guard_urls(checked, deps_.url_policy);
    if (!had_url && submitted.fields.contains("audio_url"))
        // The clip became its output's link (api.public_base_url): a refusal of that link is
        // about the clip the client sent, not a field it did not.
        for (auto& e : checked.errors)
            if (e.field == "audio_url") {
                e.field = "clip.id";
                e.message = "its audio's link (api.public_base_url) is " + e.message +
                            " by the fetch policy (fetch.allow_cidrs, fetch.allowed_ports)";
            }
    require_webhook_secret(checked, deps_.settings, tenant);
    auto& file = submitted.file;
    std::optional<audio::probe_result> probe;
    if (file) {
        probe = co_await probe_upload(*file, deps_.blocking);
        // With other fields wrong, the upload's own errors (not audio, extend_after past its
        // end, unless extend_after is wrong already) are named with them.
        if (!checked.errors.empty()) {
            auto req = checked.request;
            if (auto r = accept_probe(*probe, *file, req))
                for (auto& e : r->errors)
                    if (std::none_of(checked.errors.begin(), checked.errors.end(),
                                     [&](const field_error& x) { return x.field == e.field; }))
                        checked.errors.push_back(std::move(e));
        }
    }
    if (clip_too_short && checked.errors.size() == 1)
        co_return refused(refusal{error_kind::unprocessable_audio, "audio",
                                  "extend_after " + checked.errors[0].message,
                                  std::move(checked.errors)});
    if (auto r = invalid_fields(checked))
        co_return refused(std::move(*r));
    auto& req = checked.request;
    // An audio_url is downloaded to this volume too (by the provider, into its scratch files).
    if (req.source == core::source_kind::url)
        if (auto r = co_await room_for(0))
            co_return refused(std::move(*r));
    if (hooks.decorate)
        hooks.decorate(req);

    if (file) {
        if (auto r = accept_probe(*probe, *file, req))
            co_return refused(std::move(*r));
        if (auto r = co_await store_upload(*file, deps_.blobs, deps_.blocking)) {
            // The database went away during the upload (blobs in it): come back, not a 500.
            deps_.db.refuse_if_unreachable();
            co_return refused(std::move(*r));
        }
    }

    const auto now = core::now_ms();
    out.admitted =
        plan_admission(req, tenant, std::get<0>(key), file ? &*file : nullptr, deps_.settings, now);
    if (!warnings.empty()) {
        boost::json::array w;
        for (auto& x : warnings)
            w.emplace_back(std::move(x));
        out.admitted.task.warnings_json = util::json_text(w);
    }
    const bool grant_to_ensure = out.admitted.grant_milli > 0 && !shared_->grant_known(tenant);
    if (!grant_to_ensure)
        out.admitted.grant_milli = 0;  // admit's ensure_grant then looks nothing up
    const auto& a = out.admitted;
    const auto retention =
        static_cast<store::millis>(deps_.settings.api.idempotency_retention.count());
    admitted result;
    std::exception_ptr failed;
    // The submit job goes to this process's engine in memory when it has room (no claim round
    // before the provider call); otherwise it is written due now for a claim.
    auto handoff = deps_.engine.reserve(out.admitted.task.provider);
    try {
        co_await deps_.db.write([&](store::transaction& tx) {
            result = admit(tx, a, now, retention, handoff ? &handoff : nullptr);
        });
    } catch (...) {
        failed = std::current_exception();
    }
    // Committed past ensure_grant (a replay or a key conflict returns before it): the grant is
    // in the ledger now.
    if (!failed && grant_to_ensure &&
        (result.what == admitted::kind::created || result.what == admitted::kind::insufficient))
        shared_->grant_ensured(tenant);
    // No task points at the stored upload unless one was created.
    if (file && (failed || result.what != admitted::kind::created))
        co_await discard_upload(*file, deps_.blobs, deps_.blocking);
    if (failed)
        std::rethrow_exception(failed);
    if (auto r = refused_admission(result, a))
        co_return refused(std::move(*r));
    if (result.what == admitted::kind::replay) {
        out.what = flow_result::kind::replay;
        out.prior = result.prior;
        co_return out;
    }

    const auto& provider = a.request.route_chain.front();
    if (handoff)
        deps_.engine.hand_off(std::move(handoff), a.task);
    else
        deps_.engine.notify();
    created_.with({provider}).inc();
    if (a.request.hold_milli > 0)
        deps_.metrics
            .counter_family("segue_credits_total",
                            "Credits held at submit, captured by ready outputs and refunded "
                            "(released) when outputs failed or were canceled.",
                            {"tenant", "provider", "kind"})
            .with({a.tenant, provider, "held"})
            .inc(core::milli_to_credits(a.request.hold_milli));
    log::info("task created", {{"task_id", a.task.id},
                               {"tenant", a.tenant},
                               {"provider", provider},
                               {"request_id", ctx.request_id()}});
    out.what = flow_result::kind::created;
    co_return out;
}

}  // namespace segue::api::create
