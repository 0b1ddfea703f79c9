// The sandbox provider's descriptor: its settings block (providers.sandbox), with bounds and docs.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "gateway/config/schema.hpp"
#include "providers/descriptor.hpp"
#include "providers/sandbox/sandbox.hpp"

namespace segue::providers::sandbox {
namespace {

using namespace std::chrono_literals;
using config::object_schema;

object_schema<sandbox_settings> sandbox_schema() {
    object_schema<sandbox_settings> s;
    s.field("enabled", &sandbox_settings::enabled,
            "The offline sandbox provider: extends audio locally with DSP (a beat-aligned "
            "crossfaded loop), no account, no network. Not AI.")
        .def(true);
    s.field("delay", &sandbox_settings::delay,
            "Simulated provider latency before the task starts running and before results.")
        .def(1s)
        .range(0s, 10min);
    s.field("default_length", &sandbox_settings::default_length,
            "Seconds of new audio when the request gives no length.")
        .def(30.0)
        .range(1.0, 600.0);
    s.field("price", &sandbox_settings::price,
            "Credits held per requested output when a task is routed here first, captured when "
            "the output is ready and released when it is not (see GET /v1/credits).")
        .def(0.0)
        .range(0.0, 1000000.0);
    return s;
}

}  // namespace

const descriptor& provider_descriptor() {
    static const descriptor d = make_descriptor<sandbox_settings>(
        "sandbox", "The sandbox provider.", sandbox_schema(),
        [](const sandbox_settings& s) { return std::make_unique<sandbox_provider>(s); });
    return d;
}

}  // namespace segue::providers::sandbox
