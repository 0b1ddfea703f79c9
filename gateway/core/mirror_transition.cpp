// The transitions of mirroring (core/mirror.hpp): a provider's remote output waits, pending, for
// its mirror job; the job's outcome makes it ready with the gateway's own URLs, and the task
// finishes once nothing is left to wait for. No I/O here, like the rest of core/transition.

#include <boost/json.hpp>

#include <algorithm>

#include "gateway/core/engine.hpp"
#include "gateway/core/model.hpp"
#include "gateway/core/transition.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::core {

namespace json = boost::json;

namespace {

constexpr const char* mirror_key = "_mirror";                        // audio waiting for its job
constexpr const char* cover_pending_key = "_cover_pending";          // the task's cover, ditto
constexpr const char* own_cover_pending_key = "_own_cover_pending";  // the output's own cover
constexpr const char* own_cover_key = "_cover_own";  // the output has a cover of its own
constexpr const char* settle_key = "_settle";        // the provider is done with the task

bool pending_mirror(const json::object& d) {
    return d.contains(mirror_key) || d.contains(cover_pending_key) ||
           d.contains(own_cover_pending_key);
}

// The file's fields in an audio object or an output: <prefix>_url, _file_id, _sha256, _size,
// _provider_url.
void put_file(json::object& o, const std::string& prefix, const mirror_outcome::file& f,
              const std::string& url) {
    o[prefix + "_url"] = url;
    o[prefix + "_file_id"] = f.row.id;
    o[prefix + "_provider_url"] = f.provider_url;
    o[prefix + "_sha256"] = f.row.sha256;
    o[prefix + "_size"] = f.row.size;
}

}  // namespace

json::object public_output(const json::object& data) {
    json::object out;
    for (const auto& kv : data)
        if (kv.key().empty() || kv.key().front() != '_')
            out[kv.key()] = kv.value();
    return out;
}

bool waits_for_mirror(const std::vector<store::output_row>& outs) {
    return std::any_of(outs.begin(), outs.end(), [](const store::output_row& o) {
        return pending_mirror(parse_object(o.data_json));
    });
}

bool transition::mirroring() const {
    return env_.settings.outputs.mirror.enabled;
}

void transition::schedule_mirror_job(store::transaction& tx, const store::task_row& t,
                                     json::object payload, store::millis now, result& res) const {
    const store::millis own = now + std::chrono::duration_cast<std::chrono::milliseconds>(
                                        env_.settings.outputs.mirror.deadline)
                                        .count();
    payload["deadline"] = own;
    // No retry starts after the task's deadline either (retry.deadline from its creation, as for
    // the provider's own retries): the earlier of the two. The first download runs regardless.
    payload["retry_until"] =
        env_.retry.deadline_ms > 0 ? std::min(own, t.created_at + env_.retry.deadline_ms) : own;
    payload["tries"] = 0;
    store::job_row j;
    j.kind = "mirror";
    j.task_id = t.id;
    j.due_at = now;
    j.payload_json = util::json_text(payload);
    // Not unique: one job per file set (each output's audio, each cover), run side by side.
    tx.schedule_job(j, false);
    res.notify = true;
}

void transition::request_audio_mirror(store::transaction& tx, const store::task_row& t,
                                      json::object& d, json::object audio, int index,
                                      store::millis now, result& res) const {
    json::object m;
    m["audio"] = std::move(audio);
    m["reported_at"] = now;
    d[mirror_key] = std::move(m);
    json::object p;
    p["index"] = index;
    schedule_mirror_job(tx, t, std::move(p), now, res);
}

void transition::request_cover_mirror(store::transaction& tx, const store::task_row& t,
                                      std::vector<store::output_row>& outs, int index,
                                      const std::string& url, store::millis now,
                                      result& res) const {
    // One cover per task: a repeated cover (webhook retries, every poll) changes nothing.
    for (const auto& o : outs) {
        auto d = parse_object(o.data_json);
        if (d.contains(cover_pending_key) ||
            (d.contains("cover_url") && !d.contains(own_cover_key)))
            return;
    }
    for (auto& o : outs) {
        auto d = parse_object(o.data_json);
        if (d.contains(own_cover_key))
            continue;
        d[cover_pending_key] = url;
        o.data_json = util::json_text(d);
        o.updated_at = now;
        tx.upsert_output(o);
    }
    json::object p;
    p["cover"] = index;
    p["url"] = url;
    schedule_mirror_job(tx, t, std::move(p), now, res);
}

transition::result transition::mirror_done(store::transaction& tx, const std::string& task_id,
                                           const mirror_outcome& m, store::millis now) const {
    result res;
    auto t = tx.get_task(task_id);
    if (!t || is_terminal(parse_task_status(t->status).value_or(task_status::failed)))
        return res;
    auto outs = tx.get_outputs(t->id);
    const auto& ms = env_.settings.outputs.mirror;
    if (m.cover) {
        const auto* f = m.ok && !m.files.empty() ? &m.files.front() : nullptr;
        bool had = false, changed = false;
        std::string shown;
        for (auto& o : outs) {
            auto d = parse_object(o.data_json);
            const char* key = m.index == 0 ? cover_pending_key : own_cover_pending_key;
            if (m.index != 0 && o.index != m.index)
                continue;
            if (m.index == 0 && d.contains("cover_url") && !d.contains(own_cover_key))
                had = true;
            auto pending = d.find(key);
            if (pending == d.end())
                continue;
            const std::string provider_url(pending->value().as_string());
            d.erase(key);
            changed = true;
            if (m.index == 0 && d.contains(own_cover_key)) {
                // Its own cover wins over the task's.
                o.data_json = util::json_text(d);
                tx.upsert_output(o);
                continue;
            }
            if (f) {
                shown = file_url(f->row.id);
                put_file(d, "cover", *f, shown);
            } else {
                shown = provider_url;
                d["cover_url"] = provider_url;
                d["cover_provider_url"] = provider_url;
                d["cover_mirror_failed"] = true;
                d["cover_mirror_error"] = m.error;
            }
            o.data_json = util::json_text(d);
            o.updated_at = now;
            tx.upsert_output(o);
        }
        res.mirrored = changed;
        if (f && changed) {
            auto row = f->row;
            row.tenant = t->tenant;
            row.task_id = t->id;
            row.created_at = now;
            tx.insert_file(row);
        }
        if (m.index == 0 && changed && !had) {
            json::object e;
            e["cover_url"] = f ? file_url(f->row.id) : shown;
            engine::append_event(tx, *t, event_type::cover_ready, std::move(e));
        }
    } else {
        auto it = std::find_if(outs.begin(), outs.end(),
                               [&](const store::output_row& o) { return o.index == m.index; });
        if (it == outs.end() || it->status != to_string(output_status::pending))
            return res;
        auto d = parse_object(it->data_json);
        auto mit = d.find(mirror_key);
        if (mit == d.end() || !mit->value().is_object())
            return res;
        json::object audio;
        if (auto a = mit->value().as_object().if_contains("audio"); a && a->is_object())
            audio = a->as_object();
        d.erase(mirror_key);
        res.mirrored = true;
        output_status status = output_status::ready;
        if (m.ok) {
            for (const auto& f : m.files) {
                auto row = f.row;
                row.tenant = t->tenant;
                row.task_id = t->id;
                row.created_at = now;
                tx.insert_file(row);
                put_file(audio, f.format, f, file_url(f.row.id));
            }
            if (!m.verification_json.empty())
                d["verification"] = parse_object(m.verification_json);
        } else {
            for (const char* fmt : {"mp3", "wav"})
                if (auto u = audio.if_contains(std::string(fmt) + "_url")) {
                    // A copy first: inserting may rehash the object and move what `u` points at.
                    json::value url = *u;
                    audio[std::string(fmt) + "_provider_url"] = std::move(url);
                }
            // Ready with the provider's link is for a link that may still work; one its host
            // says has no file (404, 410) is a song the tenant cannot get: failed, its credits
            // refunded, whatever fail_output says (found by a black-box run: charged in full
            // for two outputs whose links answered 404).
            if (ms.fail_output || m.gone) {
                status = output_status::failed;
                d["error"] = "the output could not be copied from the provider: " + m.error +
                             (m.gone ? " (the provider no longer has it)" : "");
            } else {
                d["mirror_failed"] = true;
                d["mirror_error"] = m.error;
            }
        }
        if (status == output_status::ready)
            d["audio"] = std::move(audio);
        it->status = std::string(to_string(status));
        it->data_json = util::json_text(d);
        it->updated_at = now;
        tx.upsert_output(*it);
        if (status == output_status::ready)
            capture_output(tx, *t, m.index, t->provider, res);
        json::object e;
        e["index"] = m.index;
        e["output"] = public_output(d);
        engine::append_event(
            tx, *t,
            status == output_status::ready ? event_type::output_ready : event_type::output_failed,
            std::move(e));
    }
    settle_if_done(tx, *t, outs, now, res);
    return res;
}

void transition::settle_if_done(store::transaction& tx, store::task_row& t,
                                std::vector<store::output_row>& outs, store::millis now,
                                result& res) const {
    bool settle = false;
    for (const auto& o : outs) {
        auto d = parse_object(o.data_json);
        if (o.status == to_string(output_status::pending) || pending_mirror(d))
            return;  // more to come: a mirror, or the provider's own result
        settle = settle || d.contains(settle_key);
    }
    const auto* prov = env_.caps_of(t.provider);
    if (!settle && prov && prov->separate_artifacts) {
        // Lyrics and cover come on their own; their webhooks (or the poll) finish the task.
        for (const auto& o : outs) {
            if (o.status != to_string(output_status::ready))
                continue;
            auto d = parse_object(o.data_json);
            if (!d.contains("lyrics_timestamped") || !d.contains("cover_url")) {
                t.updated_at = now;
                tx.update_task(t);
                return;
            }
        }
    }
    for (auto& o : outs) {
        auto d = parse_object(o.data_json);
        if (d.erase(settle_key) > 0) {  // done with: the task ends now
            o.data_json = util::json_text(d);
            o.updated_at = now;
            tx.upsert_output(o);
        }
    }
    auto attempts = tx.get_attempts(t.id);
    store::attempt_row* attempt = nullptr;
    if (!attempts.empty() && attempts.back().finished_at == 0) {
        attempt = &attempts.back();
        attempt->status = "succeeded";
        attempt->finished_at = now;
    }
    finalize(tx, t, outs, attempt, std::nullopt, res);
    if (attempt)
        tx.upsert_attempt(*attempt);
    res.final_status = t.status;
    res.created_at = t.created_at;
    res.provider = t.provider.empty() ? "none" : t.provider;
}

}  // namespace segue::core
