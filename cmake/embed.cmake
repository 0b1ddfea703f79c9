# Writes a C++ source that holds a file's bytes (the OpenAPI document: docs/openapi.json), so the
# binary serves exactly the committed file. Run by the build whenever the file changes.
#   cmake -DIN=<file> -DOUT=<file.cpp> -DFUNCTION=<qualified name> -DHEADER=<include> -P embed.cmake
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
# Two hex digits per byte; 32 bytes per line.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
string(REGEX REPLACE "(('\\\\x[0-9a-f][0-9a-f]',){32})" "\\1\n    " bytes "${bytes}")
string(REGEX MATCH "^(.*)::([^:]+)$" _ "${FUNCTION}")
set(ns ${CMAKE_MATCH_1})
set(fn ${CMAKE_MATCH_2})
file(WRITE ${OUT}.tmp "// Generated from ${IN} by cmake/embed.cmake: do not edit.
#include \"${HEADER}\"

namespace ${ns} {
namespace {
constexpr char bytes[${size} + 1] = {
    ${bytes}'\\0'};
}  // namespace

std::string_view ${fn}() noexcept {
    return {bytes, ${size}};
}

}  // namespace ${ns}
")
# Only a changed document rebuilds what includes it.
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
