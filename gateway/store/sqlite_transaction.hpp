// Internal to the SQLite engine (included only by gateway/store/sqlite_*.cpp): the store's
// operations over one connection, defined by concern in
//   sqlite_tasks.cpp        tasks, outputs, attempts, events
//   sqlite_jobs.cpp         jobs (claims under fenced leases)
//   sqlite_outbox.cpp       webhook deliveries and gone endpoints
//   sqlite_ledger.cpp       credits ledger
//   sqlite_idempotency.cpp  idempotency records and files
//   sqlite_retention.cpp    retention batches and file tombstones

#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/store/sqlite_connection.hpp"
#include "gateway/store/store.hpp"

namespace segue::store::sqlite {

// The operations over one connection. The caller (writer or reader loop) owns the
// BEGIN/SAVEPOINT/COMMIT around them.
class sqlite_transaction final : public transaction {
  public:
    explicit sqlite_transaction(connection& c) : c_(c) {}

    // sqlite_tasks.cpp
    void insert_task(const task_row& t) override;
    std::int64_t update_task(const task_row& t) override;
    std::optional<task_row> get_task(std::string_view id) override;
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

    // sqlite_jobs.cpp
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

    // sqlite_idempotency.cpp
    std::optional<idempotency_row> get_idempotency(std::string_view tenant,
                                                   std::string_view key) override;
    bool insert_idempotency(const idempotency_row& r) override;
    int delete_idempotency_before(millis cutoff) override;
    void insert_file(const file_row& f) override;
    std::optional<file_row> get_file(std::string_view id) override;

    std::string ensure_secret(std::string_view name, std::string_view value, millis now) override;

    // sqlite_retention.cpp
    std::optional<file_tombstone_row> get_file_tombstone(std::string_view id) override;
    int expire_files(std::string_view kind, millis created_before, millis now, int limit) override;
    int reap_tasks(millis finished_before, millis now, int limit) override;
    std::vector<std::string> tasks_without_work(millis untouched_before, int limit) override;
    std::vector<file_tombstone_row> claim_purges(millis now, millis lease_ms, int limit) override;
    void mark_purged(const std::vector<std::string>& ids) override;
    int delete_tombstones_before(millis cutoff, int limit) override;
    int delete_idempotency_batch(millis cutoff, int limit) override;
    storage_totals totals() override;

    // sqlite_outbox.cpp
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

    // sqlite_ledger.cpp
    bool add_ledger_entry(const ledger_row& e) override;
    std::optional<ledger_row> find_ledger_entry(std::string_view tenant, std::string_view task_id,
                                                int output, std::string_view kind,
                                                std::string_view key) override;
    ledger_balance ledger_totals(std::string_view tenant) override;
    task_ledger ledger_for_task(std::string_view task_id) override;
    std::vector<ledger_row> list_ledger(std::string_view tenant, int limit,
                                        std::int64_t before_id) override;

    // Renews each (id, fence) lease `owner` still holds until `until`; returns the ids it no
    // longer holds (expired and claimed again, completed elsewhere, or deleted).
    template <typename Id>
    std::vector<Id> renew(q query, std::string_view owner,
                          const std::vector<std::pair<Id, std::int64_t>>& leases, millis until) {
        std::vector<Id> lost;
        for (const auto& [id, fence] : leases) {
            statement st(c_, query);
            st.bind_all(id, owner, fence, until);
            st.run();
            if (st.changes() == 0)
                lost.push_back(id);
        }
        return lost;
    }

    // What the group's units changed: the store tells the commit listener once it is durable.
    commit_notice notice;

  private:
    connection& c_;
};

}  // namespace segue::store::sqlite
