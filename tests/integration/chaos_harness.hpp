#pragma once
// What the chaos tests share (chaos_test.cpp: one gateway killed and restarted; replicas_test.cpp:
// three replicas on one PostgreSQL behind nginx): the fake providers and the webhook receiver as
// child processes, the gateway config, random fault plans re-armed on a schedule, segue processes
// that can be killed and restarted on their port, a create loop that retries with its
// Idempotency-Key, and the verification of a finished run:
//   1. every task is terminal;
//   2. no task was accepted by two providers (or twice) unless the earlier attempt failed: by
//      the task's attempts, and upstream (the fakes' logs of accepted submits, matched by each
//      task's unique prompt: every generation but the last belongs to a failed attempt);
//   3. every tenant's ledger reconciles exactly (granted - captured = balance, nothing held;
//      per task: the hold at the first provider's price, failover adjustments to the next
//      provider's price, one capture of its share per ready output and only for those, the
//      rest released once);
//   4. every event of every task reached the webhook receiver (verified), what arrived is what
//      the event log says (type, timestamp, data), each task's arrivals in seq order, and an
//      event delivered twice only where the gateway knew its first attempt failed or a stopped
//      gateway cut the delivery short (at-least-once), never two claims delivering one row.

#include <boost/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace segue::test::chaos {

namespace json = boost::json;
using steady = std::chrono::steady_clock;

constexpr double initial_credits = 100000;
constexpr double price_musicgpt = 3;
constexpr double price_musicapi = 2;

struct tenant_info {
    std::string name;
    std::string key;
    std::string secret;
};
extern const std::vector<tenant_info> tenants;

std::string auth(const tenant_info& t);

// One request on a fresh connection; nullopt when the peer is down, resets or times out.
std::optional<http_response> call(std::uint16_t port, const std::string& method,
                                  const std::string& target, const std::string& body = {},
                                  const std::vector<std::string>& headers = {},
                                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
std::optional<json::object> parse_object(const std::string& s);
// GET returning a JSON object, retried a little (a busy gateway may be slow).
std::optional<json::object> get_json(std::uint16_t port, const std::string& target,
                                     const std::vector<std::string>& headers = {});
std::string str(const json::value& v);
std::int64_t milli(const json::value& v);  // credits as milli-credits, -1 if not a number
double seconds_since(steady::time_point t0);
std::int64_t wall_ms();  // the system clock in Unix milliseconds (what the receiver stamps)
std::string node_binary();

// A fake provider (or the receiver) as a child process that writes a port file.
class child {
  public:
    child(const std::string& name, std::vector<std::string> argv);
    std::uint16_t port() const { return port_; }
    std::string log_path() const { return dir_.file("log"); }
    const std::string& name() const { return name_; }
    std::string url(const std::string& path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    bool control(const std::string& body);  // POST /_control; a refusal fails the test
    json::object get(const std::string& path);

  private:
    std::string name_;
    temp_dir dir_;
    child_process proc_;
    std::uint16_t port_ = 0;
};

// Both fakes (MusicGPT, MusicAPI.ai) and the Standard Webhooks receiver, seeded.
struct upstreams {
    explicit upstreams(std::uint64_t seed);
    // Both fakes accept this URL: MusicGPT takes it as is, MusicAPI downloads it.
    std::string audio_url() const { return musicapi.url("/files/clip_seeded.mp3"); }
    child musicgpt;
    child musicapi;
    child receiver;
};

struct gateway_options {
    std::uint16_t port = 0;
    std::string storage_yaml;     // the `storage:` section
    std::string public_base_url;  // "" = the gateway itself
    std::string server_extra;     // more `server:` keys, each "  key: value\n"
};
std::string gateway_config(const gateway_options& o, const upstreams& up);

struct task_rec {
    int index = 0;
    const tenant_info* tenant = nullptr;
    int num_outputs = 1;
    std::string key;  // Idempotency-Key
    std::string prompt;
    std::string provider;     // "" = the route decides
    std::string upload_path;  // a file sent as multipart audio_file instead of audio_url
    std::string id;
    int submit_tries = 0;
    bool replayed = false;
    std::string submit_error;
    // Filled at the end.
    json::object doc;
    std::vector<json::object> events;
};

// Creates `t` through `port`: the same request with the same Idempotency-Key until an answer
// that is not 5xx or 429 (or `give_up` passes); fills id, replayed, submit_tries, submit_error.
void submit_task(std::uint16_t port, task_rec& t, const std::string& audio_url,
                 const std::string& webhook_url, std::mt19937& rng,
                 std::chrono::milliseconds give_up = std::chrono::seconds(40));

// ---- the random fault plan ----
int pick(std::mt19937& rng, int lo, int hi);
bool chance(std::mt19937& rng, double p);
std::string musicgpt_plan(std::mt19937& rng);
std::string musicapi_plan(std::mt19937& rng);
extern const std::string musicgpt_calm;
extern const std::string musicapi_calm;

// `kills` moments (seconds from the start) spread over `window_s` and a little after, at least
// 4 s apart.
std::vector<double> kill_moments(std::mt19937& rng, int kills, double window_s);
// Re-arms random faults at both fakes every `rearm` until `faults_end` (seconds from
// `run_start`), calling `kill(k)` at each of `kill_at`; then turns the faults off.
void run_faults(upstreams& up, std::mt19937& rng, steady::time_point run_start,
                const std::vector<double>& kill_at, double faults_end,
                const std::function<void(std::size_t)>& kill, const std::string& tag,
                std::chrono::milliseconds rearm = std::chrono::milliseconds(2500));

// segue on a fixed port, killed (SIGKILL) or stopped (SIGTERM) and started again on it.
class gateway {
  public:
    explicit gateway(std::string cfg);
    void start();
    void kill();  // SIGKILL
    // SIGTERM, then waits for the exit; its exit code, or nullopt if it did not exit in time.
    std::optional<int> terminate(std::chrono::milliseconds limit);
    bool running() { return proc_ && proc_->proc().running(); }
    // Every instance's log so far, the running one last.
    std::vector<std::string> logs() const;
    // wall_ms() of every SIGKILL and SIGTERM sent.
    const std::vector<std::int64_t>& stop_times() const { return stop_times_; }

  private:
    void stopped();
    std::string cfg_;
    std::unique_ptr<segue_process> proc_;
    std::vector<std::string> logs_;
    std::vector<std::int64_t> stop_times_;
};

// Lines of the logs that mention `needle` (at most `max`).
std::string grep_logs(const std::vector<std::string>& logs, const std::string& needle,
                      std::size_t max = 60);

// Several seeds, several fault plans; SEGUE_CHAOS_SEED replaces them all with one.
std::uint64_t chaos_seed(std::uint64_t planned);

struct verify_input {
    std::uint16_t port = 0;  // where the API is asked
    std::vector<task_rec>* tasks = nullptr;
    upstreams* up = nullptr;
    std::vector<std::string> logs;         // every segue instance's
    std::vector<std::int64_t> stop_times;  // wall_ms() of every SIGKILL and SIGTERM
    steady::time_point run_start;
    std::string tag;  // "[chaos]"
    std::chrono::milliseconds terminal_limit = std::chrono::seconds(45);
    std::chrono::milliseconds delivery_limit = std::chrono::seconds(30);
};

struct verify_report {
    std::map<std::string, int> statuses;
    int retrying = 0;
    int failovers = 0;
    int faults = 0;  // answered with a fault by either fake
    // Events delivered more than once: the gateway retried after a failed attempt, or a
    // SIGKILL cut the delivery before it was recorded.
    std::size_t duplicate_deliveries = 0;
    std::string summary;  // counts for the test's SUMMARY line
};

// Copies the logs, the fakes' and the receiver's logs and `files` (those that exist) into a new
// directory named `name` plus the pid under the temporary directory; returns its path.
std::string keep_evidence(const std::string& name, const std::vector<std::string>& logs,
                          upstreams& up, const std::vector<std::string>& files);

// Checks 1-4 above (failures are reported with gtest); fills each task's doc and events.
verify_report verify_run(verify_input& in);

}  // namespace segue::test::chaos
