#include "gateway/events/event_hub.hpp"

namespace segue::events {

event_hub::subscription::~subscription() {
    std::lock_guard lk(hub_.m_);
    auto [b, e] = hub_.waiters_.equal_range(task_);
    for (auto i = b; i != e; ++i)
        if (i->second.id == id_) {
            hub_.waiters_.erase(i);
            return;
        }
}

std::unique_ptr<event_hub::subscription> event_hub::subscribe(std::string task_id,
                                                              std::function<void()> wake) {
    std::lock_guard lk(m_);
    const auto id = next_id_++;
    waiters_.emplace(task_id, entry{id, std::move(wake)});
    return std::unique_ptr<subscription>(new subscription(*this, std::move(task_id), id));
}

// Wakes run under the lock: a subscription being destroyed waits for them, so a wake never
// runs after its subscription is gone (they only post, so the lock is held briefly).
void event_hub::publish(const std::vector<std::string>& task_ids) {
    std::lock_guard lk(m_);
    if (waiters_.empty())
        return;
    for (const auto& t : task_ids) {
        auto [b, e] = waiters_.equal_range(t);
        for (auto i = b; i != e; ++i)
            i->second.wake();
    }
    if (task_ids.empty())
        return;
    auto [b, e] = waiters_.equal_range(std::string(any_task));
    for (auto i = b; i != e; ++i)
        i->second.wake();
}

void event_hub::publish_all() {
    std::lock_guard lk(m_);
    for (auto& [task, w] : waiters_)
        w.wake();
}

std::size_t event_hub::waiters() const {
    std::lock_guard lk(m_);
    return waiters_.size();
}

}  // namespace segue::events
