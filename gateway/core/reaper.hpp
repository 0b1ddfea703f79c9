#pragma once
// Retention: what the settings' lifetimes (retention.*, api.idempotency_retention) let go is
// deleted, a small batch per write unit, so the reaper never holds the store's writer for long
// and submissions queue behind at most one batch. Every replica runs one; on PostgreSQL their
// batches skip each other's rows (store.hpp), so none waits for another and no row is taken
// twice.
//
// A round, every retention.interval:
//   1. outputs, then uploads, made more than their lifetime ago (of final tasks): the file rows
//      become tombstones (GET /v1/files/{id} answers 410 file_expired);
//   2. final tasks whose last change is older than retention.tasks, with no delivery still to
//      make: deleted with their outputs, attempts, events, deliveries, jobs and files;
//   3. idempotency keys older than api.idempotency_retention;
//   4. the blobs of tombstones, removed from the blob store (claimed under a lease, marked
//      purged once gone: a crash in between only means another try);
//   5. purged tombstones older than retention.tombstones.
// Each stage stops at a batch smaller than retention.batch or after max_batches_per_stage.
// Then a check, not a deletion: tasks not ended that have no job and have not changed for
// tasks_without_work_after (store::transaction::tasks_without_work): nothing will ever move
// them, so each is an error in the log and counts in the gauge segue_tasks_without_work.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>

namespace segue::config {
struct settings;
}
namespace segue::store {
class db;
class blob_store;
}  // namespace segue::store
namespace segue::runtime {
class blocking_pool;
}
namespace segue::metrics {
class registry;
}

namespace segue::core {

struct reap_counts {
    int outputs = 0;             // output files expired
    int uploads = 0;             // source files expired
    int tasks = 0;               // tasks deleted (with their files)
    int idempotency_keys = 0;    // keys deleted
    int blobs = 0;               // blobs removed from the blob store
    int tombstones = 0;          // tombstones deleted
    int tasks_without_work = 0;  // tasks found with no job (at most 100)
};

class reaper {
  public:
    static constexpr int max_batches_per_stage = 50;
    // A task not ended and unchanged this long with no job is reported. Every state a task waits
    // in has a job, so any age would do; this one leaves a transaction in flight its time.
    static constexpr std::chrono::milliseconds tasks_without_work_after{5 * 60 * 1000};

    // `db`: its writes are the work lane's (app.cpp), beside the engine's.
    reaper(boost::asio::io_context& ioc, store::db& db, store::blob_store& blobs,
           runtime::blocking_pool& blocking, const config::settings& settings,
           metrics::registry& metrics);
    ~reaper();
    reaper(const reaper&) = delete;
    reaper& operator=(const reaper&) = delete;

    // Runs a round every retention.interval (the first one interval after start).
    void start();
    // No further rounds; one in progress ends after its current step.
    void stop();
    // One round now (tests, and the loop).
    boost::asio::awaitable<reap_counts> run_once();

    struct impl;

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::core
