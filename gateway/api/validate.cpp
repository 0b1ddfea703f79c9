#include "gateway/api/validate.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

#include "gateway/util/json_text.hpp"
#include "gateway/util/utf8.hpp"

namespace segue::api {

namespace json = boost::json;

std::size_t utf8_length(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80)
            ++n;
    return n;
}

namespace {

const std::set<std::string_view> known_fields{
    "audio_url", "clip",        "extend_after", "starts_at",
    "prompt",    "instruction", "lyrics",       "lyrics_section_to_extend",
    "gender",    "num_outputs", "length",       "webhook_url",
    "provider",  "route",       "metadata",     "audio_file"};

// True if every string in `v` (object keys included) is valid UTF-8.
bool valid_text(const json::value& v) {
    switch (v.kind()) {
        case json::kind::string:
            return util::valid_utf8(v.get_string());
        case json::kind::array:
            for (const auto& e : v.get_array())
                if (!valid_text(e))
                    return false;
            return true;
        case json::kind::object:
            for (const auto& kv : v.get_object())
                if (!util::valid_utf8(kv.key()) || !valid_text(kv.value()))
                    return false;
            return true;
        default:
            return true;
    }
}

class checker {
  public:
    explicit checker(const validation_input& in) : in_(in), o_(*in.fields) {}

    // A known field's value, or null when absent, JSON null, or already refused as not UTF-8.
    const json::value* get(std::string_view k) const {
        if (bad_text_.count(k))
            return nullptr;
        auto it = o_.find(k);
        if (it == o_.end() || it->value().is_null())
            return nullptr;
        return &it->value();
    }

    // Given at all (even if refused): for "required" and "exactly one" checks.
    bool present(std::string_view k) const {
        auto it = o_.find(k);
        return it != o_.end() && !it->value().is_null();
    }

    // Every text must be valid UTF-8: a request that is not would be stored, echoed and sent
    // upstream, and fail there. One error per field; the field then counts as given but
    // invalid.
    void check_text() {
        for (const auto& kv : o_) {
            if (!known_fields.count(kv.key()) || valid_text(kv.value()))
                continue;
            error(std::string(kv.key()), "must be valid UTF-8 text");
            bad_text_.insert(std::string(kv.key()));
        }
    }

    void error(std::string field, std::string message) {
        errors.push_back({std::move(field), std::move(message)});
    }

    std::optional<std::string> string_field(std::string_view k, std::size_t max_chars) {
        const auto* v = get(k);
        if (!v)
            return std::nullopt;
        if (!v->is_string()) {
            error(std::string(k), "must be a string");
            return std::nullopt;
        }
        std::string s(v->get_string());
        if (max_chars && utf8_length(s) > max_chars) {
            error(std::string(k), "must be at most " + std::to_string(max_chars) + " characters");
            return std::nullopt;
        }
        return s;
    }

    std::optional<double> number_field(std::string_view k) {
        const auto* v = get(k);
        if (!v)
            return std::nullopt;
        double d = 0;
        if (v->is_number()) {
            d = v->to_number<double>();
        } else if ((in_.from_form || in_.text_numbers) && v->is_string()) {
            std::string_view s = v->get_string();
            // A form's text: an explicit '+' sign is a number too (from_chars takes only '-').
            if (s.size() > 1 && s[0] == '+' && s[1] != '-' && s[1] != '+')
                s.remove_prefix(1);
            auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
            if (ec == std::errc::result_out_of_range && p == s.data() + s.size()) {
                // Too large (as JSON's 1e400 is), or so small it is zero.
                d = std::strtod(std::string(s).c_str(), nullptr);
                ec = std::errc();
            }
            if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
                error(std::string(k), "must be a number");
                return std::nullopt;
            }
        } else {
            error(std::string(k), "must be a number");
            return std::nullopt;
        }
        if (!std::isfinite(d)) {
            error(std::string(k), "must be a finite number");
            return std::nullopt;
        }
        return d;
    }

    std::optional<std::string> url_field(std::string_view k) {
        auto s = string_field(k, 2048);
        if (!s)
            return std::nullopt;
        auto u = boost::urls::parse_absolute_uri(*s);
        if (!u) {
            // Say what is wrong with it, where it can be told.
            const bool has_space = std::any_of(s->begin(), s->end(), [](char c) {
                return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
            });
            const bool non_ascii = std::any_of(
                s->begin(), s->end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
            if (has_space)
                error(std::string(k), "must not contain spaces or control characters");
            else if (non_ascii)
                error(std::string(k),
                      "must be ASCII: percent-encode the path and query, and "
                      "write a host name in its xn-- (punycode) form");
            else if (boost::urls::parse_uri(*s))
                error(std::string(k), "must not have a #fragment");
            else
                error(std::string(k), "must be an absolute URL");
            return std::nullopt;
        }
        // Schemes are case-insensitive (RFC 3986 3.1): HTTP://... is http://... .
        const auto id = u->scheme_id();
        if (id != boost::urls::scheme::http && id != boost::urls::scheme::https) {
            error(std::string(k), "must be an http or https URL");
            return std::nullopt;
        }
        if (!u->has_authority() || u->host().empty()) {
            error(std::string(k), "must name a host");
            return std::nullopt;
        }
        if (u->has_userinfo()) {
            error(std::string(k), "must not contain credentials");
            return std::nullopt;
        }
        // Kept as given, but with the scheme in lower case for everything downstream.
        for (std::size_t i = 0; i < u->scheme().size(); ++i)
            (*s)[i] = static_cast<char>(std::tolower(static_cast<unsigned char>((*s)[i])));
        return s;
    }

    const validation_input& in_;
    const json::object& o_;
    std::vector<field_error> errors;

  private:
    std::set<std::string, std::less<>> bad_text_;
};

}  // namespace

validation_result validate_extend_request(const validation_input& in) {
    validation_result out;
    checker c(in);
    auto& r = out.request;

    for (const auto& kv : *in.fields)
        if (!known_fields.count(kv.key()))
            c.error(std::string(kv.key()), "unknown field");
    c.check_text();

    // Source: exactly one of audio_file, audio_url, clip.
    int sources = in.has_file ? 1 : 0;
    if (c.get("audio_file")) {
        c.error("audio_file", "must be a file part of a multipart/form-data body");
        ++sources;  // a source, sent the wrong way: said once, above
    }
    if (auto u = c.url_field("audio_url")) {
        ++sources;
        r.source = core::source_kind::url;
        r.audio_url = *u;
    } else if (c.present("audio_url")) {
        ++sources;  // present but invalid: already reported
    }
    if (const auto* clip = c.get("clip")) {
        ++sources;
        json::value parsed;
        const json::value* cv = clip;
        if (in.from_form && clip->is_string()) {
            boost::system::error_code ec;
            parsed = json::parse(clip->get_string(), ec);
            cv = ec ? nullptr : &parsed;
        }
        if (!cv || !cv->is_object()) {
            c.error("clip", "must be an object {\"provider\": ..., \"id\": ...}");
        } else {
            const auto& co = cv->as_object();
            auto p = co.if_contains("provider");
            auto id = co.if_contains("id");
            if (!p || !p->is_string() || p->get_string().empty())
                c.error("clip.provider", "is required and must be a string");
            else if (in.provider_exists && !in.provider_exists(p->get_string()))
                c.error("clip.provider",
                        "is not an enabled provider (GET /v1/providers lists them)");
            if (!id || !id->is_string() || id->get_string().empty() ||
                id->get_string().size() > 256)
                c.error("clip.id", "is required and must be a string of at most 256 characters");
            for (const auto& kv : co)
                if (kv.key() != "provider" && kv.key() != "id")
                    c.error("clip." + std::string(kv.key()), "unknown field");
            if (p && p->is_string() && id && id->is_string()) {
                r.source = core::source_kind::clip;
                r.clip_provider = std::string(p->get_string());
                r.clip_id = std::string(id->get_string());
            }
        }
    } else if (c.present("clip")) {
        ++sources;  // present but not UTF-8: already reported
    }
    if (in.has_file)
        r.source = core::source_kind::file;
    if (sources == 0)
        c.error("audio_file", "one source is required: audio_file, audio_url or clip");
    if (sources > 1)
        c.error("audio_file", "give exactly one source: audio_file, audio_url or clip");

    // extend_after (alias starts_at)
    auto ea = c.number_field("extend_after");
    auto sa = c.number_field("starts_at");
    if (ea && sa && *ea != *sa)
        c.error("starts_at", "is an alias of extend_after and differs from it");
    auto extend_after = ea ? ea : sa;
    if (!extend_after && !c.present("extend_after") && !c.present("starts_at"))
        c.error("extend_after", "is required (seconds into the song where the extension starts)");
    if (extend_after) {
        if (*extend_after < 0)
            c.error("extend_after", "must be >= 0");
        else if (*extend_after > max_extend_after_seconds)
            c.error("extend_after", "must be at most 86400 seconds (24 h) and within the song");
        else
            r.extend_after = *extend_after;
    }

    auto prompt = c.string_field("prompt", max_prompt_chars);
    auto instruction = c.string_field("instruction", max_prompt_chars);
    if (prompt && instruction && *prompt != *instruction)
        c.error("instruction", "is an alias of prompt and differs from it");
    r.prompt = prompt ? prompt : instruction;
    r.lyrics = c.string_field("lyrics", max_lyrics_chars);
    r.lyrics_section_to_extend = c.string_field("lyrics_section_to_extend", max_section_chars);
    if (auto g = c.string_field("gender", 0)) {
        if (*g != "male" && *g != "female" && *g != "neutral")
            c.error("gender", "must be male, female or neutral");
        else
            r.gender = g;
    }
    if (auto n = c.number_field("num_outputs")) {
        if (*n != 1 && *n != 2)
            c.error("num_outputs", "must be 1 or 2");
        else {
            r.num_outputs = static_cast<int>(*n);
            r.num_outputs_given = true;
        }
    }
    if (auto l = c.number_field("length")) {
        if (*l <= 0)
            c.error("length", "must be > 0");
        else if (*l > max_length_seconds)
            c.error("length", "must be at most " +
                                  std::to_string(static_cast<int>(max_length_seconds)) +
                                  " seconds");
        else
            r.length = l;
    }
    r.webhook_url = c.url_field("webhook_url");
    if (auto p = c.string_field("provider", 64)) {
        if (in.provider_exists && !in.provider_exists(*p))
            c.error("provider", "is not an enabled provider (GET /v1/providers lists them)");
        else
            r.provider = p;
    }
    if (auto rt = c.string_field("route", 64)) {
        if (!in.route_exists || !in.route_exists(*rt))
            c.error("route", "unknown route");
        else
            r.route = rt;
    }
    if (r.provider && r.route)
        c.error("route", "give provider or route, not both");
    if (const auto* md = c.get("metadata")) {
        json::value parsed;
        const json::value* mv = md;
        if (in.from_form && md->is_string()) {
            boost::system::error_code ec;
            parsed = json::parse(md->get_string(), ec);
            mv = ec ? nullptr : &parsed;
        }
        if (!mv || !mv->is_object()) {
            c.error("metadata", "must be a JSON object");
        } else {
            auto text = util::json_text(*mv);
            if (text.size() > max_metadata_bytes)
                c.error("metadata",
                        "must be at most " + std::to_string(max_metadata_bytes) + " bytes as JSON");
            else
                r.metadata_json = text;
        }
    }
    out.errors = std::move(c.errors);
    return out;
}

}  // namespace segue::api
