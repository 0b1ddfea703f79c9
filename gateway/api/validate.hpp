#pragma once
// Validation of POST /v1/extensions: every field of the neutral request, all errors at once.

#include <boost/json/fwd.hpp>

#include <functional>
#include <string>
#include <vector>

#include "gateway/api/problem.hpp"
#include "gateway/core/model.hpp"

namespace segue::api {

struct validation_input {
    // The fields, as JSON. From multipart forms every value is a string (`from_form`), and
    // numbers are parsed from it; from JSON bodies the types must be right.
    const boost::json::object* fields = nullptr;
    bool from_form = false;
    bool text_numbers = false;  // JSON whose numbers may come as strings ("35.0"), as from a form
    bool has_file = false;      // an audio_file part was uploaded
    std::function<bool(std::string_view)> provider_exists;
    std::function<bool(std::string_view)> route_exists;
};

struct validation_result {
    core::extend_request request;
    std::vector<field_error> errors;
};

validation_result validate_extend_request(const validation_input& in);

// Limits from ARCHITECTURE.md.
inline constexpr std::size_t max_prompt_chars = 3000;
inline constexpr std::size_t max_lyrics_chars = 2000;
inline constexpr std::size_t max_section_chars = 3000;
inline constexpr std::size_t max_metadata_bytes = 4096;
inline constexpr double max_length_seconds = 600;
// No song is a day long: a larger extend_after is a mistake, refused before any source is read.
inline constexpr double max_extend_after_seconds = 86'400;

// Characters (UTF-8 code points) in `s`; counts invalid bytes as one each.
std::size_t utf8_length(std::string_view s);

}  // namespace segue::api
