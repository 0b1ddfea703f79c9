#pragma once
// Mirroring provider outputs into the blob store, as durable work.
//
// When a provider reports an output by URL (MusicGPT's and MusicAPI's file links, which expire
// and name the provider), the transition keeps the output pending and schedules a `mirror` job
// (one per output's audio, one per cover; core/mirror_transition.cpp). The engine's lease worker
// claims it like any job, so a crash or a lost lease never loses a mirror: the job runs again
// and its outcome is applied once (the output must still be waiting for it). A run:
//  - downloads each file through the URL guard's client (redirects re-checked hop by hop),
//    streamed to a scratch file under blob_dir/work/<task>, SHA-256 computed as the bytes go
//    by, capped at outputs.mirror.max_bytes, each download bounded by outputs.mirror.timeout
//    and by the mirror's deadline (outputs.mirror.deadline after the report);
//  - decodes the audio (audio/verify.hpp) and reports what it holds;
//  - puts the files into the blob store, then in one fenced write unit completes the job and
//    applies the outcome (transition::mirror_done): the output is ready with /v1/files URLs,
//    each file's provider_url, sha256 and size, and its `verification`.
// A failed download is retried with capped exponential backoff and jitter until the deadline or
// the task's (retry.deadline after its creation), whichever is earlier; refusals that cannot
// pass (the URL guard, a file over the cap) are not retried. After that the output is ready
// with the provider's URLs and `mirror_failed` (or fails, with outputs.mirror.fail_output).

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config/settings.hpp"
#include "gateway/core/transition.hpp"
#include "gateway/store/store.hpp"

namespace segue::metrics {
class registry;
}
namespace segue::runtime {
class blocking_pool;
}
namespace segue::store {
class db;
class blob_store;
}  // namespace segue::store
namespace segue::net {
class http_client;
struct url_policy;
}  // namespace segue::net

namespace segue::core {

struct lease_state;

class output_mirror {
  public:
    struct deps {
        store::db& db;
        store::blob_store& blobs;
        runtime::blocking_pool& blocking;
        net::http_client* fetch;  // the guarded client for URLs we did not choose
        std::shared_ptr<const net::url_policy> url_policy;
        const config::settings& settings;
        const transition& trans;
        metrics::registry& metrics;
        std::string owner;  // the engine's lease owner
        std::function<std::string(const std::string& task_id)> work_dir_of;
    };
    explicit output_mirror(deps d);
    ~output_mirror();

    // Runs one claimed `mirror` job. Throws what the store throws; a lost lease writes nothing
    // and returns an empty result.
    boost::asio::awaitable<transition::result> run(store::job_row job, const lease_state& lease);

  private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

// The `verification` object of one output from its decoded files (the WAV first: lossless,
// exact length), as JSON text; request fields give the expectations. Blocking (decodes).
struct verify_request {
    double extend_after = 0;
    std::optional<double> length;
    std::optional<double> reported_duration;
};
struct verify_file {
    std::string format;  // "mp3", "wav"
    std::string path;
};
std::string verify_output(const std::vector<verify_file>& files, const verify_request& req);

}  // namespace segue::core
