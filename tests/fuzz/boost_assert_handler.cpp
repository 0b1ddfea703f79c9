// BOOST_ASSERT handler for the fuzz build (BOOST_ENABLE_ASSERT_HANDLER, set in
// tests/fuzz/CMakeLists.txt). Boost's assertions stay on while fuzzing, since a failed one is a
// finding; this handler prints it and aborts, so libFuzzer records the input.
//
// One known-wrong assertion is let through unless SEGUE_FUZZ_STRICT=1: Beast 1.81 asserts
// `n >= 5` in basic_parser::parse_chunk_header when the final chunk "0\r\n\r\n" arrives split
// after "0\r\n" + "\r" (4 bytes), which is valid input that the code after the assertion handles
// correctly (fixed upstream in boostorg/beast#2861). Release builds (NDEBUG) never see it; here it
// would stop every run within seconds.

#include <boost/assert.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace {

bool strict() {
    const char* v = std::getenv("SEGUE_FUZZ_STRICT");
    return v && *v && std::string_view(v) != "0";
}

bool known_wrong(const char* expr, const char* function, const char* file) {
    return std::string_view(file).ends_with("beast/http/impl/basic_parser.ipp") &&
           std::string_view(expr) == "n >= 5" && std::strstr(function, "parse_chunk_header");
}

}  // namespace

namespace boost {

void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file,
                          long line) {
    static const bool is_strict = strict();
    if (!is_strict && known_wrong(expr, function, file))
        return;
    std::fprintf(stderr, "%s:%ld: %s: Boost assertion `%s' failed%s%s\n", file, line, function,
                 expr, msg ? ": " : "", msg ? msg : "");
    std::abort();
}

void assertion_failed(char const* expr, char const* function, char const* file, long line) {
    assertion_failed_msg(expr, nullptr, function, file, line);
}

}  // namespace boost
