#include "gateway/events/event_hub.hpp"

#include <algorithm>

namespace segue::events {

event_hub::subscription::~subscription() {
    std::lock_guard lk(hub_.m_);
    if (waker_) {
        auto [b, e] = hub_.waiters_.equal_range(task_);
        for (auto i = b; i != e; ++i)
            if (i->second.id == id_) {
                hub_.waiters_.erase(i);
                break;
            }
        return;
    }
    auto it = hub_.channels_.find(task_);
    if (it == hub_.channels_.end())
        return;
    auto& sinks = it->second->sinks;
    auto s =
        std::find_if(sinks.begin(), sinks.end(), [&](const auto& p) { return p.first == id_; });
    if (s == sinks.end())
        return;
    sinks.erase(s);
    --hub_.subscribers_;
    if (sinks.empty())
        hub_.channels_.erase(it);  // a read in flight finds itself orphaned and delivers nothing
}

// Readers are called outside the lock: a reader may complete at once, on this thread.
std::unique_ptr<event_hub::subscription> event_hub::subscribe(std::string task_id,
                                                              std::int64_t after, sink s) {
    std::shared_ptr<channel> read_now;
    std::int64_t behind = 0;
    std::uint64_t id = 0;
    {
        std::lock_guard lk(m_);
        id = next_id_++;
        auto& c = channels_[task_id];
        if (!c) {
            // A new channel starts where its first subscriber stands and reads once: events
            // committed between the subscriber's own read and now woke nobody.
            c = std::make_shared<channel>();
            c->task = task_id;
            c->cursor = after;
            c->reading = true;
            read_now = c;
        } else if (c->cursor > after) {
            behind = c->cursor;  // batches up to there went out before this subscriber joined
        }
        c->sinks.emplace_back(id, std::move(s));
        ++subscribers_;
    }
    if (read_now)
        start_read(read_now);
    return std::unique_ptr<subscription>(new subscription(*this, std::move(task_id), id, behind));
}

std::unique_ptr<event_hub::subscription> event_hub::subscribe(std::string task,
                                                              std::function<void()> wake) {
    std::lock_guard lk(m_);
    const auto id = next_id_++;
    waiters_.emplace(task, waiter{id, std::move(wake)});
    return std::unique_ptr<subscription>(new subscription(*this, std::move(task), id, 0, true));
}

void event_hub::publish(const std::vector<std::string>& task_ids) {
    if (!task_ids.empty())
        wake(&task_ids);
    read_channels(task_ids);
}

// Wakes run under the lock, like sinks (never after their subscription is gone).
void event_hub::wake(const std::vector<std::string>* tasks) {
    std::lock_guard lk(m_);
    if (waiters_.empty())
        return;
    if (!tasks) {
        for (auto& [task, w] : waiters_)
            w.wake();
        return;
    }
    for (const auto& t : *tasks) {
        auto [b, e] = waiters_.equal_range(t);
        for (auto i = b; i != e; ++i)
            i->second.wake();
    }
    auto [b, e] = waiters_.equal_range(std::string(any_task));  // once per commit
    for (auto i = b; i != e; ++i)
        i->second.wake();
}

void event_hub::read_channels(const std::vector<std::string>& task_ids) {
    std::vector<std::shared_ptr<channel>> to_read;
    {
        std::lock_guard lk(m_);
        if (channels_.empty())
            return;
        for (const auto& t : task_ids) {
            auto it = channels_.find(t);
            if (it == channels_.end())
                continue;
            auto& c = it->second;
            if (c->reading) {
                c->again = true;  // read once more when the current read is done
            } else {
                c->reading = true;
                to_read.push_back(c);
            }
        }
    }
    for (const auto& c : to_read)
        start_read(c);
}

void event_hub::publish_all() {
    std::vector<std::string> all;
    {
        std::lock_guard lk(m_);
        for (const auto& [task, c] : channels_)
            all.push_back(task);
    }
    wake(nullptr);
    read_channels(all);
}

void event_hub::start_read(const std::shared_ptr<channel>& c) {
    std::int64_t from = 0;
    {
        std::lock_guard lk(m_);
        from = c->cursor;
        ++reads_;
    }
    if (!reader_) {
        event_batch b;
        b.from = b.to = from;
        b.failed = true;
        finish_read(c, std::move(b));
        return;
    }
    reader_(c->task, from, page_, [this, c, from](event_batch b) {
        b.from = from;
        if (b.frames.empty() || b.failed)
            b.to = from;
        finish_read(c, std::move(b));
    });
}

// Sinks run under the lock: a subscription being destroyed waits for them, so a sink never runs
// after its subscription is gone (they only post, so the lock is held briefly).
void event_hub::finish_read(const std::shared_ptr<channel>& c, event_batch b) {
    bool read_again = false;
    {
        std::lock_guard lk(m_);
        c->reading = false;
        auto it = channels_.find(c->task);
        if (it == channels_.end() || it->second != c)
            return;  // every subscriber left during the read
        if (!b.failed)
            c->cursor = std::max(c->cursor, b.to);
        const bool more = b.more && !b.failed;
        if (!b.frames.empty() || b.final || !b.found || b.failed) {
            auto shared = std::make_shared<const event_batch>(std::move(b));
            for (auto& [id, s] : c->sinks)
                s(shared);
        }
        if (c->again || more) {
            c->again = false;
            c->reading = true;
            read_again = true;
        }
    }
    if (read_again)
        start_read(c);
}

std::size_t event_hub::subscribers() const {
    std::lock_guard lk(m_);
    return subscribers_;
}

std::size_t event_hub::waiters() const {
    std::lock_guard lk(m_);
    return waiters_.size();
}

std::size_t event_hub::channels() const {
    std::lock_guard lk(m_);
    return channels_.size();
}

std::uint64_t event_hub::reads() const {
    std::lock_guard lk(m_);
    return reads_;
}

}  // namespace segue::events
