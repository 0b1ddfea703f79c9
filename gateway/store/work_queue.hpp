// Internal to the store engines (sqlite_store.cpp, pg_store.cpp): the queue of units their
// threads take work from, and running completions safely on those threads.

#pragma once

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <vector>

#include "gateway/store/store.hpp"

namespace segue::store::detail {

// A completion that throws must not kill a store thread (and with it every later unit): logged.
void call_done(const store::completion& done, std::exception_ptr err) noexcept;

// Names the calling thread (ps -L, top -H, perf); at most 15 characters.
void name_thread(const char* name) noexcept;

struct queued_unit {
    store::unit fn;
    store::completion done;
    int tries = 0;  // runs the database aborted (PostgreSQL conflicts), for bounded retries
    // Still queued at this time, the unit is failed unrun (store::submit_write_by).
    store::clock::time_point give_up = store::clock::time_point::max();
};

class work_queue {
  public:
    // Queues the unit, or completes it at once with store_error("store closed") once stopped.
    void submit(store::unit fn, store::completion done,
                store::clock::time_point give_up = store::clock::time_point::max());
    // Queues the unit before every unit waiting (not before those already taken), or completes
    // it as submit does once stopped.
    void submit_first(store::unit fn, store::completion done);
    // Waits for work and moves up to `max` units into `out`; false once stopped and drained.
    bool take(std::vector<queued_unit>& out, std::size_t max);
    // Waits until there is work (true) or the queue is stopped and drained (false), taking
    // nothing.
    bool wait();
    // Fails (with `err`) every queued unit whose give_up time is before `now`; how many.
    std::size_t give_up_expired(store::clock::time_point now, const std::exception_ptr& err);
    // The earliest give_up time among queued units (max when none has one).
    store::clock::time_point next_give_up();
    // Puts units back at the front, in their order (they were submitted before the rest).
    void requeue_front(std::vector<queued_unit>& units);
    void stop();

  private:
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<queued_unit> items_;
    bool stopping_ = false;
};

}  // namespace segue::store::detail
