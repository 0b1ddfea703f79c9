#include "tests/integration/chaos_harness.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;

namespace segue::test::chaos {

const std::vector<tenant_info> tenants = {
    {"alpha", "sk-chaos-alpha", "whsec_Y2hhb3MtYWxwaGEtc2VjcmV0LTAxMjM0NTY3ODlhYmNk"},
    {"beta", "sk-chaos-beta", "whsec_Y2hhb3MtYmV0YS1zZWNyZXQtMDEyMzQ1Njc4OWFiY2Rl"},
};
namespace {
const std::string musicapi_webhook_secret = "ma-chaos-webhook-secret";
const std::string form_boundary = "segue-chaos-boundary";
// webhooks.lease of every gateway: how long a sent delivery may wait for its record before
// another gateway may claim it again.
constexpr std::int64_t delivery_lease_ms = 3000;
}  // namespace

std::string auth(const tenant_info& t) {
    return "Authorization: Bearer " + t.key;
}

std::optional<http_response> call(std::uint16_t port, const std::string& method,
                                  const std::string& target, const std::string& body,
                                  const std::vector<std::string>& headers,
                                  std::chrono::milliseconds timeout) {
    try {
        http_connection c(port, timeout);
        return c.request(method, target, body, headers);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::optional<json::object> parse_object(const std::string& s) {
    boost::system::error_code ec;
    auto v = json::parse(s, ec);
    if (ec || !v.is_object())
        return std::nullopt;
    return v.as_object();
}

std::optional<json::object> get_json(std::uint16_t port, const std::string& target,
                                     const std::vector<std::string>& headers) {
    for (int i = 0; i < 5; ++i) {
        auto r = call(port, "GET", target, "", headers, 20s);
        if (r && r->status == 200)
            if (auto o = parse_object(r->body))
                return o;
        std::this_thread::sleep_for(200ms);
    }
    return std::nullopt;
}

std::string str(const json::value& v) {
    return v.is_string() ? std::string(v.as_string()) : json::serialize(v);
}

std::int64_t milli(const json::value& v) {
    return v.is_number() ? std::llround(v.to_number<double>() * 1000) : -1;
}

double seconds_since(steady::time_point t0) {
    return std::chrono::duration<double>(steady::now() - t0).count();
}

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string node_binary() {
    auto [rc, out] = run_command({"/bin/sh", "-c", "command -v node"});
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
        out.pop_back();
    return rc == 0 ? out : "";
}

child::child(const std::string& name, std::vector<std::string> argv) : name_(name) {
    const std::string port_file = dir_.file("port");
    argv.push_back("--port-file");
    argv.push_back(port_file);
    proc_.start(argv, dir_.file("log"));
    port_ = wait_port_file(port_file, 15s);
    if (port_ == 0)
        throw std::runtime_error(name + " did not start: " + read_file(dir_.file("log")));
}

bool child::control(const std::string& body) {
    auto r = call(port_, "POST", "/_control", body, {"Content-Type: application/json"});
    if (!r || r->status != 200) {
        ADD_FAILURE() << name_ << " refused control " << body << ": "
                      << (r ? r->body : std::string("no answer"));
        return false;
    }
    return true;
}

json::object child::get(const std::string& path) {
    return get_json(port_, path).value_or(json::object{});
}

namespace {
std::vector<std::string> receiver_argv() {
    std::vector<std::string> argv = {node_binary(),
                                     std::string(SEGUE_SOURCE_DIR) + "/tests/receiver/receiver.js",
                                     "--listen", "127.0.0.1:0"};
    for (const auto& t : tenants) {
        argv.push_back("--secret");
        argv.push_back(t.secret);
    }
    return argv;
}
}  // namespace

upstreams::upstreams(std::uint64_t seed)
    : musicgpt("fake_musicgpt", {SEGUE_FAKE_MUSICGPT_PATH, "--listen", "127.0.0.1:0", "--api-key",
                                 "mg-upstream-key", "--webhook-delay-ms", "150", "--song-seconds",
                                 "4", "--seed", std::to_string(seed)}),
      musicapi("fake_musicapi",
               {SEGUE_FAKE_MUSICAPI_PATH, "--listen", "127.0.0.1:0", "--api-key", "ma-upstream-key",
                "--clip", "clip_seeded:30", "--song-seconds", "4", "--credits", "100000000",
                "--control", R"({"clips":2,"running_after_ms":100,"finish_after_ms":400})"}),
      receiver("receiver", receiver_argv()) {}

std::string gateway_config(const gateway_options& o, const upstreams& up) {
    const std::string self = "http://127.0.0.1:" + std::to_string(o.port);
    std::ostringstream c;
    c << "server:\n  listen: 127.0.0.1:" << o.port << "\n  io_threads: 2\n  drain_timeout: 1s\n"
      << o.server_extra << "log:\n  level: info\n"
      << "tenants:\n";
    for (const auto& t : tenants)
        c << "  - name: " << t.name << "\n    api_keys: [" << t.key << "]\n"
          << "    webhook_secrets: [\"" << t.secret << "\"]\n"
          << "    credits: " << initial_credits << "\n";
    c << o.storage_yaml
      << "api:\n  public_base_url: " << (o.public_base_url.empty() ? self : o.public_base_url)
      << "\n  url_signing_key: chaos-url-signing-key\n"
      << "engine:\n  poll_interval: 100ms\n  lease: 2s\n  batch: 32\n"
      << "upstream:\n  allow_plain_http: true\n  connect_timeout: 1s\n  request_timeout: 5s\n"
      << "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
      << "providers:\n"
      << "  sandbox:\n    delay: 50ms\n"
      << "  musicgpt:\n    enabled: true\n    base_url: http://127.0.0.1:" << up.musicgpt.port()
      << "/api/public\n    api_key: mg-upstream-key\n    submit_timeout: 4s\n"
      << "    poll_timeout: 1s\n    reconcile_after: 1s\n    poll_interval: 300ms\n"
      << "    price: " << price_musicgpt << "\n"
      << "  musicapi:\n    enabled: true\n    base_url: http://127.0.0.1:" << up.musicapi.port()
      << "/api/v1\n    api_key: ma-upstream-key\n    webhook_secret: " << musicapi_webhook_secret
      << "\n    submit_timeout: 4s\n    poll_timeout: 1s\n    poll_initial: 100ms\n"
      << "    poll_max: 300ms\n    poll_jitter: 0\n    price: " << price_musicapi << "\n"
      << "routing:\n  default_route: main\n  routes:\n    main:\n      regenerate: true\n"
      << "      chain:\n        - provider: musicgpt\n          weight: 1\n"
      << "        - provider: musicapi\n          weight: 1\n"
      << "retry:\n  attempt_budget: 6\n  deadline: 2m\n"
      << "  transient: {initial: 50ms, max: 200ms}\n"
      << "  rate_limited: {initial: 50ms, max: 200ms}\n"
      // Faults are frequent on purpose: the breakers may open now and then, never for long.
      << "breakers:\n  consecutive_failures: 50\n  min_requests: 1000\n  open: 1s\n"
      << "  max_open: 2s\n"
      << "webhooks:\n  retry_schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s]\n"
      << "  jitter: 0\n  timeout: 1s\n  lease: " << delivery_lease_ms << "ms\n";
    return c.str();
}

void submit_task(std::uint16_t port, task_rec& t, const std::string& audio_url,
                 const std::string& webhook_url, std::mt19937& rng,
                 std::chrono::milliseconds give_up) {
    std::string text;
    std::string content_type = "Content-Type: application/json";
    if (t.upload_path.empty()) {
        json::object body;
        body["audio_url"] = audio_url;
        body["extend_after"] = 2;
        body["num_outputs"] = t.num_outputs;
        body["prompt"] = t.prompt;
        body["webhook_url"] = webhook_url;
        if (!t.provider.empty())
            body["provider"] = t.provider;
        text = json::serialize(body);
    } else {
        std::vector<form_part> parts = {
            {"audio_file", read_file(t.upload_path), "song.wav", "audio/wav"},
            {"extend_after", "2"},
            {"num_outputs", std::to_string(t.num_outputs)},
            {"prompt", t.prompt},
            {"webhook_url", webhook_url}};
        if (!t.provider.empty())
            parts.push_back({"provider", t.provider});
        text = multipart_body(parts, form_boundary);
        content_type = "Content-Type: multipart/form-data; boundary=" + form_boundary;
    }
    const auto until = steady::now() + give_up;
    while (steady::now() < until) {
        ++t.submit_tries;
        auto r = call(port, "POST", "/v1/extensions", text,
                      {auth(*t.tenant), content_type, "Idempotency-Key: " + t.key}, 5s);
        if (r && r->status == 202) {
            if (auto o = parse_object(r->body); o && o->contains("id"))
                t.id = str(o->at("id"));
            t.replayed = r->header("idempotent-replayed").has_value();
            break;
        }
        if (r && r->status < 500 && r->status != 429) {
            t.submit_error = std::to_string(r->status) + " " + r->body;
            break;
        }
        // No answer (killed, restarting) or 5xx: the same request, the same key.
        std::this_thread::sleep_for(std::chrono::milliseconds(pick(rng, 100, 300)));
    }
    if (t.id.empty() && t.submit_error.empty())
        t.submit_error = "no 202 within " + std::to_string(give_up.count()) + " ms";
}

// ---- the random fault plan ------------------------------------------------------------------
int pick(std::mt19937& rng, int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
}
bool chance(std::mt19937& rng, double p) {
    return std::uniform_real_distribution<double>(0, 1)(rng) < p;
}

namespace {

// A few one-shot rules with random skips per route: "every so many requests" faults that run
// out, re-armed every few seconds.
std::string fault_rules(std::mt19937& rng, const std::vector<std::string>& submit_routes,
                        const std::string& poll_route) {
    json::array rules;
    auto rule = [&](const std::string& route, bool poll) {
        json::object r;
        r["match"] = route;
        r["skip"] = pick(rng, 0, 14);
        r["times"] = pick(rng, 1, 2);
        switch (pick(rng, 0, 5)) {
            case 0:
            case 1:
                // Not 504 on a poll: MusicAPI means "the task failed (refunded)" by it, while
                // the fake's task would go on and finish (an upstream that contradicts itself).
                r["status"] = std::vector<int>{500, 502, 503, 504}[pick(rng, 0, poll ? 2 : 3)];
                break;
            case 2:
                r["status"] = 429;
                r["retry_after"] = pick(rng, 0, 1);
                break;
            case 3:
                r["reset"] = true;
                r["times"] = 1;
                break;
            case 4:
                // A poll beyond its 1 s timeout; a submit step slower than the 2 s job lease
                // but answered within its 4 s timeout (the heartbeat must keep the lease: the
                // step is sent once), or now and then beyond that timeout (ambiguous).
                r["delay_ms"] = poll ? 1500 : (chance(rng, 0.75) ? 2600 : 4300);
                r["times"] = 1;
                break;
            default:
                r["close"] = true;
                r["times"] = 1;
                break;
        }
        rules.emplace_back(std::move(r));
    };
    const int n_submit = pick(rng, 2, 5);
    for (int i = 0; i < n_submit; ++i)
        rule(submit_routes[pick(rng, 0, static_cast<int>(submit_routes.size()) - 1)], false);
    const int n_poll = pick(rng, 1, 4);
    for (int i = 0; i < n_poll; ++i)
        rule(poll_route, true);
    return json::serialize(rules);
}

}  // namespace

std::string musicgpt_plan(std::mt19937& rng) {
    json::object o;
    o["faults"] = json::parse(fault_rules(rng, {"submit"}, "by_id"));
    o["duplicate_webhooks"] = chance(rng, 0.4) ? 1 : 0;
    o["drop_all_webhooks"] = chance(rng, 0.15);
    json::array drop;
    if (chance(rng, 0.2))
        drop.emplace_back(pick(rng, 1, 2));
    o["drop_outputs"] = drop;
    json::array failing;
    if (chance(rng, 0.1))
        failing.emplace_back(2);  // the second output fails: partial success
    o["fail_outputs"] = failing;
    o["task_fails"] = chance(rng, 0.1);  // accepted, then failed upstream: regenerated
    return json::serialize(o);
}

std::string musicapi_plan(std::mt19937& rng) {
    json::object o;
    o["faults"] = json::parse(fault_rules(rng, {"upload", "create"}, "task"));
    o["fail_next"] = chance(rng, 0.5) ? pick(rng, 1, 3) : 0;
    o["webhook_drop"] = chance(rng, 0.2);
    o["webhook_duplicates"] = chance(rng, 0.4) ? 1 : 0;
    return json::serialize(o);
}

const std::string musicgpt_calm =
    R"({"faults":[],"duplicate_webhooks":0,"drop_all_webhooks":false,"drop_outputs":[],)"
    R"("fail_outputs":[],"task_fails":false})";
const std::string musicapi_calm =
    R"({"faults":[],"fail_next":0,"webhook_drop":false,"webhook_duplicates":0})";

std::vector<double> kill_moments(std::mt19937& rng, int kills, double window_s) {
    std::vector<double> at;
    const double slot = (window_s + 4 - 3) / kills;
    for (int k = 0; k < kills; ++k)
        at.push_back(3 + slot * k + std::uniform_real_distribution<double>(0, slot - 4)(rng));
    return at;
}

void run_faults(upstreams& up, std::mt19937& rng, steady::time_point run_start,
                const std::vector<double>& kill_at, double faults_end,
                const std::function<void(std::size_t)>& kill, const std::string& tag,
                std::chrono::milliseconds rearm) {
    double next_arm = 0;
    std::size_t next_kill = 0;
    for (;;) {
        const double now = seconds_since(run_start);
        if (now >= faults_end && next_kill >= kill_at.size())
            break;
        if (now >= next_arm) {
            up.musicgpt.control(musicgpt_plan(rng));
            up.musicapi.control(musicapi_plan(rng));
            next_arm = now + std::chrono::duration<double>(rearm).count();
        }
        if (next_kill < kill_at.size() && now >= kill_at[next_kill]) {
            kill(next_kill);
            ++next_kill;
        }
        std::this_thread::sleep_for(50ms);
    }
    // Calm: let every task finish.
    up.musicgpt.control(musicgpt_calm);
    up.musicapi.control(musicapi_calm);
    std::cout << tag << " t=" << seconds_since(run_start) << "s faults off" << std::endl;
}

// ---- segue, killed and restarted ------------------------------------------------------------
gateway::gateway(std::string cfg) : cfg_(std::move(cfg)) {
    start();
}

void gateway::start() {
    for (int i = 0;; ++i) {
        try {
            proc_ = std::make_unique<segue_process>(cfg_);
            return;
        } catch (const std::exception&) {
            if (i >= 3)
                throw;
            std::this_thread::sleep_for(300ms);
        }
    }
}

void gateway::stopped() {
    logs_.push_back(proc_->log());
    proc_.reset();
}

void gateway::kill() {
    stop_times_.push_back(wall_ms());
    proc_->proc().signal(SIGKILL);
    proc_->proc().wait(5s);
    stopped();
}

std::optional<int> gateway::terminate(std::chrono::milliseconds limit) {
    stop_times_.push_back(wall_ms());
    proc_->proc().signal(SIGTERM);
    auto rc = proc_->proc().wait(limit);
    if (!rc)
        return rc;  // still running: the caller reports it (the object still owns it)
    stopped();
    return rc;
}

std::vector<std::string> gateway::logs() const {
    auto out = logs_;
    if (proc_)
        out.push_back(proc_->log());
    return out;
}

std::string grep_logs(const std::vector<std::string>& logs, const std::string& needle,
                      std::size_t max) {
    std::ostringstream out;
    std::size_t n = 0;
    for (std::size_t i = 0; i < logs.size(); ++i) {
        std::istringstream in(logs[i]);
        std::string line;
        while (std::getline(in, line))
            if (line.find(needle) != std::string::npos && n++ < max)
                out << "    [segue#" << i + 1 << "] " << line << "\n";
    }
    return out.str();
}

std::uint64_t chaos_seed(std::uint64_t planned) {
    if (const char* s = std::getenv("SEGUE_CHAOS_SEED"))
        return std::strtoull(s, nullptr, 10);
    return planned;
}

std::string keep_evidence(const std::string& name, const std::vector<std::string>& logs,
                          upstreams& up, const std::vector<std::string>& files) {
    namespace fs = std::filesystem;
    const auto dir = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    for (std::size_t i = 0; i < logs.size(); ++i)
        std::ofstream(dir / ("segue." + std::to_string(i + 1) + ".log")) << logs[i];
    std::error_code ec;
    for (child* c : {&up.musicgpt, &up.musicapi, &up.receiver})
        fs::copy_file(c->log_path(), dir / (c->name() + ".log"),
                      fs::copy_options::overwrite_existing, ec);
    for (const auto& f : files)
        if (fs::exists(f))
            fs::copy_file(f, dir / fs::path(f).filename(), fs::copy_options::overwrite_existing,
                          ec);
    return dir.string();
}

// ---- the verification -----------------------------------------------------------------------
namespace {

const std::set<std::string> terminal = {"succeeded", "partially_succeeded", "failed", "canceled"};

bool is_terminal(const task_rec& t) {
    return t.doc.contains("status") && terminal.count(str(t.doc.at("status")));
}

// 1. Every task reaches a terminal state (bounded wait).
void check_terminal(verify_input& in) {
    auto& tasks = *in.tasks;
    const auto until = steady::now() + in.terminal_limit;
    for (;;) {
        int open = 0;
        for (auto& t : tasks) {
            if (t.id.empty() || is_terminal(t))
                continue;
            if (auto o = get_json(in.port, "/v1/extensions/" + t.id, {auth(*t.tenant)}))
                t.doc = *o;
            if (!is_terminal(t))
                ++open;
        }
        if (open == 0 || steady::now() >= until)
            break;
        std::this_thread::sleep_for(500ms);
    }
    std::cout << in.tag << " t=" << seconds_since(in.run_start) << "s tasks settled" << std::endl;
    int not_terminal = 0;
    for (const auto& t : tasks) {
        if (t.id.empty() || is_terminal(t))
            continue;
        const std::string st = t.doc.contains("status") ? str(t.doc.at("status")) : "unknown";
        if (++not_terminal <= 5)
            ADD_FAILURE() << "[1: terminal] task " << t.id << " is still " << st << ": "
                          << json::serialize(t.doc) << "\n  log:\n"
                          << grep_logs(in.logs, t.id);
    }
    EXPECT_EQ(not_terminal, 0) << "[1: terminal] tasks not terminal";
}

// The event logs, seq 1..n without gaps.
void read_events(verify_input& in) {
    for (auto& t : *in.tasks) {
        if (t.id.empty())
            continue;
        t.events.clear();
        std::int64_t after = 0;
        for (int page = 0; page < 20; ++page) {
            auto o = get_json(
                in.port,
                "/v1/extensions/" + t.id + "/events?limit=1000&after=" + std::to_string(after),
                {auth(*t.tenant)});
            if (!o) {
                ADD_FAILURE() << "cannot read the events of " << t.id;
                break;
            }
            for (auto& e : o->at("data").as_array())
                t.events.push_back(e.as_object());
            if (!o->at("has_more").as_bool())
                break;
            after = o->at("next_after").as_int64();
        }
        for (std::size_t i = 0; i < t.events.size(); ++i)
            EXPECT_EQ(t.events[i].at("seq").as_int64(), static_cast<std::int64_t>(i + 1))
                << "event log of " << t.id << " has a gap or a double";
    }
}

struct attempt_counts {
    int attempts_total = 0, multi_attempt = 0, multi_provider = 0, retrying = 0, failovers = 0,
        reconciles = 0, retry_same = 0, dangling = 0;
};

// 2. No task accepted by two providers unless the first failed.
attempt_counts check_single_acceptance(verify_input& in, std::map<std::string, int>& statuses) {
    attempt_counts c;
    int double_accept = 0;
    std::map<std::string, int> double_accept_kinds;
    for (const auto& t : *in.tasks) {
        if (t.id.empty() || !t.doc.contains("attempts"))
            continue;
        statuses[str(t.doc.at("status"))]++;
        const auto& atts = t.doc.at("attempts").as_array();
        c.attempts_total += static_cast<int>(atts.size());
        if (atts.size() > 1)
            ++c.multi_attempt;
        std::vector<const json::object*> accepted;
        std::set<std::string> providers_accepting;
        for (const auto& a : atts) {
            const auto& ao = a.as_object();
            // A finished preparation step (MusicAPI's upload) generates nothing: the create
            // that follows it is the attempt that counts.
            if (str(ao.at("status")) == "prepared")
                continue;
            if (!ao.at("provider_task_id").is_null()) {
                accepted.push_back(&ao);
                providers_accepting.insert(str(ao.at("provider")));
            }
            const std::string st = str(ao.at("status"));
            // A terminal task with an attempt still in flight by its own account.
            if (st == "submitting" || st == "accepted" || st == "unknown")
                ++c.dangling;
        }
        if (providers_accepting.size() > 1)
            ++c.multi_provider;
        for (std::size_t i = 0; i + 1 < accepted.size(); ++i) {
            if (str(accepted[i]->at("status")) == "failed")
                continue;
            // What kind of double acceptance, for the report.
            const std::string st = str(accepted[i]->at("status"));
            const std::string kind =
                st == "submitting"
                    ? "its submit was cut short by a crash and the restarted gateway submitted "
                      "again without reconciling it (it did exist upstream: its webhooks came)"
                : !accepted[i]->at("error").is_null()
                    ? "it had failed (see its error), then a late webhook of it was applied and "
                      "flipped it back, while the attempt that replaced it lives on upstream"
                    : "two live attempts";
            ++double_accept_kinds[kind];
            if (++double_accept <= 5)
                ADD_FAILURE() << "[2: single acceptance] task " << t.id << " (" << t.prompt
                              << "): attempt " << accepted[i]->at("number") << " at "
                              << str(accepted[i]->at("provider")) << " was accepted ("
                              << str(accepted[i]->at("provider_task_id")) << ") and is " << st
                              << ", not failed, yet a later attempt was accepted too: " << kind
                              << ".\n  task: " << json::serialize(t.doc) << "\n  events: " <<
                    [&] {
                        std::string s;
                        for (const auto& e : t.events)
                            s += str(e.at("type")) + " ";
                        return s;
                    }() << "\n  log:\n"
                              << grep_logs(in.logs, t.id);
        }
        for (const auto& e : t.events) {
            if (str(e.at("type")) != "extension.retrying")
                continue;
            ++c.retrying;
            const std::string d = str(e.at("data").at("decision"));
            c.failovers += d == "failover";
            c.reconciles += d == "reconcile";
            c.retry_same += d == "retry_same";
        }
    }
    EXPECT_EQ(double_accept, 0) << "[2: single acceptance] tasks accepted twice: " << [&] {
        std::string s;
        for (const auto& [k, v] : double_accept_kinds)
            s += "\n  " + std::to_string(v) + " x " + k;
        return s;
    }();
    return c;
}

// Why one task's ledger entries (in write order) do not add up, "" if they do: the hold at the
// first provider's price, failover adjustments to the next provider's price, a capture of its
// share per ready output (and only those), then the rest released once.
std::string ledger_problems(const task_rec& t, std::vector<const json::object*> rows) {
    std::ostringstream why;
    std::sort(rows.begin(), rows.end(), [](const auto* a, const auto* b) {
        return a->at("id").as_int64() < b->at("id").as_int64();
    });
    const std::int64_t n = t.num_outputs;
    auto price_of = [&](const json::object& e) -> std::int64_t {
        const std::string p = e.contains("provider") ? str(e.at("provider")) : "";
        return std::llround((p == "musicgpt"   ? price_musicgpt
                             : p == "musicapi" ? price_musicapi
                                               : -1000) *
                            1000) *
               n;
    };
    std::map<int, std::string> out_status;
    if (t.doc.contains("outputs"))
        for (const auto& o : t.doc.at("outputs").as_array())
            out_status[static_cast<int>(o.at("index").as_int64())] = str(o.at("status"));
    std::int64_t current = 0, holds = 0, captures = 0, releases = 0;
    int final_releases = 0;
    std::map<int, int> captured_outputs;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& e = *rows[i];
        const std::string kind = str(e.at("kind"));
        const std::string note = e.contains("note") ? str(e.at("note")) : "";
        const bool failover = note.rfind("failover to ", 0) == 0;
        const auto a = milli(e.at("amount"));
        if (i == 0 && (kind != "hold" || a != price_of(e)))
            why << "first entry is not the hold at the first provider's price: "
                << json::serialize(e) << "; ";
        if (final_releases > 0)
            why << "entry after the final release: " << json::serialize(e) << "; ";
        if (kind == "hold") {
            if (i > 0 && !failover)
                why << "a second hold: " << json::serialize(e) << "; ";
            holds += a;
            current += a;
            if (i > 0 && current != price_of(e))
                why << "after failover the hold is " << current << " milli, not " << price_of(e)
                    << "; ";
        } else if (kind == "release") {
            releases += a;
            current -= a;
            if (failover) {
                if (current != price_of(e))
                    why << "after failover the hold is " << current << " milli, not " << price_of(e)
                        << "; ";
            } else {
                ++final_releases;
            }
        } else if (kind == "capture") {
            const int idx = e.contains("output") ? static_cast<int>(e.at("output").as_int64()) : 0;
            captures += a;
            if (++captured_outputs[idx] > 1)
                why << "output " << idx << " captured twice; ";
            if (out_status[idx] != "ready")
                why << "output " << idx << " captured but " << out_status[idx] << "; ";
            const std::int64_t share = current / n + (idx <= current % n ? 1 : 0);
            if (a != share)
                why << "output " << idx << " captured " << a << " milli, not its share " << share
                    << " of " << current << "; ";
            if (current != price_of(e))
                why << "output " << idx << " made by " << str(e.at("provider"))
                    << " was captured from a hold of " << current
                    << " milli priced for another provider; ";
        }
    }
    for (const auto& [idx, st] : out_status)
        if (st == "ready" && !captured_outputs.count(idx))
            why << "output " << idx << " ready but not captured; ";
    if (holds != captures + releases)
        why << "held " << holds << " != captured " << captures << " + released " << releases
            << "; ";
    return why.str();
}

// 3. The ledgers; returns what was captured in all, in milli-credits.
std::int64_t check_ledgers(verify_input& in) {
    std::map<std::string, const task_rec*> by_id;
    for (const auto& t : *in.tasks)
        if (!t.id.empty())
            by_id[t.id] = &t;
    std::int64_t captured_all = 0;
    for (const auto& tenant : tenants) {
        SCOPED_TRACE("[3: ledger] tenant " + tenant.name);
        std::vector<json::object> entries;
        json::object totals;
        std::int64_t before = 0;
        for (int page = 0; page < 50; ++page) {
            auto o = get_json(in.port,
                              "/v1/credits?limit=500" +
                                  (before ? "&before=" + std::to_string(before) : std::string()),
                              {auth(tenant)});
            if (!o) {
                ADD_FAILURE() << "GET /v1/credits failed";
                return captured_all;
            }
            if (page == 0)
                totals = *o;
            for (auto& e : o->at("entries").as_array())
                entries.push_back(e.as_object());
            if (!o->at("has_more").as_bool() || entries.empty())
                break;
            before = entries.back().at("id").as_int64();
        }
        const auto granted = milli(totals.at("granted"));
        const auto captured = milli(totals.at("captured"));
        const auto balance = milli(totals.at("balance"));
        EXPECT_EQ(granted, std::llround(initial_credits * 1000)) << json::serialize(totals);
        EXPECT_EQ(milli(totals.at("held")), 0) << "credits still held: " << json::serialize(totals);
        EXPECT_EQ(balance, granted - captured) << json::serialize(totals);
        EXPECT_EQ(milli(totals.at("available")), balance) << json::serialize(totals);
        captured_all += captured;

        // The entries add up to the totals, and per task as ledger_problems says.
        std::int64_t sum_grant = 0, sum_capture = 0;
        std::map<std::string, std::vector<const json::object*>> by_task;
        std::set<std::int64_t> entry_ids;
        for (const auto& e : entries) {
            EXPECT_TRUE(entry_ids.insert(e.at("id").as_int64()).second) << "entry listed twice";
            const std::string kind = str(e.at("kind"));
            if (kind == "grant" || kind == "topup") {
                sum_grant += milli(e.at("amount"));
                continue;
            }
            if (kind == "capture")
                sum_capture += milli(e.at("amount"));
            by_task[e.contains("task_id") ? str(e.at("task_id")) : ""].push_back(&e);
        }
        EXPECT_EQ(sum_grant, granted);
        EXPECT_EQ(sum_capture, captured);
        int bad_tasks = 0;
        for (const auto& t : *in.tasks) {
            if (t.id.empty() || t.tenant != &tenant)
                continue;
            auto it = by_task.find(t.id);
            const std::string why =
                it == by_task.end() ? "no ledger entries; " : ledger_problems(t, it->second);
            if (!why.empty() && ++bad_tasks <= 5)
                ADD_FAILURE() << "[3: ledger] task " << t.id << ": " << why
                              << "\n  task: " << json::serialize(t.doc) << "\n  log:\n"
                              << grep_logs(in.logs, t.id, 20);
        }
        EXPECT_EQ(bad_tasks, 0) << "[3: ledger] tasks whose entries do not reconcile";
        for (const auto& [task_id, rows] : by_task)
            EXPECT_TRUE(by_id.count(task_id)) << "ledger entries of an unknown task " << task_id;
    }
    return captured_all;
}

struct delivery_counts {
    std::size_t received = 0, duplicates = 0, after_retry = 0, after_kill = 0, after_stall = 0;
};

// The outbox drains (deliveries missed while segue was down come on schedule), none dead.
void wait_deliveries_drained(verify_input& in) {
    const auto until = steady::now() + in.delivery_limit;
    bool drained = false;
    while (!drained && steady::now() < until) {
        drained = true;
        for (const auto& tenant : tenants) {
            auto o = get_json(in.port, "/v1/deliveries?status=pending&limit=1", {auth(tenant)});
            if (!o || !o->at("data").as_array().empty())
                drained = false;
        }
        if (!drained)
            std::this_thread::sleep_for(250ms);
    }
    EXPECT_TRUE(drained) << "[4: deliveries] deliveries still pending after "
                         << std::chrono::duration<double>(in.delivery_limit).count() << " s";
    for (const auto& tenant : tenants) {
        auto o = get_json(in.port, "/v1/deliveries?status=dead&limit=10", {auth(tenant)});
        if (!o) {
            ADD_FAILURE() << "GET /v1/deliveries failed";
            continue;
        }
        EXPECT_TRUE(o->at("data").as_array().empty())
            << "[4: deliveries] dead deliveries: " << json::serialize(o->at("data"));
    }
    std::cout << in.tag << " t=" << seconds_since(in.run_start) << "s deliveries drained"
              << std::endl;
}

// The attempts the gateway made at delivering event `event_id` of `t` (0 if not found).
std::int64_t delivery_attempts(std::uint16_t port, const task_rec& t, const std::string& event_id) {
    auto o = get_json(port, "/v1/deliveries?limit=500&task_id=" + t.id, {auth(*t.tenant)});
    if (o)
        for (const auto& d : o->at("data").as_array())
            if (str(d.at("event_id")) == event_id)
                return d.at("attempts").as_int64();
    ADD_FAILURE() << "no delivery of event " << event_id << " of task " << t.id << " listed";
    return 0;
}

// 4. Every event reached the receiver, as the log says, in order; duplicates explained.
delivery_counts check_deliveries(verify_input& in) {
    delivery_counts out;
    wait_deliveries_drained(in);
    struct event_ref {
        const task_rec* task;
        const json::object* event;
    };
    std::map<std::string, event_ref> event_of;  // event id -> task, event
    for (const auto& t : *in.tasks)
        for (const auto& e : t.events)
            event_of[str(e.at("id"))] = {&t, &e};
    auto rdoc = in.up->receiver.get("/_control/deliveries?path=/hooks/");
    if (!rdoc.contains("deliveries")) {
        ADD_FAILURE() << "the receiver did not answer";
        return out;
    }
    const auto& got = rdoc.at("deliveries").as_array();
    out.received = got.size();
    // What the gateways said of sends whose record came after their lease had ended (a
    // stalled store or process): event id -> that log line. A gateway also says if a claim took
    // a lease it still held, which is never right.
    std::map<std::string, json::object> expired;
    int double_claims = 0;
    for (std::size_t i = 0; i < in.logs.size(); ++i) {
        std::istringstream log(in.logs[i]);
        for (std::string line; std::getline(log, line);) {
            if (line.find("while this one's lease still held") != std::string::npos &&
                ++double_claims <= 5)
                ADD_FAILURE() << "[4: deliveries] a claim took a live lease: [segue#" << i + 1
                              << "] " << line;
            // Its lease expired, or (replicas) its sender was taken for dead and its lease freed.
            if (line.find("delivery lease expired before its outcome was recorded") ==
                    std::string::npos &&
                line.find("delivery claimed by another replica after this one was taken for "
                          "dead") == std::string::npos)
                continue;
            boost::system::error_code ec;
            auto v = json::parse(line, ec);
            if (!ec && v.is_object() && v.as_object().contains("event_id"))
                expired[str(v.at("event_id"))] = v.as_object();
        }
    }
    EXPECT_EQ(double_claims, 0) << "[4: deliveries] deliveries claimed while leased";
    std::int64_t worst_late = 0, worst_wait = 0;
    std::map<std::string, std::int64_t> first_arrival;  // event id -> received_at_ms
    std::map<const task_rec*, std::int64_t> last_seq;
    int unverified = 0, unknown = 0, out_of_order = 0, wrong_path = 0, differing = 0,
        unexplained = 0;
    for (const auto& dv : got) {
        const auto& d = dv.as_object();
        if (!d.at("verified").as_bool() && ++unverified <= 5)
            ADD_FAILURE() << "[4: deliveries] unverified delivery: " << json::serialize(d);
        const std::string eid = d.at("id").is_string() ? str(d.at("id")) : "";
        auto it = event_of.find(eid);
        if (it == event_of.end()) {
            if (++unknown <= 5)
                ADD_FAILURE() << "[4: deliveries] delivery of an unknown event "
                              << json::serialize(d.at("body"));
            continue;
        }
        const auto* t = it->second.task;
        const auto& ev = *it->second.event;
        const auto seq = ev.at("seq").as_int64();
        if (str(d.at("path")) != "/hooks/" + t->tenant->name)
            ++wrong_path;
        // Arrivals of one task's events never go back in seq (an event delivered again comes
        // before the next one: that one waits behind it).
        if (seq < last_seq[t] && ++out_of_order <= 5)
            ADD_FAILURE() << "[4: deliveries] task " << t->id << ": event seq " << seq
                          << " arrived after seq " << last_seq[t];
        last_seq[t] = std::max(last_seq[t], seq);
        const auto at = d.at("received_at_ms").as_int64();
        if (auto [fa, first] = first_arrival.emplace(eid, at); !first) {
            const std::int64_t t1 = fa->second;
            ++out.duplicates;
            // At-least-once has two honest causes: the gateway saw its first attempt fail
            // (a timeout) and tried again, or the gateway that sent it was stopped (SIGKILL, or
            // SIGTERM past its drain) between the receiver's answer and its record of it. That
            // record may come as late as the delivery's lease (on a loaded machine a commit can
            // take a second: a kill 1.05 s after the answer was seen to explain 23 of them);
            // after the lease another gateway may claim it anyway. Anything else is one row
            // delivered by two claims.
            const bool killed = std::any_of(
                in.stop_times.begin(), in.stop_times.end(),
                [&](std::int64_t k) { return k >= t1 - 1000 && k <= t1 + delivery_lease_ms; });
            const bool retried = delivery_attempts(in.port, *t, eid) > 1;
            // Or the gateway that sent it stalled past its lease, by its own account measured
            // on the database's clock (late_ms): at least once, as a kill.
            const auto x = expired.find(eid);
            const bool stalled = !killed && !retried && x != expired.end() &&
                                 x->second.contains("late_ms") &&
                                 x->second.at("late_ms").as_int64() > 0;
            if (stalled) {
                worst_late = std::max(worst_late, x->second.at("late_ms").as_int64());
                if (x->second.contains("record_wait_ms"))
                    worst_wait = std::max(worst_wait, x->second.at("record_wait_ms").as_int64());
            }
            out.after_kill += killed;
            out.after_retry += !killed && retried;
            out.after_stall += stalled;
            if (!killed && !retried && !stalled && ++unexplained <= 5)
                ADD_FAILURE() << "[4: deliveries] event " << eid << " (seq " << seq << ") of task "
                              << t->id << " arrived twice (at " << t1 << " and " << at
                              << " ms), delivered at its first attempt by the gateway's own "
                                 "account, and no gateway was stopped around the first\n"
                              << grep_logs(in.logs, eid, 20);
            continue;
        }
        // What arrived is what the log says.
        json::object data = d.at("data").is_object() ? d.at("data").as_object() : json::object{};
        const bool same_id = data.contains("event_id") && str(data.at("event_id")) == eid;
        const bool same_seq = data.contains("seq") && data.at("seq") == ev.at("seq");
        data.erase("event_id");
        data.erase("seq");
        if ((str(d.at("type")) != str(ev.at("type")) || !same_id || !same_seq ||
             str(d.at("event_timestamp")) != str(ev.at("created_at")) || data != ev.at("data")) &&
            ++differing <= 5)
            ADD_FAILURE() << "[4: deliveries] task " << t->id << " event seq " << seq
                          << ": delivered " << json::serialize(d.at("body"))
                          << "\n  but the log has " << json::serialize(ev);
    }
    EXPECT_EQ(unverified, 0);
    EXPECT_EQ(unknown, 0);
    EXPECT_EQ(out_of_order, 0) << "[4: deliveries] arrivals out of order";
    EXPECT_EQ(wrong_path, 0) << "[4: deliveries] deliveries at another tenant's URL";
    EXPECT_EQ(differing, 0) << "[4: deliveries] deliveries that differ from the event log";
    EXPECT_EQ(unexplained, 0) << "[4: deliveries] events delivered twice with no cause";
    // A stall past a lease is the machine's (a loaded CI host); stalls everywhere are ours.
    EXPECT_LE(out.after_stall * 20, out.received)
        << "[4: deliveries] more than 1 delivery in 20 sent again after its sender stalled";
    if (out.after_stall > 0)
        std::cerr << in.tag << " " << out.after_stall
                  << " deliveries sent again after their sender stalled past its lease "
                     "(worst: recorded "
                  << worst_late << " ms after the lease ended; its record waited " << worst_wait
                  << " ms for the store)\n";
    int missing = 0;
    for (const auto& [eid, ref] : event_of)
        if (!first_arrival.count(eid) && ++missing <= 5)
            ADD_FAILURE() << "[4: deliveries] event " << eid << " (seq "
                          << ref.event->at("seq").as_int64() << ") of task " << ref.task->id
                          << " never reached the receiver\n"
                          << grep_logs(in.logs, eid, 20);
    EXPECT_EQ(missing, 0) << "[4: deliveries] events never delivered";
    return out;
}

struct fault_counts {
    int faults = 0;
    std::map<std::string, int> by_route;
    int webhooks_dropped = 0, webhooks_duplicated = 0;
};

fault_counts count_faults(child& fake) {
    fault_counts c;
    auto doc = fake.get("/_control/requests");
    if (doc.contains("requests"))
        for (const auto& r : doc.at("requests").as_array()) {
            const auto& ro = r.as_object();
            if (!ro.contains("response"))
                continue;
            const auto& resp = ro.at("response").as_object();
            const bool faulted = (resp.contains("note") && !str(resp.at("note")).empty()) ||
                                 (resp.contains("action") && str(resp.at("action")) != "respond");
            if (faulted) {
                ++c.faults;
                c.by_route[str(ro.at("route"))]++;
            }
        }
    auto hooks = fake.get("/_control/webhooks");
    if (hooks.contains("webhooks"))
        for (const auto& w : hooks.at("webhooks").as_array()) {
            c.webhooks_dropped += str(w.at("state")) == "dropped";
            c.webhooks_duplicated += w.at("duplicate").as_bool();
        }
    return c;
}

// 2, upstream: generations per gateway task (by its unique prompt), from the fakes' own task
// lists (a task exists upstream even when the answer to its submit never reached the gateway).
// Returns the generations the gateway never learned of (ambiguous submits).
int check_upstream_generations(verify_input& in) {
    std::map<std::string, int> upstream_tasks;
    for (auto* fake : {&in.up->musicgpt, &in.up->musicapi}) {
        auto doc = fake->get("/_control/tasks");
        if (!doc.contains("tasks")) {
            ADD_FAILURE() << fake->name() << " did not list its tasks";
            continue;
        }
        for (const auto& tv : doc.at("tasks").as_array()) {
            const auto& to = tv.as_object();
            const json::value* prompt = nullptr;
            if (fake == &in.up->musicgpt && to.contains("fields") && to.at("fields").is_object())
                prompt = to.at("fields").as_object().if_contains("prompt");
            else if (fake == &in.up->musicapi && str(to.at("type")) == "extend_music" &&
                     to.at("request").is_object())
                prompt = to.at("request").as_object().if_contains("instruction");
            if (prompt)
                upstream_tasks[str(*prompt)]++;
        }
    }
    int upstream_extra = 0, upstream_double = 0;
    for (const auto& t : *in.tasks) {
        int accepted_by_gateway = 0, failed_attempts = 0;
        if (t.doc.contains("attempts"))
            for (const auto& a : t.doc.at("attempts").as_array()) {
                accepted_by_gateway += !a.at("provider_task_id").is_null();
                failed_attempts += str(a.at("status")) == "failed";
            }
        // Every generation but the last belongs to an attempt that failed.
        if (upstream_tasks[t.prompt] > failed_attempts + 1 && ++upstream_double <= 5)
            ADD_FAILURE() << "[2: single acceptance, upstream] task " << t.id << " (" << t.prompt
                          << ") was generated " << upstream_tasks[t.prompt]
                          << " times upstream but only " << failed_attempts
                          << " of its attempts failed: "
                          << json::serialize(t.doc.contains("attempts") ? t.doc.at("attempts")
                                                                        : json::value())
                          << "\n  log:\n"
                          << grep_logs(in.logs, t.id, 20);
        const int extra = std::max(0, upstream_tasks[t.prompt] - accepted_by_gateway);
        if (extra > 0 && upstream_extra < 5 && t.doc.contains("attempts"))
            std::cout << in.tag << " note: task " << t.id << " has " << extra
                      << " upstream generation(s) the gateway never learned of (ambiguous "
                         "submits); attempts: "
                      << json::serialize(t.doc.at("attempts")) << std::endl;
        upstream_extra += extra;
    }
    EXPECT_EQ(upstream_double, 0)
        << "[2: single acceptance, upstream] tasks generated upstream by an attempt that "
           "never failed and again by a later one";
    return upstream_extra;
}

std::string join(const std::map<std::string, int>& m) {
    std::string s;
    for (const auto& [k, v] : m)
        s += (s.empty() ? "" : ",") + k + "=" + std::to_string(v);
    return s;
}

}  // namespace

verify_report verify_run(verify_input& in) {
    verify_report r;
    auto& tasks = *in.tasks;
    for (const auto& t : tasks)
        EXPECT_FALSE(t.id.empty())
            << "task " << t.index << " was never accepted: " << t.submit_error;
    {
        std::set<std::string> ids;
        for (const auto& t : tasks)
            if (!t.id.empty())
                EXPECT_TRUE(ids.insert(t.id).second) << "two submits made one task " << t.id;
    }
    check_terminal(in);
    read_events(in);
    const auto ac = check_single_acceptance(in, r.statuses);
    const auto captured_all = check_ledgers(in);
    const auto dc = check_deliveries(in);
    const int upstream_extra = check_upstream_generations(in);
    const auto mg = count_faults(in.up->musicgpt);
    const auto ma = count_faults(in.up->musicapi);

    std::size_t events_total = 0;
    int replays = 0, resubmits = 0;
    for (const auto& t : tasks) {
        events_total += t.events.size();
        replays += t.replayed;
        resubmits += std::max(0, t.submit_tries - 1);
    }
    r.retrying = ac.retrying;
    r.failovers = ac.failovers;
    r.faults = mg.faults + ma.faults;
    r.duplicate_deliveries = dc.duplicates;
    std::ostringstream s;
    s << "tasks=" << tasks.size() << " {" << join(r.statuses) << "} attempts=" << ac.attempts_total
      << " multi_attempt_tasks=" << ac.multi_attempt << " retrying=" << ac.retrying
      << " (retry_same=" << ac.retry_same << " failover=" << ac.failovers
      << " reconcile=" << ac.reconciles << ") accepted_at_two_providers=" << ac.multi_provider
      << " dangling_attempts=" << ac.dangling << " upstream_extra_generations=" << upstream_extra
      << " resubmits=" << resubmits << " idempotent_replays=" << replays
      << " events=" << events_total << " receiver_deliveries=" << dc.received
      << " duplicate_deliveries=" << dc.duplicates << " (after_kill=" << dc.after_kill
      << " after_retry=" << dc.after_retry << " after_stall=" << dc.after_stall
      << ") faults: musicgpt=" << mg.faults << " {" << join(mg.by_route)
      << "} musicapi=" << ma.faults << " {" << join(ma.by_route)
      << "} provider_webhooks dropped/duplicated: musicgpt=" << mg.webhooks_dropped << "/"
      << mg.webhooks_duplicated << " musicapi=" << ma.webhooks_dropped << "/"
      << ma.webhooks_duplicated << " captured=" << captured_all / 1000.0;
    r.summary = s.str();
    return r;
}

}  // namespace segue::test::chaos
