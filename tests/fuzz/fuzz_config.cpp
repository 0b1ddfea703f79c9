// libFuzzer target: configuration text.
//
// segue::config::load_string() must turn any input into settings or a config_error, never a crash,
// a hang or another exception. On top of that, for inputs that load:
//   - the effective config (render_effective) loads again and renders the same text, since
//     `segue --check-config` prints it for people to copy;
//   - server.listen passes parse_host_port, the rule the loader promises to apply.
// The same bytes also go through the scalar codecs (durations, byte sizes, host:port), checking
// that what they accept formats back to the same value.
// Inputs that hit a known bug are skipped unless SEGUE_FUZZ_STRICT=1 (see tests/fuzz/README.md).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include "gateway/config/loader.hpp"
#include "gateway/config/provider_config.hpp"
#include "gateway/config/schema.hpp"

namespace {

using namespace segue::config;

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
    std::fprintf(stderr, "fuzz_config: %s\n%.*s\n", what,
                 static_cast<int>(std::min<std::size_t>(detail.size(), 2048)), detail.data());
    std::abort();
}

// SEGUE_FUZZ_STRICT=1 turns off the workarounds for known bugs below, to check a fix.
const bool strict = [] {
    const char* v = std::getenv("SEGUE_FUZZ_STRICT");
    return v && *v && std::string_view(v) != "0";
}();

struct ignore_events final : YAML::EventHandler {
    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// Known bug: yaml-cpp 0.7's YAML::LoadAll (called by parse_yaml in gateway/config/loader.cpp)
// never returns on inputs such as "," -- the parser reports an empty document without consuming
// anything, forever, and LoadAll allocates a node per round until memory runs out
// (jbeder/yaml-cpp#1040). Detected here with a bounded number of documents.
bool yaml_cpp_loadall_loops(std::string_view text) {
    try {
        std::istringstream in{std::string(text)};
        YAML::Parser parser(in);
        ignore_events events;
        for (int documents = 0; documents < 64; ++documents)
            if (!parser.HandleNextDocument(events))
                return false;
        return true;
    } catch (const YAML::Exception&) {
        return false;
    }
}

// Known bug: convert() in gateway/config/loader.cpp copies the target of every alias, recursively.
// An anchor used inside itself ("&a [*a]") recurses until the stack overflows (a segfault), and
// nested anchors ("billion laughs") expand exponentially until memory runs out. Detected here by
// walking the document as convert() would, with a node budget and a check for cycles.
bool alias_blowup(const YAML::Node& node, std::vector<YAML::Node>& ancestors, std::size_t& budget) {
    if (budget-- == 0)
        return true;
    if (!node.IsSequence() && !node.IsMap())
        return false;
    for (const auto& a : ancestors)
        if (a.is(node))
            return true;
    ancestors.push_back(node);
    for (auto it = node.begin(); it != node.end(); ++it) {
        if (node.IsSequence() ? alias_blowup(*it, ancestors, budget)
                              : alias_blowup(it->first, ancestors, budget) ||
                                    alias_blowup(it->second, ancestors, budget))
            return true;
    }
    ancestors.pop_back();
    return false;
}

bool loader_expands_aliases_forever(std::string_view text) {
    if (text.find('*') == std::string_view::npos)
        return false;  // no alias
    try {
        std::vector<YAML::Node> ancestors;
        std::size_t budget = 20000;  // nodes after expansion; real configs have < 100
        return alias_blowup(YAML::Load(std::string(text)), ancestors, budget);
    } catch (const YAML::Exception&) {
        return false;
    }
}

// A fixed environment so ${VAR} and ${VAR:-default} substitution is exercised reproducibly.
std::optional<std::string> fake_env(const std::string& name) {
    if (name == "PORT")
        return "8080";
    if (name == "LISTEN")
        return "0.0.0.0:9000";
    if (name == "EMPTY")
        return "";
    if (name == "SIZE")
        return "64KiB";
    if (name == "TIMEOUT")
        return "1m30s";
    if (name == "WEIRD")
        return "${PORT}\n\"': #";
    return std::nullopt;
}

// A provider block like the shipped ones (enabled, price, a bounded duration, a secret), declared
// here: the shipped providers' descriptors bring their whole implementations (HTTP clients,
// audio), which this target does not build. The loader's provider-block path is the same code
// for every provider; their own schemas are covered by the unit tests.
struct fuzzed_provider_settings {
    bool enabled = false;
    double price = 1;
    std::chrono::milliseconds timeout{1000};
    std::string api_key;
};

object_schema<fuzzed_provider_settings> fuzzed_provider_schema() {
    using namespace std::chrono_literals;
    object_schema<fuzzed_provider_settings> s;
    s.field("enabled", &fuzzed_provider_settings::enabled, "Route requests to it.").def(false);
    s.field("price", &fuzzed_provider_settings::price, "Credits per output.")
        .def(1.0)
        .range(0.0, 1000000.0);
    s.field("timeout", &fuzzed_provider_settings::timeout, "Deadline of one call.")
        .def(1s)
        .range(1s, 30min);
    s.field("api_key", &fuzzed_provider_settings::api_key, "Its key.").secret().def("");
    return s;
}

const provider_catalog& shipped() {
    static const provider_catalog catalog = {
        std::make_shared<const typed_provider_schema<fuzzed_provider_settings>>(
            "fuzzed", "A provider block for the fuzzer.", fuzzed_provider_schema())};
    return catalog;
}

std::optional<std::string> no_env(const std::string&) {
    return std::nullopt;
}

void check_round_trip(const settings& loaded) {
    const std::string rendered = render_effective(loaded, shipped());
    std::string again;
    try {
        again =
            render_effective(load_string(rendered, "effective.yaml", no_env, shipped()), shipped());
    } catch (const config_error& e) {
        fail("the effective config does not load again", rendered + "---\n" + e.what());
    }
    if (again != rendered)
        fail("the effective config changes when loaded again", rendered + "---\n" + again);
}

void check_codecs(std::string_view text) {
    std::string error;
    if (auto d = detail::parse_duration(text, error)) {
        std::string e2;
        auto back = detail::parse_duration(detail::format_duration(*d), e2);
        if (!back || *back != *d)
            fail("format_duration does not parse back", text);
    } else if (error.empty()) {
        fail("parse_duration failed without a message", text);
    }
    error.clear();
    if (auto n = detail::parse_byte_size(text, error)) {
        std::string e2;
        auto back = detail::parse_byte_size(detail::format_byte_size(*n), e2);
        if (!back || *back != *n)
            fail("format_byte_size does not parse back", text);
    } else if (error.empty()) {
        fail("parse_byte_size failed without a message", text);
    }
    if (auto hp = parse_host_port(text)) {
        if (hp->host.empty())
            fail("parse_host_port accepted an empty host", text);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    (void)yaml_cpp_loadall_loops;  // fixed in parse_yaml; kept to re-check with SEGUE_FUZZ_STRICT
    (void)loader_expands_aliases_forever;
    try {
        const settings s = load_string(text, "fuzz.yaml", fake_env, shipped());
        if (!parse_host_port(s.server.listen))
            fail("loaded a server.listen that parse_host_port rejects", s.server.listen);
        check_round_trip(s);
    } catch (const config_error& e) {
        if (e.diagnostics().empty() || std::string_view(e.what()).empty())
            fail("config_error without diagnostics", text);
    } catch (const std::exception& e) {
        fail((std::string("exception other than config_error: ") + typeid(e).name()).c_str(),
             e.what());
    }
    // Scalars are short; long inputs would only slow the run down.
    if (size <= 256)
        check_codecs(text);
    return 0;
}
