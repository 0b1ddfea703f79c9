#include "providers/sandbox/sandbox.hpp"

#include <boost/json.hpp>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "gateway/audio/audio.hpp"
#include "gateway/net/http_client.hpp"
#include "gateway/net/url_guard.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::providers::sandbox {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

constexpr std::string_view method_text =
    "sandbox: DSP continuation (beat-aligned crossfaded loop of the song itself), not AI";

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() &&
               (line.back() == '\r' || std::isspace(static_cast<unsigned char>(line.back()))))
            line.pop_back();
        std::size_t i = 0;
        while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i])))
            ++i;
        line.erase(0, i);
        if (!line.empty())
            out.push_back(line);
    }
    return out;
}

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out.push_back(c);
        }
    }
    return out;
}

int stage_of(const std::string& state_json) {
    if (state_json.empty())
        return 0;
    boost::system::error_code ec;
    auto v = json::parse(state_json, ec);
    if (ec || !v.is_object())
        return 0;
    auto* s = v.as_object().if_contains("next_output");
    return s && s->is_int64() ? static_cast<int>(s->as_int64()) : 0;
}

}  // namespace

std::string make_title(const core::extend_request& r, int variant) {
    std::string base;
    const std::string& src = r.prompt ? *r.prompt : (r.lyrics ? *r.lyrics : std::string());
    int words = 0;
    bool in_word = false;
    for (char c : src) {
        if (c == '\n')
            break;
        if (std::isspace(static_cast<unsigned char>(c))) {
            if (in_word && ++words == 5)
                break;
            in_word = false;
            base.push_back(' ');
        } else {
            in_word = true;
            base.push_back(c);
        }
    }
    while (!base.empty() && base.back() == ' ')
        base.pop_back();
    if (base.empty())
        base = "Untitled";
    base[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(base[0])));
    base += " (Extended";
    if (variant > 1)
        base += ", take " + std::to_string(variant);
    base += ")";
    return base;
}

std::vector<core::lyric_line> make_timestamped_lyrics(const core::extend_request& r,
                                                      double length) {
    const std::string& text = r.lyrics_section_to_extend ? *r.lyrics_section_to_extend
                                                         : (r.lyrics ? *r.lyrics : std::string());
    auto lines = lines_of(text);
    std::vector<core::lyric_line> out;
    if (lines.empty() || length <= 0)
        return out;
    // Spread over the new section, evenly: the sandbox does not sing, it only places the words.
    const auto start = static_cast<std::int64_t>(r.extend_after * 1000.0);
    const double step = length * 1000.0 / static_cast<double>(lines.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
        core::lyric_line l;
        l.text = lines[i];
        l.start_ms = start + static_cast<std::int64_t>(step * static_cast<double>(i));
        l.end_ms = start + static_cast<std::int64_t>(step * static_cast<double>(i + 1));
        out.push_back(std::move(l));
    }
    return out;
}

std::string make_cover_svg(const std::string& seed, const std::string& title) {
    const std::string h = util::sha256_hex(seed);
    const std::string c1 = "#" + h.substr(0, 6);
    const std::string c2 = "#" + h.substr(6, 6);
    std::ostringstream svg;
    svg << R"(<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="0 0 512 512">)"
        << R"(<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color=")"
        << c1 << R"("/><stop offset="1" stop-color=")" << c2
        << R"svg("/></linearGradient></defs><rect width="512" height="512" fill="url(#g)"/>)svg"
        << R"(<text x="32" y="470" font-family="sans-serif" font-size="28" fill="#fff">)"
        << xml_escape(title) << "</text></svg>\n";
    return svg.str();
}

namespace {

// Downloads the request's audio_url to `input` (through the guarded client; redirects followed,
// each hop re-checked) unless it is there already. nullopt when the file is in place, else the
// failed update: rejected when the URL is refused (a 4xx, a forbidden address, too large),
// transient otherwise (a refused connection, a timeout, a 5xx, a name that does not resolve).
// With `probe`, the file is also probed, in the same turn on the blocking threads as the last
// step of getting it: those two threads bound the sandbox's submits, and the probe adds no turn
// of its own (bench/README 6r).
boost::asio::awaitable<std::optional<update>> fetch_source(const task_view& task, services& svc,
                                                           const std::string& input,
                                                           audio::probe_result* probe = nullptr) {
    bool have = false;
    co_await svc.blocking.run([&] {
        std::error_code ec;
        fs::create_directories(fs::path(input).parent_path(), ec);
        have = fs::exists(input, ec);
        if (have && probe)
            *probe = audio::probe(input);
    });
    if (have)
        co_return std::nullopt;
    net::request req;
    req.url = task.request.audio_url;
    req.metrics_host = "user_url";  // bounded label set
    auto got =
        svc.url_policy
            ? co_await net::download_following(*svc.fetch, std::move(req), input + ".part",
                                               svc.max_fetch_bytes, svc.url_policy,
                                               net::fetch_max_redirects)
            : co_await svc.fetch->download(std::move(req), input + ".part", svc.max_fetch_bytes);
    if (!got.ok() || got.res.status / 100 != 2) {
        update u;
        u.what = update::kind::failed;
        const bool refused =
            got.error == net::failure::refused_address || got.error == net::failure::bad_url ||
            (got.ok() && got.res.status / 100 == 4) || got.error == net::failure::too_large;
        u.error = refused ? core::error_class::rejected : core::error_class::transient;
        u.error_code = "audio_url_unavailable";
        u.source_failure = true;  // the user's host, not the sandbox: no breaker failure

        u.error_message =
            "audio_url: " + (got.ok() ? "HTTP " + std::to_string(got.res.status)
                                      : std::string(net::to_string(got.error)) +
                                            (got.message.empty() ? "" : " (" + got.message + ")"));
        co_return u;
    }
    co_await svc.blocking.run([&] {
        std::error_code ec;
        fs::rename(input + ".part", input, ec);
        if (probe)
            *probe = audio::probe(input);
    });
    co_return std::nullopt;
}

}  // namespace

sandbox_provider::sandbox_provider(sandbox_settings settings) : settings_(settings) {
    caps_.source_file = true;
    caps_.source_url = true;
    caps_.length = true;
    caps_.max_outputs = 2;
    caps_.polling = true;
}

boost::asio::awaitable<update> sandbox_provider::submit(const task_view& task, services& svc) {
    update u;
    const bool file = task.request.source == core::source_kind::file && !task.input_path.empty();
    const bool url = task.request.source == core::source_kind::url && svc.fetch;
    if (!file && !url) {
        u.what = update::kind::failed;
        u.error = core::error_class::rejected;
        u.error_code = "unsupported_source";
        u.error_message = "the sandbox provider extends uploaded files and audio URLs only";
        co_return u;
    }
    // The source first: a provider that cannot fetch it says so before it takes the task, so a
    // passing failure (a refused connection, a 5xx) is retried like any failed submit.
    if (url) {
        // Checked as an upload is at submit: audio that cannot be decoded, or an extend_after
        // past its end, fails the task at once, saying so (not each output in turn).
        audio::probe_result probe;
        const std::string input = (fs::path(svc.work_dir) / "input").string();
        if (auto failed = co_await fetch_source(task, svc, input, &probe))
            co_return *failed;
        std::string why;
        if (!probe.ok)
            why = "audio_url: " + probe.error;
        else if (task.request.extend_after > probe.duration_seconds) {
            char secs[64];
            std::snprintf(secs, sizeof secs, "(%.3f s) is beyond the end of the song (%.3f s)",
                          task.request.extend_after, probe.duration_seconds);
            why = std::string("extend_after ") + secs;
        }
        if (!why.empty()) {
            u.what = update::kind::failed;
            u.error = core::error_class::rejected;
            u.error_code = "unprocessable_audio";
            u.error_message = std::move(why);
            u.source_failure = true;  // the user's audio, not the sandbox: no breaker failure
            co_return u;
        }
    }
    u.what = update::kind::accepted;
    // Said plainly in the task: the sandbox continues the song's own material.
    if (task.request.prompt)
        u.warnings.push_back("sandbox: prompt is not used (DSP continuation, not AI)");
    if (task.request.gender)
        u.warnings.push_back("sandbox: gender is not used (no vocals are generated)");
    u.provider_task_id = "sbx_" + task.task_id.substr(task.task_id.find('_') + 1);
    u.poll_after_ms = settings_.delay.count();
    u.state_json = R"({"next_output":1})";
    u.method = std::string(method_text);
    co_return u;
}

boost::asio::awaitable<update> sandbox_provider::poll(const task_view& task, services& svc) {
    update u;
    u.provider_task_id = task.provider_task_id;
    const int next = std::max(1, stage_of(task.state_json));
    const int total = std::clamp(task.request.num_outputs, 1, caps_.max_outputs);
    const double length = task.request.length.value_or(settings_.default_length);
    const fs::path dir = svc.work_dir;
    const std::string wav = (dir / ("output-" + std::to_string(next) + ".wav")).string();
    const std::string mp3 = (dir / ("output-" + std::to_string(next) + ".mp3")).string();
    const std::string title = make_title(task.request, next);

    // A URL source was downloaded at submit; a poll on another replica (or after a restart)
    // downloads it again into its own scratch directory.
    std::string input = task.input_path;
    if (task.request.source == core::source_kind::url) {
        input = (dir / "input").string();
        if (auto failed = co_await fetch_source(task, svc, input)) {
            failed->provider_task_id = task.provider_task_id;
            co_return *failed;
        }
    }

    audio::extend_result r;
    bool cover_written = false;
    const std::string cover = (dir / "cover.svg").string();
    co_await svc.blocking.run([&] {
        audio::extend_options o;
        o.extend_after = task.request.extend_after;
        o.length = length;
        o.variant = next;
        r = audio::extend(input, wav, mp3, o);
        if (r.ok && next == 1) {
            std::ofstream out(cover, std::ios::trunc);
            out << make_cover_svg(task.task_id, make_title(task.request, 1));
            cover_written = static_cast<bool>(out);
        }
    });

    output_update out;
    out.index = next;
    if (!r.ok) {
        out.status = core::output_status::failed;
        out.error = r.error;
    } else {
        out.status = core::output_status::ready;
        out.mp3 = local_file{mp3, "audio/mpeg"};
        out.wav = local_file{wav, "audio/wav"};
        out.duration = r.duration_seconds;
        out.title = title;
        out.lyrics = task.request.lyrics_section_to_extend ? task.request.lyrics_section_to_extend
                                                           : task.request.lyrics;
        out.lyrics_timestamped = make_timestamped_lyrics(task.request, length);
    }
    u.outputs.push_back(std::move(out));
    if (cover_written)
        u.cover_file = local_file{cover, "image/svg+xml"};
    u.method = std::string(method_text);
    if (next >= total) {
        u.what = update::kind::done;
    } else {
        u.what = update::kind::progress;
        u.poll_after_ms = settings_.delay.count();
        u.state_json = "{\"next_output\":" + std::to_string(next + 1) + "}";
    }
    co_return u;
}

}  // namespace segue::providers::sandbox
