#pragma once
// Pushes a task's committed events to whoever follows it (SSE streams), the moment they are
// committed, by this process or, through the store's commit notices (PostgreSQL LISTEN/NOTIFY),
// by any other replica. One channel per followed task: a commit notice wakes that channel only,
// which reads the new events once and hands the same batch (frames formatted once) to each of
// its subscribers. N followers of a task cost one read per commit, not N; idle followers cost
// nothing (no polling).

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace segue::events {

// A task's events after `from`, read in one snapshot.
struct event_batch {
    std::int64_t from = 0;  // the events follow this sequence number
    std::int64_t to = 0;    // the last one's (== from when there are none)
    bool found = true;      // false: the task does not exist (any more)
    bool failed = false;    // the read failed: followers read for themselves
    bool final = false;     // the task is final and these are its last events
    bool more = false;      // the read stopped at its page size: more follow at once
    std::vector<std::pair<std::int64_t, std::string>> frames;  // (seq, text) in seq order
};
using batch_ptr = std::shared_ptr<const event_batch>;

class event_hub {
  public:
    static constexpr std::string_view any_task = "*";  // no task id is "*"

    // Reads `task`'s events after `after` (at most `limit`) and whether the task is final, in one
    // snapshot, off the caller's thread; calls `done` exactly once, on any thread.
    using reader = std::function<void(const std::string& task, std::int64_t after, int limit,
                                      std::function<void(event_batch)> done)>;
    // Receives each batch of the task in order, on a hub or store thread: must not block, only
    // post. Never runs once its subscription is destroyed.
    using sink = std::function<void(batch_ptr)>;

    class subscription {
      public:
        ~subscription();
        subscription(const subscription&) = delete;
        subscription& operator=(const subscription&) = delete;
        // The subscriber may have missed events up to this sequence number (its channel had
        // read past where the subscriber stood): it reads them itself once. 0 when not.
        std::int64_t behind_until() const { return behind_until_; }

      private:
        friend class event_hub;
        subscription(event_hub& hub, std::string task, std::uint64_t id, std::int64_t behind,
                     bool waker = false)
            : hub_(hub), task_(std::move(task)), id_(id), behind_until_(behind), waker_(waker) {}
        event_hub& hub_;
        std::string task_;
        std::uint64_t id_;
        std::int64_t behind_until_;
        bool waker_;
    };

    explicit event_hub(int page = 100) : page_(page) {}
    // Before the first subscribe.
    void set_reader(reader r) { reader_ = std::move(r); }

    // Follows `task_id` from `after` (the last sequence number the subscriber has).
    [[nodiscard]] std::unique_ptr<subscription> subscribe(std::string task_id, std::int64_t after,
                                                          sink s);
    // A wake-up only, no events: `wake` runs, on a store thread, after each commit with events
    // of `task` (any_task: of any task, e.g. the live task list) and after a lost notification
    // channel; the subscriber reads what it needs itself. Must not block, only post; never runs
    // once the subscription is destroyed.
    [[nodiscard]] std::unique_ptr<subscription> subscribe(std::string task,
                                                          std::function<void()> wake);

    // Events of these tasks were committed: their channels read once each.
    void publish(const std::vector<std::string>& task_ids);
    void publish_all();  // after a lost notification channel: every channel reads again

    std::size_t subscribers() const;
    std::size_t waiters() const;  // wake-up subscriptions
    std::size_t channels() const;
    std::uint64_t reads() const;  // reads made by channels so far

  private:
    struct channel {
        std::string task;
        std::int64_t cursor = 0;  // the last sequence number read
        bool reading = false;
        bool again = false;  // a notice came during the read: read once more after it
        std::vector<std::pair<std::uint64_t, sink>> sinks;
    };
    void wake(const std::vector<std::string>* tasks);  // nullptr: every waiter
    void read_channels(const std::vector<std::string>& task_ids);
    void start_read(const std::shared_ptr<channel>& c);  // not under m_
    void finish_read(const std::shared_ptr<channel>& c, event_batch b);

    reader reader_;
    int page_;
    mutable std::mutex m_;
    std::unordered_map<std::string, std::shared_ptr<channel>> channels_;
    std::size_t subscribers_ = 0;
    struct waiter {
        std::uint64_t id;
        std::function<void()> wake;
    };
    std::unordered_multimap<std::string, waiter> waiters_;  // wake-up subscriptions, by task
    std::uint64_t next_id_ = 1;
    std::uint64_t reads_ = 0;
};

}  // namespace segue::events
