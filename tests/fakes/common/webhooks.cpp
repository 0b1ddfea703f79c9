#include "tests/fakes/common/webhooks.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <iostream>

namespace segue::fakes {

namespace json = boost::json;

webhook_sender::entry* webhook_sender::find(std::int64_t seq) {
    for (auto& e : entries_)
        if (e.seq == seq)
            return &e;
    return nullptr;
}

void webhook_sender::schedule(std::vector<outbound_webhook> items, std::int64_t delay_ms,
                              std::int64_t gap_ms, webhook_options options) {
    std::vector<std::int64_t> seqs;
    for (auto& w : items) {
        entry e;
        e.seq = next_seq_++;
        e.scheduled_at_ms = unix_ms();
        if (w.dropped) {
            e.state = "dropped";
        } else {
            seqs.push_back(e.seq);
        }
        e.hook = std::move(w);
        entries_.push_back(std::move(e));
    }
    if (!seqs.empty())
        net::co_spawn(ioc_, run(this, std::move(seqs), delay_ms, gap_ms, options, generation_),
                      net::detached);
}

net::awaitable<void> webhook_sender::run(webhook_sender* self, std::vector<std::int64_t> seqs,
                                         std::int64_t delay_ms, std::int64_t gap_ms,
                                         webhook_options options, std::uint64_t generation) {
    net::steady_timer timer(self->ioc_);
    if (delay_ms > 0) {
        timer.expires_after(std::chrono::milliseconds(delay_ms));
        co_await timer.async_wait(use_tuple);
    }
    bool first = true;
    for (auto seq : seqs) {
        if (!first && gap_ms > 0) {
            timer.expires_after(std::chrono::milliseconds(gap_ms));
            co_await timer.async_wait(use_tuple);
        }
        first = false;
        std::int64_t backoff = options.backoff_ms;
        for (int attempt = 1; attempt <= options.max_attempts; ++attempt) {
            if (self->generation_ != generation)
                co_return;  // reset: the entries are gone
            auto* e = self->find(seq);
            if (!e)
                co_return;
            e->state = "sending";
            e->attempts = attempt;
            client_request rq;
            rq.method = "POST";
            rq.url = e->hook.url;
            rq.body = e->hook.body;
            rq.content_type = e->hook.content_type;
            rq.headers = e->hook.headers;
            rq.timeout = options.timeout;
            const std::string kind = e->hook.kind;
            auto res = co_await http_call(std::move(rq));
            if (self->generation_ != generation)
                co_return;
            e = self->find(seq);
            if (!e)
                co_return;
            e->status = res.ok ? res.status : 0;
            e->error = res.ok ? std::string() : res.error;
            const bool retryable = !res.ok || res.status >= 500 || res.status == 429;
            std::cerr << "fake: webhook #" << seq << " (" << kind << ") attempt " << attempt
                      << " -> " << (res.ok ? std::to_string(res.status) : res.error) << "\n";
            if (res.ok && res.status >= 200 && res.status < 300) {
                e->state = "delivered";
                e->finished_at_ms = unix_ms();
                break;
            }
            if (!retryable || attempt == options.max_attempts) {
                e->state = "failed";
                e->finished_at_ms = unix_ms();
                break;
            }
            e->state = "scheduled";
            timer.expires_after(std::chrono::milliseconds(backoff));
            co_await timer.async_wait(use_tuple);
            backoff *= 2;
        }
    }
}

json::array webhook_sender::log() const {
    json::array out;
    for (const auto& e : entries_) {
        json::object o;
        o["seq"] = e.seq;
        o["kind"] = e.hook.kind;
        o["task_id"] = e.hook.task_id;
        o["output"] = e.hook.output;
        o["url"] = e.hook.url;
        o["body"] = e.hook.body;
        o["duplicate"] = e.hook.duplicate;
        o["malformed"] = e.hook.malformed;
        o["state"] = e.state;
        o["attempts"] = e.attempts;
        o["status"] = e.status;
        o["error"] = e.error;
        o["scheduled_at_ms"] = e.scheduled_at_ms;
        o["finished_at_ms"] = e.finished_at_ms;
        out.push_back(std::move(o));
    }
    return out;
}

void webhook_sender::reset() {
    ++generation_;
    entries_.clear();
}

std::size_t webhook_sender::in_flight() const {
    std::size_t n = 0;
    for (const auto& e : entries_)
        if (e.state == "scheduled" || e.state == "sending")
            ++n;
    return n;
}

}  // namespace segue::fakes
