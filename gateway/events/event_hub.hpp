#pragma once
// Wakes whoever waits for a task's next events (SSE streams) the moment they are committed, by
// this process or, through the store's commit notices (PostgreSQL LISTEN/NOTIFY), by any other
// replica. Waiters still re-read the store: the hub carries no events, only "look now".

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace segue::events {

class event_hub {
  public:
    static constexpr std::string_view any_task = "*";  // no task id is "*"

    class subscription {
      public:
        ~subscription();
        subscription(const subscription&) = delete;
        subscription& operator=(const subscription&) = delete;

      private:
        friend class event_hub;
        subscription(event_hub& hub, std::string task, std::uint64_t id)
            : hub_(hub), task_(std::move(task)), id_(id) {}
        event_hub& hub_;
        std::string task_;
        std::uint64_t id_;
    };

    // `wake` runs on the publishing thread (a store thread): it must not block, only post.
    // It never runs once the subscription is destroyed. `any_task` as the id: woken by every
    // task's events (a tenant-wide stream, which re-reads and filters by itself).
    [[nodiscard]] std::unique_ptr<subscription> subscribe(std::string task_id,
                                                          std::function<void()> wake);
    void publish(const std::vector<std::string>& task_ids);
    void publish_all();  // after a lost notification channel: everyone looks again
    std::size_t waiters() const;

  private:
    struct entry {
        std::uint64_t id;
        std::function<void()> wake;
    };
    mutable std::mutex m_;
    std::unordered_multimap<std::string, entry> waiters_;
    std::uint64_t next_id_ = 1;
};

}  // namespace segue::events
