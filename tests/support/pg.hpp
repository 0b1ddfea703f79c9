#pragma once
// Test support: the throwaway PostgreSQL of scripts/pg.sh, and a fresh schema per test in it.

#include <string>

namespace segue::test {

// The libpq URL of the test server: $SEGUE_TEST_PG_URL if set, else the server scripts/pg.sh
// starts (once per process; the script itself is safe to run from parallel tests). Fails the
// process (throws) if PostgreSQL cannot be started: a PostgreSQL test never silently skips.
const std::string& pg_server_url();

// A schema of its own in the test server, dropped (with everything in it) with the object:
// url() points libpq's search_path at it, so a store opened on it migrates and works in
// isolation from every other test, in parallel.
class pg_schema {
  public:
    pg_schema();
    ~pg_schema();
    pg_schema(const pg_schema&) = delete;
    pg_schema& operator=(const pg_schema&) = delete;
    const std::string& url() const { return url_; }
    const std::string& name() const { return name_; }

  private:
    std::string name_;
    std::string url_;
};

// The `storage:` section of a test gateway's config whose files live in `dir`: SQLite there, or,
// when $SEGUE_TEST_STORAGE is "postgres" (CTest's pg.* run of the integration tests), a
// schema of the test server kept for `dir` until the test process exits, so a gateway restarted
// on the same dir finds its state again, with its files in that schema too (blobs: postgres;
// blob_dir in `dir` holds the spool and cache). `more` adds lines to the section.
std::string storage_yaml(const std::string& dir, const std::string& more = "");
// The `storage:` section of a gateway on the PostgreSQL database `url` (a pg_schema's), files
// included (blobs: postgres); `blob_dir` is its scratch space (spool, cache), its own.
std::string postgres_storage_yaml(const std::string& url, const std::string& blob_dir);
bool testing_postgres();

// A PostgreSQL server of its own (scripts/pg.sh in a new /tmp/segue-private-<pid>-<n>), for a
// test that stops and starts it (an outage) without touching the shared test server. Started by
// the constructor; destroyed with the object. A test process that died without its destructors
// (a sanitizer's abort, a kill) leaves its servers running: the constructor first destroys those
// of processes no longer alive.
class pg_private_server {
  public:
    pg_private_server();
    ~pg_private_server();
    pg_private_server(const pg_private_server&) = delete;
    pg_private_server& operator=(const pg_private_server&) = delete;
    void start();
    void stop();
    // Stops every process of the server (SIGSTOP to the postmaster and its children): it
    // still accepts connections (the kernel queues them) and takes what is sent, but answers
    // nothing, as a frozen VM or a server stuck on its disk. thaw() (SIGCONT) lets it go on;
    // the destructor thaws first.
    void freeze();
    void thaw();
    const std::string& url() const { return url_; }

  private:
    void signal_all(int sig);
    bool frozen_ = false;
    std::string dir_;
    std::string url_;
};

// Runs one SQL command on `url` (throws std::runtime_error with libpq's message on failure) and
// returns the first column of the first row, "" if none.
std::string pg_exec(const std::string& url, const std::string& sql);

}  // namespace segue::test
