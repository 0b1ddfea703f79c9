#pragma once
// The durable store: one interface, two engines behind it: SQLite (gateway/store/sqlite_*.cpp,
// the embedded default: one process, one writer) and PostgreSQL (gateway/store/pg_*.cpp: several
// writers per process, several processes).
//
// The concurrency contract both engines keep, whoever else writes at the same time:
//  - a unit of work is atomic and isolated from other units where it matters: in a write unit,
//    get_task locks the task until commit (units on one task run one after the other) and
//    ledger_totals locks the tenant's account (a balance check and the hold or failover it
//    allows cannot be overtaken: hold_credits is reserve-or-refuse), and get_idempotency locks
//    the (tenant, key), found or not (a lookup, the task it decides to create and the key's
//    insert cannot be overtaken by another writer of the same key);
//  - append_event hands out each task's next sequence number exactly once, without gaps;
//  - schedule_job(unique) leaves one job per (kind, task), however many schedule it at once;
//  - insert_idempotency is insert-or-keep-the-existing (false: read the existing one);
//  - ledger entries are unique per (tenant, task, output, kind, key);
//  - claims (jobs, deliveries) hand a row to one claimant, fenced (see lease_ref).
// A write unit may be run again from the start when the database aborts it to resolve a
// conflict (PostgreSQL: serialization failure, deadlock, or a lock wait put off to the next
// batch), so a unit must not have effects outside the transaction: it reads and writes rows and
// assigns its results, nothing else.
//
// Work is expressed as a unit of work over a `transaction`. Writes from all callers go to one
// writer thread that runs many units in a single database transaction (group commit): each
// unit runs inside its own SAVEPOINT, so a unit that throws rolls back alone; the commit (and
// its fsync) is shared. A unit's completion runs only after the commit is durable. Reads run on
// a separate reader connection (WAL lets them proceed during writes) and only ever see durable
// commits: a read whose snapshot holds a commit not yet synced waits for that sync (or fails
// with store_error if it fails), so nothing a crash could undo is ever shown. IO threads never
// touch the database: they await `db::write` / `db::read` (gateway/store/db.hpp).
//
// Times are Unix milliseconds (UTC). JSON-valued columns are strings holding JSON text.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace segue::store {

using millis = std::int64_t;

struct task_row {
    std::string id;  // "ext_" + 26 chars: creation time, then 80 random bits (sortable_id)
    std::string tenant;
    std::string status;           // core::task_status as text
    std::string provider;         // provider currently responsible ("" before routing)
    std::string request_json;     // core::extend_request as JSON
    std::string error_json;       // normalized error object, "" if none
    std::string warnings_json;    // array of strings, "" if none
    std::string idempotency_key;  // "" if none
    int num_outputs = 0;
    millis created_at = 0;
    millis updated_at = 0;
    std::int64_t version = 0;  // bumped on every update (optimistic checks, ETag)
};

struct output_row {
    std::string task_id;
    int index = 1;          // 1..num_outputs
    std::string status;     // core::output_status as text
    std::string data_json;  // audio urls, duration, title, lyrics, timestamped lyrics, cover, flags
    millis updated_at = 0;
};

struct attempt_row {
    std::string task_id;
    int number = 1;  // 1, 2, ... per task
    std::string provider;
    std::string provider_task_id;  // "" until accepted
    std::string callback_token;    // per-attempt webhook token ("" if none)
    std::string status;            // "submitting", "accepted", "succeeded", "failed", "canceled"
    std::string error_json;        // normalized error, "" if none
    std::string state_json;        // provider-private state (ids, partial results), "" if none
    millis started_at = 0;
    millis finished_at = 0;  // 0 while open
    // When a callback first proved that the provider has this attempt (0: none yet). A callback
    // carries the attempt's own token, which only this attempt's submit ever sent: whatever its
    // content, the submit arrived. An attempt seen upstream is never submitted again, even if
    // its answer was lost and no callback named the provider's task.
    millis seen_at = 0;
};

struct event_row {
    std::string id;  // "evt_..." globally unique; the webhook-id
    std::string task_id;
    std::string tenant;
    std::int64_t seq = 0;   // 1, 2, ... per task, no gaps
    std::string type;       // core::event_type
    std::string data_json;  // the event's data object
    millis created_at = 0;
};

// The engine's two lanes of jobs: submits (a new task's first call) and all other work
// (polls, reconciles, mirrors, ledger jobs). Each lane is claimed on its own, so that a backlog
// of one never holds up the other (gateway/core/engine.cpp).
enum class job_lane { any, submit, other };
inline constexpr std::string_view submit_job_kind = "submit";

struct job_row {
    std::int64_t id = 0;       // assigned by the store
    std::string kind;          // "submit", "poll", ...
    std::string task_id;       // may be "" for jobs not about a task
    std::string payload_json;  // "" if none
    millis due_at = 0;
    std::string lease_owner;  // "" when not leased
    millis lease_until = 0;
    int attempts = 0;  // times claimed; also the current claim's fencing token
    int failures = 0;  // failed runs since the last good one (a run that threw, a lease that
                       // expired unreleased); bounds poison jobs
    // Read by schedule_job's insert only: when > 0 (with lease_owner), lease_until is the
    // store's own clock (clock_ms()) + lease_for, taken by the insert itself: no clock read
    // (a round trip on PostgreSQL) before it.
    millis lease_for = 0;
    // Jobs are unique per (kind, task_id) when `unique` is set at insert: scheduling the same
    // job again moves its due time instead of adding a second one.
};

struct idempotency_row {
    std::string tenant;
    std::string key;
    std::string request_hash;  // SHA-256 hex of the canonical request
    std::string task_id;
    int response_status = 0;
    std::string response_body;
    millis created_at = 0;
};

struct file_row {
    std::string id;  // "file_..."
    std::string tenant;
    std::string task_id;  // "" for uploads not yet attached
    std::string kind;     // "upload", "output"
    std::string content_type;
    std::string path;  // its key in the blob store (store/blob_store.hpp)
    std::int64_t size = 0;
    std::string sha256;
    millis created_at = 0;
};

// A file that is gone (its lifetime ended, or its task's): kept so GET /v1/files/{id} can say
// 410 "expired" rather than 404, and so the removal of its blob, which happens after the commit
// that deleted the row, is retried until it is done (purged), by any replica, after any crash.
// Tombstones are deleted in turn once purged and older than retention.tombstones.
struct file_tombstone_row {
    std::string id;
    std::string tenant;
    std::string task_id;
    std::string kind;
    std::string path;  // the blob's key
    std::int64_t size = 0;
    millis deleted_at = 0;
    millis purge_at = 0;  // not claimed for removal before this (a claim's lease)
    bool purged = false;  // the blob is removed
};

// What the store holds, for the disk metrics.
struct storage_totals {
    std::int64_t files = 0;
    std::int64_t file_bytes = 0;      // the sum of the files' sizes (the blob store's content)
    std::int64_t database_bytes = 0;  // the database itself (SQLite: its main file's pages)
};

// One event to deliver to one webhook URL (the outbox). Written in the same transaction as the
// event; claimed by a dispatcher under a lease; kept after delivery (history, dead letters).
struct delivery_row {
    std::string id;        // "dlv_..."
    std::string event_id;  // the webhook-id: the same on every attempt
    std::string task_id;
    std::string tenant;
    std::int64_t seq = 0;  // the event's seq: one task's deliveries go out in this order
    std::string url;
    std::string status;  // "pending", "delivered", "dead"
    int attempts = 0;    // attempts made so far
    millis next_at = 0;  // due time of the next attempt (pending only)
    std::string lease_owner;
    millis lease_until = 0;
    int last_status = 0;     // HTTP status of the last attempt, 0 if it got none
    std::string last_error;  // why the last attempt failed, "" after success
    millis event_at = 0;     // when the event happened
    millis created_at = 0;
    millis updated_at = 0;
    millis delivered_at = 0;       // 0 unless delivered
    std::int64_t lease_fence = 0;  // bumped by every claim: the claim's fencing token
    // Filled by claim_deliveries from the event (not columns of the delivery).
    std::string event_type;
    std::string event_data_json;
};

struct delivery_summary {
    std::int64_t pending = 0;
    std::int64_t dead = 0;
    std::optional<millis> oldest_pending_event_at;
};

// One entry of the credit ledger (append-only). Amounts are integer milli-credits (1 credit =
// 1000), never negative: the kind says which way an entry moves credits. An entry is unique per
// (tenant, task_id, output, kind, key), which is what makes a capture or a refund happen at most
// once however often the job that writes it runs.
struct ledger_row {
    std::int64_t id = 0;  // assigned by the store; ascending in write order
    std::string tenant;
    std::string task_id;  // "" for grants and top-ups
    int output = 0;       // 0 = the task as a whole, else the output index (1..num_outputs)
    std::string kind;     // "grant", "topup" (task_id ""); "hold", "capture", "release" (a task)
    std::string key;      // discriminator: "initial" for the config grant, the top-up's
                          // idempotency key or a random id; "" for task entries (a second entry
                          // of the same kind for the same task and output takes another key)
    std::int64_t amount_milli = 0;  // >= 0
    std::string provider;           // "" if none
    std::string note;               // "" if none
    millis created_at = 0;
};

// A tenant's position, in milli-credits.
struct ledger_balance {
    std::int64_t granted = 0;   // grants + top-ups
    std::int64_t captured = 0;  // captures (spent)
    // Per task max(0, holds - captures - releases), summed: what running tasks may still spend.
    std::int64_t held = 0;
    std::int64_t balance = 0;    // granted - captured (negative if captures outran the grants)
    std::int64_t available = 0;  // balance - held: what a new submit may hold
};

// One task's entries summed by kind (all outputs), in milli-credits.
struct task_ledger {
    std::int64_t hold = 0;
    std::int64_t captured = 0;
    std::int64_t released = 0;
    // What is still held: the amount a final release should free (never negative).
    std::int64_t outstanding() const noexcept {
        const std::int64_t left = hold - captured - released;
        return left > 0 ? left : 0;
    }
};

// One claim of a job: the row, who holds it and which claim it is. Every write that depends on
// the lease names all three, so a holder whose lease expired and was claimed again (by another
// replica, or by this one) can no longer write anything: its writes are refused (false).
struct lease_ref {
    std::int64_t id = 0;
    std::string_view owner;
    std::int64_t fence = 0;  // job_row::attempts at the claim
    // Optional: set to true (inside the unit) when complete_job, reschedule_job or fail_job
    // let go of the row with this lease. The claim's heartbeat then knows a row it can no
    // longer renew was released by its own work, not lost (core::lease_state::released).
    std::atomic<bool>* released = nullptr;
};

// For engines: a release's outcome, marked on the lease when it took the row.
inline bool mark_released(const lease_ref& l, bool took) {
    if (took && l.released)
        l.released->store(true);
    return took;
}

// Raised by engines for failures of the database itself (I/O, corruption, busy beyond the
// timeout). Domain "not found" is an empty optional, never an exception.
class store_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
    // The database refused or gave up on the unit for its load (a statement or lock wait past
    // its timeout, no connection slot): it was rolled back, and the same unit later will likely
    // succeed. The API answers such a request 503 with Retry-After, not 500.
    virtual bool busy() const noexcept { return false; }
};

// A unit given up unrun (store::submit_write_by): busy, as it may well succeed later.
class store_gave_up_error : public store_error {
  public:
    using store_error::store_error;
    bool busy() const noexcept override { return true; }
};

struct hold_result {
    bool held = false;      // the hold is in place (written now, or it existed)
    ledger_balance before;  // the tenant's position before it
};

// The operations of one transaction. Calls are synchronous: they run on a store thread.
class transaction {
  public:
    virtual ~transaction() = default;

    // The clock leases are measured by: the database's where processes share one (PostgreSQL),
    // so replicas whose clocks disagree still agree on when a lease expires.
    virtual millis clock_ms();

    // Reserve-or-refuse: writes `hold` (kind "hold") only if the tenant has that much
    // available; the check and the write are atomic (ledger_totals locks the account).
    virtual hold_result hold_credits(const ledger_row& hold);

    // Tasks
    virtual void insert_task(const task_row& t) = 0;
    // Writes every column of `t` where id matches; bumps and returns the new version.
    virtual std::int64_t update_task(const task_row& t) = 0;
    virtual std::optional<task_row> get_task(std::string_view id) = 0;
    // In a write unit: get_task without waiting for its lock. Nothing when the task does not
    // exist or another transaction holds its lock (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite,
    // one writer, has no row locks to wait for). For work that may as well be done later.
    virtual std::optional<task_row> get_task_if_unlocked(std::string_view id) {
        return get_task(id);
    }
    // Newest first; `before_id` pages (tasks created before that task), "" for the first page.
    virtual std::vector<task_row> list_tasks(std::string_view tenant, int limit,
                                             std::string_view before_id) = 0;

    // Outputs
    virtual void upsert_output(const output_row& o) = 0;
    virtual std::vector<output_row> get_outputs(std::string_view task_id) = 0;
    // Removes an output a provider never made, when how many it makes was its choice (see
    // transition::drop_unmade_outputs). Nothing else refers to an output row.
    virtual void delete_output(std::string_view task_id, int index) = 0;

    // Attempts
    virtual void upsert_attempt(const attempt_row& a) = 0;
    virtual std::vector<attempt_row> get_attempts(std::string_view task_id) = 0;
    // The attempt whose callback token equals `token` (exact match), if any.
    virtual std::optional<attempt_row> find_attempt_by_token(std::string_view token) = 0;

    // Events: appends with the next per-task sequence number (assigned here, in the same
    // transaction as the state change that caused it); fills id, seq and created_at if empty.
    virtual event_row append_event(event_row e) = 0;
    // Events with seq > after_seq, ascending, at most `limit`.
    virtual std::vector<event_row> get_events(std::string_view task_id, std::int64_t after_seq,
                                              int limit) = 0;

    // Jobs
    // Inserts a job; with unique=true an existing job of the same (kind, task_id) is updated
    // instead (due_at, payload; lease cleared). Returns the job id.
    virtual std::int64_t schedule_job(const job_row& j, bool unique) = 0;
    // Atomically leases up to `limit` jobs with due_at <= now whose lease is free or expired,
    // except those in `exclude` (the caller's own running jobs: never taken twice by one
    // process): sets lease_owner = owner, lease_until = now + lease_ms, attempts += 1 (the new
    // fence), and failures += 1 when the previous lease expired unreleased. Oldest due first.
    // `lane`: only submit jobs, or only the others (each lane has its own index, so a backlog
    // of one never costs the other's claims a scan).
    virtual std::vector<job_row> claim_jobs(std::string_view owner, millis now, millis lease_ms,
                                            int limit,
                                            const std::vector<std::int64_t>& exclude = {},
                                            job_lane lane = job_lane::any) = 0;
    // Deletes the job if the claim still holds its lease; false otherwise (it was lost).
    virtual bool complete_job(const lease_ref& lease) = 0;
    // Releases the lease and sets a new due time (failures back to 0: the run was good), if
    // the claim still holds it.
    virtual bool reschedule_job(const lease_ref& lease, millis due_at,
                                std::string_view payload_json) = 0;
    // The run failed: releases the lease, failures += 1, due again at `due_at`.
    virtual bool fail_job(const lease_ref& lease, millis due_at) = 0;
    // Heartbeat: extends each (id, fence) lease `owner` still holds to `until`; returns the ids
    // it no longer holds.
    virtual std::vector<std::int64_t> renew_jobs(
        std::string_view owner, const std::vector<std::pair<std::int64_t, std::int64_t>>& leases,
        millis until) = 0;
    virtual void delete_jobs_for_task(std::string_view task_id) = 0;
    // Earliest due_at of any job (leased or not, lease expiry counted), for the engine's sleep.
    virtual std::optional<millis> next_job_due() = 0;

    // Idempotency keys
    // In a write unit: the (tenant, key) stays locked until commit, whether found or not.
    virtual std::optional<idempotency_row> get_idempotency(std::string_view tenant,
                                                           std::string_view key) = 0;
    // False if (tenant, key) already exists (nothing written).
    virtual bool insert_idempotency(const idempotency_row& r) = 0;
    virtual int delete_idempotency_before(millis cutoff) = 0;

    // Files (blob metadata)
    virtual void insert_file(const file_row& f) = 0;
    virtual std::optional<file_row> get_file(std::string_view id) = 0;
    virtual std::optional<file_tombstone_row> get_file_tombstone(std::string_view id) = 0;

    // Retention (gateway/core/reaper.hpp): small batches, each at most `limit` rows, oldest
    // first. Several replicas may run them at once: on PostgreSQL a batch skips rows another
    // transaction holds (SKIP LOCKED), so two batches never take the same row and never wait
    // for each other; SQLite has one writer.
    //
    // Files of `kind` made before `created_before` whose task is final: each row deleted and a
    // tombstone (deleted_at = now, due for purging) written in its place. Returns how many.
    virtual int expire_files(std::string_view kind, millis created_before, millis now,
                             int limit) = 0;
    // Final tasks last updated before `finished_before` with no pending webhook delivery:
    // deleted with their outputs, attempts, events, deliveries and jobs; their files become
    // tombstones. The ledger keeps its entries (the books stay whole). Returns how many tasks.
    virtual int reap_tasks(millis finished_before, millis now, int limit) = 0;
    // Tasks not ended that have no job, untouched since before `untouched_before`, oldest
    // first: nothing will move them (every state a task waits in has a job: its submit, poll,
    // reconcile or mirror), so each is a job lost, e.g. dropped by an older replica that did
    // not know its kind. For the reaper's gauge and log; read only.
    virtual std::vector<std::string> tasks_without_work(millis untouched_before, int limit) = 0;
    // Leases up to `limit` unpurged tombstones due for purging (purge_at <= now) until
    // now + lease_ms: whoever removes their blobs then calls mark_purged; a claimant that dies
    // leaves them to be claimed again.
    virtual std::vector<file_tombstone_row> claim_purges(millis now, millis lease_ms,
                                                         int limit) = 0;
    virtual void mark_purged(const std::vector<std::string>& ids) = 0;
    // Purged tombstones deleted before `cutoff`, except those whose task still exists (they go
    // after it); returns how many were removed.
    virtual int delete_tombstones_before(millis cutoff, int limit) = 0;
    // Idempotency records made before `cutoff`, at most `limit`; returns how many.
    virtual int delete_idempotency_batch(millis cutoff, int limit) = 0;
    // Files and their bytes, and the database's size (a scan of files: call it now and then).
    virtual storage_totals totals() = 0;

    // Webhook deliveries (the outbox)
    virtual void insert_delivery(const delivery_row& d) = 0;
    // Leases up to `limit` due pending deliveries whose lease is free or expired, oldest due
    // first, but only the head of each (task, url) queue: a delivery is claimable only when no
    // pending delivery of the same task and URL has a lower seq, so one task's events reach an
    // endpoint in order while other tasks go on. Fills event_type / event_data_json.
    // `exclude`: the caller's own deliveries in flight (never claimed twice by one process).
    // Bumps lease_fence (the claim's fencing token).
    virtual std::vector<delivery_row> claim_deliveries(
        std::string_view owner, millis now, millis lease_ms, int limit,
        const std::vector<std::string>& exclude = {}) = 0;
    // Writes the outcome of an attempt (status, attempts, next_at, last_status, last_error,
    // delivered_at, updated_at) and frees the lease, if `owner` still holds it with the claim
    // d.lease_fence.
    virtual bool finish_delivery(const delivery_row& d, std::string_view owner) = 0;
    // Heartbeat: extends each (id, fence) lease `owner` still holds to `until`; returns the ids
    // it no longer holds.
    virtual std::vector<std::string> renew_deliveries(
        std::string_view owner, const std::vector<std::pair<std::string, std::int64_t>>& leases,
        millis until) = 0;
    virtual std::optional<delivery_row> get_delivery(std::string_view id) = 0;
    // A tenant's deliveries, newest first; `status` and `task_id` filter when not empty;
    // `before_id` pages like list_tasks.
    virtual std::vector<delivery_row> list_deliveries(std::string_view tenant,
                                                      std::string_view status,
                                                      std::string_view task_id, int limit,
                                                      std::string_view before_id) = 0;
    // Makes a delivery that is not pending (delivered, dead) pending again, due at `now`, with
    // a fresh retry schedule (attempts 0); false when it is pending or gone. Decided by the
    // UPDATE itself, so two redelivers racing on two replicas make one change: the second
    // never clears a lease that a claim took in between.
    virtual bool redeliver(std::string_view id, millis now) = 0;
    // An endpoint answered 410 Gone: every pending delivery of the tenant to `url` becomes dead
    // with `reason`, and new ones are created dead until a redelivery to it (endpoint_gone).
    virtual int kill_deliveries_to(std::string_view tenant, std::string_view url,
                                   std::string_view reason, millis now) = 0;
    virtual void set_endpoint_gone(std::string_view tenant, std::string_view url, bool gone,
                                   millis now) = 0;
    virtual bool endpoint_gone(std::string_view tenant, std::string_view url) = 0;
    // Earliest time a pending delivery becomes claimable (due, lease expiry counted).
    virtual std::optional<millis> next_delivery_due() = 0;
    virtual delivery_summary summarize_deliveries() = 0;

    // Credit ledger (append-only; amounts in milli-credits)
    // Appends `e` (id and, if 0, created_at are assigned). False if an entry with the same
    // (tenant, task_id, output, kind, key) exists: nothing is written, so a capture or release
    // repeated by a job that runs twice counts once. Throws std::invalid_argument for an unknown
    // kind, a negative amount, an empty tenant, a task kind without task_id or a grant/top-up
    // with one.
    virtual bool add_ledger_entry(const ledger_row& e) = 0;
    // The entry with that unique key, if any (e.g. to answer a replayed top-up).
    virtual std::optional<ledger_row> find_ledger_entry(std::string_view tenant,
                                                        std::string_view task_id, int output,
                                                        std::string_view kind,
                                                        std::string_view key) = 0;
    // The tenant's totals: one row, kept up to date by add_ledger_entry (no scan of entries).
    // Zeros for a tenant without entries.
    virtual ledger_balance ledger_totals(std::string_view tenant) = 0;
    virtual task_ledger ledger_for_task(std::string_view task_id) = 0;
    // A tenant's entries, newest first; `before_id` pages (entries with a smaller id), 0 for the
    // first page.
    virtual std::vector<ledger_row> list_ledger(std::string_view tenant, int limit,
                                                std::int64_t before_id) = 0;
    // Writes the tenant's initial grant (kind "grant", key "initial") unless it exists. True if
    // written; false if it existed or `amount_milli` <= 0 (nothing to grant). Idempotent: call it
    // wherever the grant must be in place (reading credits, creating a task).
    virtual bool ensure_grant(std::string_view tenant, std::int64_t amount_milli, millis now);

    // Secrets the gateway makes for itself and every process sharing the store must agree on
    // (the key of signed file URLs when none is configured): stores `value` under `name`
    // unless a value is there already, and returns the stored one. The first writer wins; the
    // value never changes afterwards.
    virtual std::string ensure_secret(std::string_view name, std::string_view value,
                                      millis now) = 0;

    // Lease owners' liveness, so the leases of a replica that died are freed long before they
    // expire (core::lease_worker's liveness beat). PostgreSQL only: SQLite serves one process,
    // and a start frees what the dead one held (see sqlite_store.cpp); there these do nothing.
    // Records that `owner` (a lease_worker's owner) is alive until `until` (the store's clock).
    // False when the owner was not known: its first beat, or it had been taken for dead (and
    // its leases freed) since its last one.
    virtual bool mark_owner_alive(std::string_view owner, millis until);
    struct freed_leases {
        std::vector<std::string> owners;  // owners taken for dead (now forgotten)
        int jobs = 0;                     // their job leases, freed
        int deliveries = 0;               // their webhook delivery leases, freed
    };
    // Forgets every owner alive only until `now` or before, and frees the leases they hold:
    // their rows' lease_until becomes 0 with the owner kept, so the next claim (by any
    // replica) takes them at once and counts the run as failed, as when a lease expires. An
    // owner never marked alive (a process older than this) is left to its leases' expiry.
    virtual freed_leases free_dead_owners(millis now);
};

// What a commit changed, for listeners (store::set_commit_listener).
struct commit_notice {
    bool outbox = false;                   // a webhook delivery became due
    bool jobs = false;                     // a job was scheduled
    std::vector<std::string> event_tasks;  // tasks with new events (sorted, unique)
    bool all = false;                      // anything may have changed (after a lost channel)
    bool remote = false;                   // written by another process
    bool empty() const { return !outbox && !jobs && event_tasks.empty() && !all; }
};

// Adds `from` to `into`; event_tasks sorted and unique afterwards.
void merge_notice(commit_notice& into, commit_notice&& from);

struct store_stats {
    std::uint64_t commits = 0;
    std::uint64_t units = 0;        // units of work committed (>= commits with group commit)
    std::uint64_t checkpoints = 0;  // background WAL checkpoints completed
    std::uint64_t wal_pages = 0;    // the WAL's size in pages after the last commit
    std::uint64_t syncs = 0;        // fdatasyncs of the WAL (<= commits: one covers many)
    std::uint64_t read_waits = 0;   // read units that waited for a sync to see durable data
    std::uint64_t conflicts = 0;    // PostgreSQL: units aborted by a deadlock or serialization
                                    // failure and run again
    std::uint64_t put_off = 0;      // PostgreSQL: units put off to the next batch after waiting
                                    // for a lock (pg_store.cpp)
};

// Which writer a write unit queues for. SQLite has one writer for everything; PostgreSQL runs a
// writer connection per lane, so the API's units (creates, cancels, top-ups) never wait behind
// the many small units of the engine and the dispatcher (claims, intents, transitions,
// deliveries), which outnumber them several to one. Units of the two lanes lock rows in one
// order (a task, then its tenant's account), and a request unit locks at most one existing task,
// so two units of the two lanes do not deadlock each other in practice (the database resolves
// it if ever); two batches whose units cross do not wait for that (postgres_options::writers).
enum class write_lane { requests = 0, work = 1 };

class store {
  public:
    virtual ~store() = default;

    using unit = std::function<void(transaction&)>;
    using completion = std::function<void(std::exception_ptr)>;

    // Queues a write unit. `done` runs on a store thread after the group's commit is durable
    // (nullptr error) or after the unit failed and was rolled back (its exception). Thread-safe.
    // A completion must not block: in particular not wait for a read, which may be waiting for
    // the very thread that runs the completion to make a later commit durable.
    virtual void submit_write(unit fn, completion done, write_lane lane = write_lane::requests) = 0;
    // Queues a read-only unit on the reader side. It sees every write completed before it was
    // submitted, and nothing that is not durable yet (it may wait for a sync to see it).
    virtual void submit_read(unit fn, completion done) = 0;
    // As submit_write, but the unit goes before every unit waiting in its lane (it still waits
    // for the group the lane's writer is running): for a small unit whose delay matters more
    // than its order, such as a lease worker's liveness beat and lease renewals, which must not
    // wait behind a backlog of work for longer than the leases and the liveness timeout last.
    virtual void submit_write_first(unit fn, completion done, write_lane lane) = 0;

    // As submit_write and submit_read, for a unit someone waits for (an API request): if it is
    // still queued at `give_up`, never sent to the database (which is out of reach, or its
    // writer stuck), it fails with a store_error whose busy() is true, and nothing of it took
    // effect. A unit already running is not given up: it ends as it ends (a lost connection's
    // outcome is known only before the COMMIT was sent). PostgreSQL honours it; the embedded
    // store, which has no database to lose, runs the unit as submit_write would.
    using clock = std::chrono::steady_clock;
    virtual void submit_write_by(unit fn, completion done, write_lane lane,
                                 clock::time_point give_up) {
        (void)give_up;
        submit_write(std::move(fn), std::move(done), lane);
    }
    virtual void submit_read_by(unit fn, completion done, clock::time_point give_up) {
        (void)give_up;
        submit_read(std::move(fn), std::move(done));
    }

    // Called after a commit that changed something other components wait for (a delivery
    // became due, a job was scheduled, events were appended), so they can wake at once instead
    // of polling. With PostgreSQL also for commits of other processes (LISTEN/NOTIFY;
    // notice.remote), and with everything set after the notification channel was lost and
    // reconnected (something may have been missed). Runs on a store thread: must not block.
    virtual void set_commit_listener(std::function<void(const commit_notice&)> fn) = 0;

    // Stops accepting work, finishes what is queued, joins threads. Idempotent.
    virtual void close() = 0;
    virtual store_stats stats() const = 0;
    // Why the store cannot reach its database now ("" when it can): set by the last failed
    // attempt to connect, cleared by the next one that succeeds (PostgreSQL; an embedded
    // store is never out of reach). Readiness and the API's fail-fast look at it.
    virtual std::string unreachable() const { return {}; }
};

struct sqlite_options {
    std::string path;  // database file; ":memory:" is not supported (WAL needs a file)
    int busy_timeout_ms = 5000;
    int max_batch = 256;           // units per group commit
    bool synchronous_full = true;  // fsync on every commit (durable before the 202)
    std::uint64_t writer_cache_bytes = 16ull * 1024 * 1024;  // page cache of the writer
    int checkpoint_pages = 1000;  // WAL size (pages) that starts a background checkpoint
    // SQLite is one process's store: the database is locked (flock of `<path>.lock`, which
    // names the holder's pid) while it is open. Held by another process, the open waits up to
    // this (a restart while the old process still drains), then fails naming that process.
    int lock_wait_ms = 0;
    // Tests only: called on the syncer thread before each fdatasync of the WAL (so a test can
    // hold a sync); an exception from it counts as a failed fdatasync.
    std::function<void()> before_sync;
};

// Opens (creating if needed) the database, applies pending schema migrations in order (each in
// its own transaction, recorded in schema_migrations), enables WAL, starts the writer and reader
// threads. Throws store_error on failure.
std::unique_ptr<store> open_sqlite(const sqlite_options& options);

// The current schema version the code expects (number of migrations).
int sqlite_schema_version();

struct postgres_options {
    std::string url;  // libpq connection URL (or key=value string)
    // Connections running write units, each grouping many units into one commit. One is the
    // default and what the gateway uses. Units of one batch hold their locks until the batch
    // commits, so two batches (two lanes' writers, or two replicas) may want each other's rows;
    // only a batch's first unit waits for a lock as long as it takes, later ones give up after
    // a moment and run again in the next batch (pg_store.cpp), so such a cycle breaks at once
    // instead of after PostgreSQL's deadlock_timeout.
    int writers = 1;  // per lane (write_lane)
    int readers = 4;  // connections running read units
    int statement_timeout_ms = 5000;
    int max_batch = 64;          // units per commit on one writer connection
    bool listen = true;          // LISTEN for other processes' commits (set_commit_listener)
    std::string name = "segue";  // application_name, and how own notifications are recognized
    // How long open_postgres keeps trying to reach the database before it throws: a replica
    // that starts while the database restarts (or together with it) waits rather than exit
    // into a crash loop's growing back-off. Only a failure to reach it is waited out.
    int connect_wait_ms = 0;
};

// Connects, applies pending migrations under an advisory lock (safe with several replicas
// starting at once), starts the writer, reader and listener threads. Throws store_error.
std::unique_ptr<store> open_postgres(const postgres_options& options);

// Applies pending migrations and returns the schema version (`segue migrate`).
int migrate_postgres(const std::string& url);
int postgres_schema_version();

}  // namespace segue::store
