// The parts of the store interface that are the same for every engine.

#include "gateway/store/store.hpp"

#include <stdexcept>

#include "gateway/log/log.hpp"
#include "gateway/store/row_readers.hpp"
#include "gateway/store/run_sync.hpp"
#include "gateway/store/work_queue.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <future>

namespace segue::store {

namespace detail {

// Refuses entries that would corrupt the totals (the schema's CHECKs catch less, and later).
void check_ledger_entry(const ledger_row& e) {
    const bool task_kind = e.kind == "hold" || e.kind == "capture" || e.kind == "release";
    const bool tenant_kind = e.kind == "grant" || e.kind == "topup";
    if (!task_kind && !tenant_kind)
        throw std::invalid_argument("add_ledger_entry: unknown kind '" + e.kind + "'");
    if (e.amount_milli < 0)
        throw std::invalid_argument("add_ledger_entry: negative amount");
    if (e.tenant.empty())
        throw std::invalid_argument("add_ledger_entry: empty tenant");
    if (task_kind && e.task_id.empty())
        throw std::invalid_argument("add_ledger_entry: a " + e.kind + " needs a task_id");
    if (tenant_kind && (!e.task_id.empty() || e.output != 0))
        throw std::invalid_argument("add_ledger_entry: a " + e.kind + " is not about a task");
    if (e.output < 0)
        throw std::invalid_argument("add_ledger_entry: negative output index");
}

account_change account_delta(const ledger_row& e, std::int64_t after) {
    account_change d;
    if (e.kind == "grant" || e.kind == "topup") {
        d.granted = e.amount_milli;
        return d;
    }
    if (e.kind == "capture")
        d.captured = e.amount_milli;
    const std::int64_t before = e.kind == "hold" ? after - e.amount_milli : after + e.amount_milli;
    d.held = std::max<std::int64_t>(0, after) - std::max<std::int64_t>(0, before);
    return d;
}

void call_done(const store::completion& done, std::exception_ptr err) noexcept {
    if (!done)
        return;
    try {
        done(std::move(err));
    } catch (const std::exception& e) {
        log::error("store completion threw", {{"error", e.what()}});
    } catch (...) {
        log::error("store completion threw", {{"error", "unknown exception"}});
    }
}

void name_thread(const char* name) noexcept {
    ::pthread_setname_np(::pthread_self(), name);
}

void work_queue::submit(store::unit fn, store::completion done, store::clock::time_point give_up) {
    {
        std::lock_guard lk(m_);
        if (!stopping_) {
            items_.push_back(queued_unit{std::move(fn), std::move(done), 0, give_up});
            cv_.notify_one();
            return;
        }
    }
    call_done(done, std::make_exception_ptr(store_error("store closed")));
}

void work_queue::submit_first(store::unit fn, store::completion done) {
    {
        std::lock_guard lk(m_);
        if (!stopping_) {
            items_.push_front(queued_unit{std::move(fn), std::move(done), 0});
            cv_.notify_one();
            return;
        }
    }
    call_done(done, std::make_exception_ptr(store_error("store closed")));
}

bool work_queue::take(std::vector<queued_unit>& out, std::size_t max) {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return !items_.empty() || stopping_; });
    if (items_.empty())
        return false;
    const std::size_t n = std::min(max, items_.size());
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(std::move(items_.front()));
        items_.pop_front();
    }
    return true;
}

bool work_queue::wait() {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return !items_.empty() || stopping_; });
    return !items_.empty();
}

std::size_t work_queue::give_up_expired(store::clock::time_point now,
                                        const std::exception_ptr& err) {
    std::vector<queued_unit> expired;
    {
        std::lock_guard lk(m_);
        for (auto it = items_.begin(); it != items_.end();) {
            if (it->give_up < now) {
                expired.push_back(std::move(*it));
                it = items_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& u : expired)  // outside the lock: a completion may submit more work
        call_done(u.done, err);
    return expired.size();
}

store::clock::time_point work_queue::next_give_up() {
    std::lock_guard lk(m_);
    auto first = store::clock::time_point::max();
    for (const auto& u : items_)
        first = std::min(first, u.give_up);
    return first;
}

void work_queue::requeue_front(std::vector<queued_unit>& units) {
    {
        std::lock_guard lk(m_);
        for (auto it = units.rbegin(); it != units.rend(); ++it)
            items_.push_front(std::move(*it));
    }
    cv_.notify_one();
    units.clear();
}

void work_queue::stop() {
    {
        std::lock_guard lk(m_);
        stopping_ = true;
    }
    cv_.notify_all();
}

}  // namespace detail

millis transaction::clock_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

hold_result transaction::hold_credits(const ledger_row& hold) {
    hold_result out;
    // In a write unit ledger_totals locks the tenant's account (PostgreSQL; SQLite has one
    // writer), so nobody holds between this check and the write below.
    out.before = ledger_totals(hold.tenant);
    if (out.before.available < hold.amount_milli)
        return out;
    add_ledger_entry(hold);  // false: the same hold exists already, which is as good
    out.held = true;
    return out;
}

bool transaction::mark_owner_alive(std::string_view, millis) {
    return true;
}

transaction::freed_leases transaction::free_dead_owners(millis) {
    return {};
}

bool transaction::ensure_grant(std::string_view tenant, std::int64_t amount_milli, millis now) {
    if (amount_milli <= 0)
        return false;
    // Look first: the common case (already granted) then writes nothing at all (not even an
    // id sequence, which an ignored INSERT still advances).
    if (find_ledger_entry(tenant, "", 0, "grant", "initial"))
        return false;
    ledger_row e;
    e.tenant = std::string(tenant);
    e.kind = "grant";
    e.key = "initial";
    e.amount_milli = amount_milli;
    e.note = "initial grant";
    e.created_at = now;
    return add_ledger_entry(e);
}

void merge_notice(commit_notice& into, commit_notice&& from) {
    into.outbox = into.outbox || from.outbox;
    into.jobs = into.jobs || from.jobs;
    into.all = into.all || from.all;
    into.remote = into.remote || from.remote;
    auto& v = into.event_tasks;
    v.insert(v.end(), std::make_move_iterator(from.event_tasks.begin()),
             std::make_move_iterator(from.event_tasks.end()));
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
}

void run_sync(store& s, bool write, store::unit fn) {
    std::promise<void> done;
    auto completion = [&done](std::exception_ptr e) {
        if (e)
            done.set_exception(e);
        else
            done.set_value();
    };
    if (write)
        s.submit_write(std::move(fn), completion);
    else
        s.submit_read(std::move(fn), completion);
    done.get_future().get();
}

}  // namespace segue::store
