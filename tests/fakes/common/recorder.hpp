#pragma once
// What a fake received: request bodies decoded (JSON, multipart/form-data, urlencoded forms) and
// a log of every request, so tests can assert on the exact bytes the gateway sent (file parts by
// size and SHA-256).

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fakes/common/http.hpp"

namespace segue::fakes {

struct body_field {
    std::string name;
    std::optional<std::string> filename;  // set for file parts
    std::string content_type;             // the part's Content-Type ("" if none)
    std::string data;                     // the value / the file's bytes
    bool is_file() const { return filename.has_value(); }
};

struct parsed_body {
    enum class kind { empty, json, multipart, form, other };
    kind what = kind::empty;
    std::vector<body_field> fields;  // multipart and form bodies, in order
    boost::json::value json;         // JSON bodies (null if unparsable)
    std::string error;               // why the body could not be decoded ("" if fine)

    // The last field of that name (FastAPI takes the last of repeated form fields).
    const body_field* field(std::string_view name) const;
};

std::string_view to_string(parsed_body::kind k);

// Decodes by Content-Type: application/json, multipart/form-data (segue's streaming parser),
// application/x-www-form-urlencoded; anything else is `other`.
parsed_body parse_body(std::string_view content_type, const std::string& body);

// The request log behind GET /_control/requests. Each entry:
//   {"seq":1,"received_at_ms":…,"received_mono_us":…,"method":"POST","target":"/api/public/v1/extend?…","path":…,
//    "query":{"name":"value",…},"headers":{"authorization":"…",…},   (lower-case names)
//    "body_size":N,"body_sha256":"…","body_kind":"json|multipart|form|other|empty",
//    "fields":[{"name":"extend_after","value":"35"},
//              {"name":"audio_file","filename":"a.wav","content_type":"audio/wav",
//               "size":N,"sha256":"…"}],                               (multipart / form)
//    "json":{…},                                                        (JSON bodies)
//    "body":"…",                     (non-multipart bodies up to 64 KiB, as text)
//    "body_error":"…",               (when the body could not be decoded)
//    "route":"submit","response":{"status":200,"action":"respond","note":"…"}}
class request_log {
  public:
    // Records the request (sets request.log_seq) and returns the entry's seq.
    std::int64_t record(fake_request& request, const parsed_body& body, std::string_view route);
    // Notes how the request was answered.
    void answered(const fake_request& request, const fake_reply& reply);
    // Every entry, or those whose path equals `path` / whose route equals `route`.
    boost::json::array snapshot(std::string_view path = {}, std::string_view route = {}) const;
    void clear();
    std::size_t size() const { return entries_.size(); }

  private:
    std::vector<boost::json::object> entries_;
    std::int64_t next_seq_ = 1;
};

}  // namespace segue::fakes
