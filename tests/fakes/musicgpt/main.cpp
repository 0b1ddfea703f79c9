// fake_musicgpt: a fake MusicGPT API on loopback for integration tests. See musicgpt_fake.hpp
// for what it serves and tests/fakes/common/control.hpp for the /_control API.

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/audio/audio.hpp"
#include "tests/fakes/common/control.hpp"
#include "tests/fakes/musicgpt/musicgpt_fake.hpp"

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace segue::fakes;

namespace {

constexpr const char* usage = R"(usage: fake_musicgpt [options]
  --listen HOST:PORT      address to bind (default 127.0.0.1:0, an ephemeral port)
  --port-file FILE        write the bound port to FILE once listening
  --api-key KEY           the only accepted `Authorization: KEY` (default: any raw key;
                          "Bearer ..." is always refused with 401)
  --base-url URL          prefix of the audio/cover URLs it hands out
                          (default http://<bound address>:<port>)
  --webhook-delay-ms N    submit -> first webhook (default 200); byId completes then too
  --control JSON          start-up settings: a POST /_control body (may include "faults")
  --fault JSON            a start-up fault rule (repeatable), e.g. '{"match":"submit","status":402}'
  --seed N                webhook shuffle seed (default random)
  --song-seconds S        length of the generated output songs (default 6)
)";

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Two distinct real songs (WAV + MP3): what the output URLs serve; then a third,
// digitally silent, for the outputs listed in `silent_outputs`.
std::vector<musicgpt::audio_asset> make_assets(double seconds) {
    char tmpl[] = "/tmp/fake_musicgpt.XXXXXX";
    if (!mkdtemp(tmpl))
        throw std::runtime_error("mkdtemp failed");
    const fs::path dir = tmpl;
    std::vector<musicgpt::audio_asset> out;
    const double lengths[3] = {seconds, seconds + 1.5, seconds};
    const double gains[3] = {1, 1, 0};
    const double bpms[3] = {120, 96, 120};
    for (int i = 0; i < 3; ++i) {
        const auto wav = dir / ("out" + std::to_string(i) + ".wav");
        const auto mp3 = dir / ("out" + std::to_string(i) + ".mp3");
        if (!segue::audio::write_test_song(wav.string(), lengths[i], 22050, 1, bpms[i], "wav",
                                           gains[i]) ||
            !segue::audio::write_test_song(mp3.string(), lengths[i], 22050, 1, bpms[i], "mp3",
                                           gains[i])) {
            fs::remove_all(dir);
            throw std::runtime_error("cannot generate the test songs");
        }
        musicgpt::audio_asset a;
        a.wav = read_all(wav);
        a.mp3 = read_all(mp3);
        a.duration = lengths[i];
        out.push_back(std::move(a));
    }
    fs::remove_all(dir);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string listen = "127.0.0.1:0";
    std::string port_file;
    std::string base_url;
    std::string control;
    std::vector<std::string> fault_args;
    double song_seconds = 6;
    musicgpt::settings s;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc)
                    throw std::invalid_argument(a + " needs a value");
                return argv[++i];
            };
            if (a == "--listen")
                listen = value();
            else if (a == "--port-file")
                port_file = value();
            else if (a == "--api-key")
                s.api_key = value();
            else if (a == "--base-url")
                base_url = value();
            else if (a == "--webhook-delay-ms")
                s.webhook_delay_ms = std::stoll(value());
            else if (a == "--control")
                control = value();
            else if (a == "--fault")
                fault_args.push_back(value());
            else if (a == "--seed")
                s.seed = std::stoull(value());
            else if (a == "--song-seconds")
                song_seconds = std::stod(value());
            else if (a == "--help" || a == "-h") {
                std::cout << usage;
                return 0;
            } else
                throw std::invalid_argument("unknown option " + a);
        }
        if (s.webhook_delay_ms < 0 || song_seconds <= 0 || song_seconds > 600)
            throw std::invalid_argument("--webhook-delay-ms >= 0 and 0 < --song-seconds <= 600");

        std::vector<fault_rule> faults;
        if (!control.empty()) {
            auto v = json::parse(control);
            if (!v.is_object())
                throw std::invalid_argument("--control must be a JSON object");
            auto o = v.as_object();
            if (auto* f = o.if_contains("faults")) {
                fault_table t;
                if (auto err = t.load(*f, false); !err.empty())
                    throw std::invalid_argument("--control faults: " + err);
                for (const auto& r : f->as_array()) {
                    fault_rule rule;
                    parse_fault(r, rule);
                    faults.push_back(rule);
                }
                o.erase("faults");
            }
            if (auto err = musicgpt::apply_settings(o, s); !err.empty())
                throw std::invalid_argument("--control: " + err);
        }
        for (const auto& text : fault_args) {
            fault_rule rule;
            if (auto err = parse_fault(json::parse(text), rule); !err.empty())
                throw std::invalid_argument("--fault: " + err);
            faults.push_back(rule);
        }

        auto assets = make_assets(song_seconds);
        auto silent = assets.back();
        assets.pop_back();
        net::io_context ioc(1);
        // The base URL needs the bound port, known only after listen(); the fake reads it
        // per request, so it is set through the same path as POST /_control.
        musicgpt::fake fake(ioc, s, faults, std::move(assets));
        fake.set_silent_asset(std::move(silent));
        fake_server server(ioc, fake);
        server.listen(listen);
        if (base_url.empty()) {
            std::string host = server.host();
            if (host == "0.0.0.0" || host == "::")
                host = "127.0.0.1";
            if (host.find(':') != std::string::npos)
                host = "[" + host + "]";
            base_url = "http://" + host + ":" + std::to_string(server.port());
        }
        fake.set_base_url(base_url);
        if (!port_file.empty())
            write_port_file(port_file, server.port());
        std::cerr << "fake_musicgpt: listening on " << server.host() << ":" << server.port()
                  << ", files at " << base_url << "/files/\n";

        net::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&ioc](const boost::system::error_code&, int) { ioc.stop(); });
        ioc.run();
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "fake_musicgpt: " << e.what() << "\n" << usage;
        return 2;
    }
}
