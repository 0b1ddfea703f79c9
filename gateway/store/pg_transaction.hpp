// Internal to the PostgreSQL engine (included only by gateway/store/pg_*.cpp): the store's
// operations over one connection, defined by concern side by side with the SQLite engine's
//   pg_tasks.cpp        tasks, outputs, attempts, events
//   pg_jobs.cpp         jobs (claims under fenced leases, SKIP LOCKED)
//   pg_outbox.cpp       webhook deliveries and gone endpoints
//   pg_ledger.cpp       credits ledger
//   pg_idempotency.cpp  idempotency records and files
//   pg_retention.cpp    retention batches and file tombstones

#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/store/pg_connection.hpp"
#include "gateway/store/store.hpp"

namespace segue::store::pg {

millis now_ms();

// The operations over one connection. The caller (a writer or reader thread of pg_store.cpp)
// owns BEGIN/SAVEPOINT/COMMIT around them. In a write unit (`writer`), reads that precede a
// read-modify-write take locks held until commit: row locks (get_task, ledger_totals) and, for
// an idempotency key that may not exist yet, an advisory lock (get_idempotency).
class pg_transaction final : public transaction {
  public:
    pg_transaction(connection& c, bool writer) : c_{*this, c}, writer_(writer) {}

    // Called by the writer before each unit: what the previous unit locked may have been rolled
    // back with it.
    void begin_unit() {
        locked_accounts_.clear();
        task_entries_.clear();
        new_task_.reset();
        new_outputs_.clear();
    }
    // Called by the writer after a unit returned, before its closing sync: sends what the unit
    // left unsent.
    void end_unit() { send_new_task(); }

    millis clock_ms() override;
    hold_result hold_credits(const ledger_row& hold) override;

    // pg_tasks.cpp
    void insert_task(const task_row& t) override;
    std::int64_t update_task(const task_row& t) override;
    std::optional<task_row> get_task(std::string_view id) override;
    std::optional<task_row> get_task_if_unlocked(std::string_view id) override;
    std::vector<task_row> list_tasks(std::string_view tenant, int limit,
                                     std::string_view before_id) override;
    void upsert_output(const output_row& o) override;
    std::vector<output_row> get_outputs(std::string_view task_id) override;
    void delete_output(std::string_view task_id, int index) override;
    void upsert_attempt(const attempt_row& a) override;
    std::vector<attempt_row> get_attempts(std::string_view task_id) override;
    std::optional<attempt_row> find_attempt_by_token(std::string_view token) override;
    event_row append_event(event_row e) override;
    std::vector<event_row> get_events(std::string_view task_id, std::int64_t after_seq,
                                      int limit) override;

    // pg_jobs.cpp
    std::int64_t schedule_job(const job_row& j, bool unique) override;
    std::vector<job_row> claim_jobs(std::string_view owner, millis now, millis lease_ms, int limit,
                                    const std::vector<std::int64_t>& exclude,
                                    job_lane lane) override;
    bool complete_job(const lease_ref& l) override;
    bool reschedule_job(const lease_ref& l, millis due_at, std::string_view payload_json) override;
    bool fail_job(const lease_ref& l, millis due_at) override;
    std::vector<std::int64_t> renew_jobs(
        std::string_view owner, const std::vector<std::pair<std::int64_t, std::int64_t>>& leases,
        millis until) override;
    void delete_jobs_for_task(std::string_view task_id) override;
    std::optional<millis> next_job_due() override;

    // pg_idempotency.cpp
    std::optional<idempotency_row> get_idempotency(std::string_view tenant,
                                                   std::string_view key) override;
    bool insert_idempotency(const idempotency_row& r) override;
    int delete_idempotency_before(millis cutoff) override;
    void insert_file(const file_row& f) override;
    std::optional<file_row> get_file(std::string_view id) override;

    std::string ensure_secret(std::string_view name, std::string_view value, millis now) override;
    bool mark_owner_alive(std::string_view owner, millis until) override;
    freed_leases free_dead_owners(millis now) override;

    // pg_retention.cpp
    std::optional<file_tombstone_row> get_file_tombstone(std::string_view id) override;
    int expire_files(std::string_view kind, millis created_before, millis now, int limit) override;
    int reap_tasks(millis finished_before, millis now, int limit) override;
    std::vector<std::string> tasks_without_work(millis untouched_before, int limit) override;
    std::vector<file_tombstone_row> claim_purges(millis now, millis lease_ms, int limit) override;
    void mark_purged(const std::vector<std::string>& ids) override;
    int delete_tombstones_before(millis cutoff, int limit) override;
    int delete_idempotency_batch(millis cutoff, int limit) override;
    storage_totals totals() override;

    // pg_outbox.cpp
    void insert_delivery(const delivery_row& d) override;
    std::vector<delivery_row> claim_deliveries(std::string_view owner, millis now, millis lease_ms,
                                               int limit,
                                               const std::vector<std::string>& exclude) override;
    bool finish_delivery(const delivery_row& d, std::string_view owner) override;
    std::vector<std::string> renew_deliveries(
        std::string_view owner, const std::vector<std::pair<std::string, std::int64_t>>& leases,
        millis until) override;
    std::optional<delivery_row> get_delivery(std::string_view id) override;
    std::vector<delivery_row> list_deliveries(std::string_view tenant, std::string_view status,
                                              std::string_view task_id, int limit,
                                              std::string_view before_id) override;
    bool redeliver(std::string_view id, millis now) override;
    int kill_deliveries_to(std::string_view tenant, std::string_view url, std::string_view reason,
                           millis now) override;
    void set_endpoint_gone(std::string_view tenant, std::string_view url, bool gone,
                           millis now) override;
    bool endpoint_gone(std::string_view tenant, std::string_view url) override;
    std::optional<millis> next_delivery_due() override;
    delivery_summary summarize_deliveries() override;

    // pg_ledger.cpp
    bool add_ledger_entry(const ledger_row& e) override;
    std::optional<ledger_row> find_ledger_entry(std::string_view tenant, std::string_view task_id,
                                                int output, std::string_view kind,
                                                std::string_view key) override;
    ledger_balance ledger_totals(std::string_view tenant) override;
    task_ledger ledger_for_task(std::string_view task_id) override;
    std::vector<ledger_row> list_ledger(std::string_view tenant, int limit,
                                        std::int64_t before_id) override;

    // What the unit changed that other processes may wait for (sent as NOTIFY with the commit).
    commit_notice notice;

  private:
    template <typename Id>
    std::vector<Id> renew(q query, std::string_view owner,
                          const std::vector<std::pair<Id, std::int64_t>>& leases, millis until) {
        std::vector<Id> lost;
        for (const auto& [id, fence] : leases)
            if (c_.run(query, {id, owner, fence, until}).affected() == 0)
                lost.push_back(id);
        return lost;
    }
    // Locks the tenant's totals row (creating it) and returns it.
    ledger_balance lock_account(std::string_view tenant, millis now);
    // Appends the entry and moves the totals (the account locked first); `wait`: for the
    // answer (whether it was new), else sent without waiting (connection::send).
    bool append_entry(const ledger_row& e, bool wait);

    // A new task (insert_task in a write unit) and its outputs are held back until the unit's
    // next statement: if that is the task's first event, the task is inserted with it in one
    // statement (insert_task_event) instead of an insert and then an update of the task's
    // event counter (append_event), which wrote the whole new row twice. Anything else sends
    // them first, in order (the connection below is reached only through this proxy).
    void send_new_task();
    struct conn_ref {
        pg_transaction& t;
        connection& c;
        result run(q which, std::initializer_list<param> params) {
            t.send_new_task();
            return c.run(which, params);
        }
        void send(q which, std::initializer_list<param> params) {
            t.send_new_task();
            c.send(which, params);
        }
    };
    std::optional<task_row> new_task_;
    std::vector<output_row> new_outputs_;

    conn_ref c_;
    bool writer_;
    // The accounts this unit locked (lock_account), with their totals while this unit has not
    // moved them since (no other writer can: the lock is held until commit).
    std::map<std::string, std::optional<ledger_balance>, std::less<>> locked_accounts_;
    // The ledger entries of the tasks this unit read them of (ledger_for_task), by task id,
    // while this unit has not added to them. Nothing else can meanwhile: a task's entries are
    // written under its tenant's account lock and its task lock (store.hpp), and an insert
    // that a lookup missed meets the entry's unique key and writes nothing.
    std::map<std::string, std::vector<ledger_row>, std::less<>> task_entries_;
};

}  // namespace segue::store::pg
