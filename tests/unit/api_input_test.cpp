// Client text at the API's edge: UTF-8 checks, query parameter decoding, problem+json that stays
// valid JSON, and what the stored request remembers about what the client sent.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "gateway/api/common.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/api/validate.hpp"
#include "gateway/audio/audio.hpp"
#include "gateway/core/json.hpp"
#include "gateway/util/text.hpp"
#include "gateway/util/utf8.hpp"

namespace json = boost::json;
using segue::util::first_invalid_utf8;
using segue::util::sanitize_utf8;
using segue::util::valid_utf8;

namespace {

// As the API parses bodies: invalid UTF-8 inside strings reaches validation.
segue::api::validation_result run(const std::string& body, bool form = false, bool file = false) {
    static json::object fields;
    json::parse_options opts;
    opts.allow_invalid_utf8 = true;
    fields = json::parse(body, {}, opts).as_object();
    segue::api::validation_input in;
    in.fields = &fields;
    in.from_form = form;
    in.has_file = file;
    in.provider_exists = [](std::string_view n) { return n == "sandbox"; };
    in.route_exists = [](std::string_view) { return false; };
    return segue::api::validate_extend_request(in);
}

std::vector<std::string> fields_of(const segue::api::validation_result& r) {
    std::vector<std::string> out;
    for (const auto& e : r.errors)
        out.push_back(e.field);
    return out;
}

}  // namespace

TEST(Text, IequalsFoldsOnlyAsciiLetters) {
    using segue::util::iequals;
    EXPECT_TRUE(iequals("Content-Type", "content-type"));
    EXPECT_TRUE(iequals("BYTES", "bytes"));
    EXPECT_TRUE(iequals("", ""));
    EXPECT_FALSE(iequals("bytes", "byte"));
    // Not letters: compared exactly (an OR with 0x20 would take '@' for '`' and '[' for '{').
    EXPECT_FALSE(iequals("@", "`"));
    EXPECT_FALSE(iequals("[", "{"));
    EXPECT_FALSE(iequals("\xc3\x89", "\xc3\xa9"));  // bytes of UTF-8 are not folded
    static_assert(iequals("SHA256=", "sha256="));
}

TEST(Utf8, ValidAndInvalidSequences) {
    EXPECT_TRUE(valid_utf8(""));
    EXPECT_TRUE(valid_utf8("plain ascii"));
    EXPECT_TRUE(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8E\xB5"));  // é € 🎵
    EXPECT_TRUE(valid_utf8(std::string_view("a\0b", 3)));
    EXPECT_TRUE(valid_utf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF

    EXPECT_FALSE(valid_utf8("\xC3\x28"));          // lead, then not a continuation
    EXPECT_FALSE(valid_utf8("\xC3"));              // truncated at the end
    EXPECT_FALSE(valid_utf8("\x80"));              // lone continuation
    EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong '/'
    EXPECT_FALSE(valid_utf8("\xE0\x80\xAF"));      // overlong
    EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate U+D800
    EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
    EXPECT_FALSE(valid_utf8("\xF5\x80\x80\x80"));
    EXPECT_FALSE(valid_utf8("\xFF"));
    EXPECT_EQ(first_invalid_utf8("ab\xC3\x28"), 2u);
    EXPECT_EQ(first_invalid_utf8("ok"), std::string_view::npos);
}

TEST(Utf8, SanitizeReplacesMaximalSubparts) {
    EXPECT_EQ(sanitize_utf8("caf\xC3\xA9"), "caf\xC3\xA9");
    EXPECT_EQ(sanitize_utf8("a\xC3\x28z"), "a\xEF\xBF\xBD(z");
    // A truncated 3-byte sequence is one replacement; a stray continuation another.
    EXPECT_EQ(sanitize_utf8("\xE2\x82x\x80"), "\xEF\xBF\xBDx\xEF\xBF\xBD");
    EXPECT_EQ(sanitize_utf8("\xF0\x9F\x8E"), "\xEF\xBF\xBD");
    EXPECT_TRUE(valid_utf8(sanitize_utf8("\xFF\xFE\xC0\xAF\xED\xA0\x80")));
}

TEST(QueryParams, PercentDecodingPerRfc3986) {
    EXPECT_EQ(segue::api::percent_decode("ext_%41b").value(), "ext_Ab");
    EXPECT_EQ(segue::api::percent_decode("%2f%2F").value(), "//");
    EXPECT_EQ(segue::api::percent_decode("a+b").value(), "a+b");  // '+' is not a space here
    EXPECT_EQ(segue::api::percent_decode("%20").value(), " ");
    EXPECT_EQ(segue::api::percent_decode("").value(), "");
    EXPECT_FALSE(segue::api::percent_decode("%"));
    EXPECT_FALSE(segue::api::percent_decode("%4"));
    EXPECT_FALSE(segue::api::percent_decode("ab%"));
    EXPECT_FALSE(segue::api::percent_decode("%zz"));
    EXPECT_FALSE(segue::api::percent_decode("%4g"));
}

TEST(QueryParams, LookupDecodesNamesAndValues) {
    using segue::api::query_param;
    using segue::api::query_value;
    auto v =
        query_param("status=dead&task_id=ext_%41%42c&before=2024-01-01T00%3A00%3A00Z", "task_id");
    EXPECT_EQ(v.status, query_value::state::present);
    EXPECT_EQ(v.value, "ext_ABc");
    EXPECT_EQ(query_param("before=2024-01-01T00%3A00%3A00Z", "before").value,
              "2024-01-01T00:00:00Z");
    EXPECT_EQ(query_param("%6Cimit=5", "limit").value, "5");
    EXPECT_EQ(query_param("limit", "limit").status, query_value::state::present);
    EXPECT_EQ(query_param("limit", "limit").value, "");
    EXPECT_EQ(query_param("a=1", "limit").status, query_value::state::absent);
    EXPECT_EQ(query_param("", "limit").status, query_value::state::absent);
    // A name given twice, in any spelling, is refused: which value was meant is unknown.
    EXPECT_EQ(query_param("a=1&a=2", "a").status, query_value::state::repeated);
    EXPECT_EQ(query_param("limit=5&x=1&%6Cimit=5", "limit").status, query_value::state::repeated);
    EXPECT_EQ(query_param("a=1&ab=2&b=3", "a").value, "1");
    // Malformed: a bad escape, or bytes that are not UTF-8 text.
    EXPECT_EQ(query_param("before=%zz", "before").status, query_value::state::malformed);
    EXPECT_EQ(query_param("before=abc%", "before").status, query_value::state::malformed);
    EXPECT_EQ(query_param("task_id=%C3%28", "task_id").status, query_value::state::malformed);
    EXPECT_EQ(query_param("task_id=%C3%A9", "task_id").value, "\xC3\xA9");
    // Another parameter's bad escape does not matter.
    EXPECT_EQ(query_param("x=%zz&a=1", "a").value, "1");
}

TEST(Validate, InvalidUtf8TextIsRefusedNamingTheField) {
    // A multipart text field: every value a string.
    auto r = run("{\"extend_after\":\"1\",\"prompt\":\"bad \xC3\x28 text\"}", true, true);
    ASSERT_EQ(fields_of(r), std::vector<std::string>{"prompt"});
    EXPECT_NE(r.errors[0].message.find("UTF-8"), std::string::npos);

    // JSON bodies, every text field, nested ones too.
    for (const std::string field : {"prompt", "instruction", "lyrics", "lyrics_section_to_extend",
                                    "gender", "provider", "webhook_url"}) {
        auto j = run(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,")" + field +
                     "\":\"\xFF\"}");
        EXPECT_EQ(fields_of(j), std::vector<std::string>{field}) << field;
    }
    auto md = run(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"metadata":{"k":")"
                  "\xED\xA0\x80\"}}");
    EXPECT_EQ(fields_of(md), std::vector<std::string>{"metadata"});
    auto md_key = run(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"metadata":{")"
                      "\xC0\xAF\":1}}");
    EXPECT_EQ(fields_of(md_key), std::vector<std::string>{"metadata"});

    // A source that is not text counts as given: no "source missing" on top.
    auto url = run("{\"audio_url\":\"https://x.test/\xC3\",\"extend_after\":1}");
    EXPECT_EQ(fields_of(url), std::vector<std::string>{"audio_url"});
    auto clip = run("{\"clip\":{\"provider\":\"sandbox\",\"id\":\"\xC3\"},\"extend_after\":1}");
    EXPECT_EQ(fields_of(clip), std::vector<std::string>{"clip"});
    // And a required field that is not text is reported once, not also as missing.
    auto ea = run("{\"extend_after\":\"\xC3\"}", true, true);
    EXPECT_EQ(fields_of(ea), std::vector<std::string>{"extend_after"});

    // Valid non-ASCII text is fine.
    auto ok =
        run("{\"extend_after\":\"1\",\"prompt\":\"caf\xC3\xA9 \xF0\x9F\x8E\xB5\"}", true, true);
    EXPECT_TRUE(ok.errors.empty());
}

TEST(Problem, StaysValidJsonWhenItQuotesInvalidUtf8) {
    segue::http::response res;
    segue::api::set_problem(res, segue::api::error_kind::validation_failed,
                            "field 'a\xC3\x28' given twice", "/v1/\xFF",
                            {{"col\xC3our", "unknown field"}});
    boost::system::error_code ec;
    auto v = json::parse(res.body, ec);  // the strict parser: rejects invalid UTF-8
    ASSERT_FALSE(ec) << res.body;
    EXPECT_EQ(v.at("detail").as_string(), "field 'a\xEF\xBF\xBD(' given twice");
    EXPECT_EQ(v.at("errors").at(0).at("field").as_string(), "col\xEF\xBF\xBDour");
}

TEST(ModelJson, NumOutputsRemembersWhetherTheClientSentIt) {
    auto sent = run(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"num_outputs":2})");
    ASSERT_TRUE(sent.errors.empty());
    EXPECT_TRUE(sent.request.num_outputs_given);
    auto form = run(R"({"extend_after":"1","num_outputs":"1"})", true, true);
    EXPECT_TRUE(form.request.num_outputs_given);
    auto dflt = run(R"({"audio_url":"https://x.test/a.mp3","extend_after":1})");
    ASSERT_TRUE(dflt.errors.empty());
    EXPECT_FALSE(dflt.request.num_outputs_given);
    EXPECT_EQ(dflt.request.num_outputs, 2);

    // Round trip through the store.
    auto back = segue::core::request_from_json(segue::core::request_to_json(sent.request));
    EXPECT_TRUE(back.num_outputs_given);
    back = segue::core::request_from_json(segue::core::request_to_json(dflt.request));
    EXPECT_FALSE(back.num_outputs_given);
    // A request stored before the field existed reads as not sent.
    auto old = segue::core::request_from_json(
        R"({"source":"url","audio_url":"https://x.test/a.mp3","extend_after":1,"num_outputs":2})");
    EXPECT_FALSE(old.num_outputs_given);
    EXPECT_EQ(old.num_outputs, 2);
    // Idempotency fingerprints keep their format: the flag is not part of them.
    const auto fp = segue::core::request_fingerprint(sent.request);
    EXPECT_EQ(fp.find("num_outputs_given"), std::string::npos) << fp;
    auto unflagged = sent.request;
    unflagged.num_outputs_given = false;
    EXPECT_EQ(segue::core::request_fingerprint(unflagged), fp);
}

TEST(Audio, ContentTypeOfProbedFormats) {
    using segue::audio::content_type_for_format;
    EXPECT_EQ(content_type_for_format("mp3"), "audio/mpeg");
    EXPECT_EQ(content_type_for_format("wav"), "audio/wav");
    EXPECT_EQ(content_type_for_format("flac"), "audio/flac");
    EXPECT_EQ(content_type_for_format("ogg"), "audio/ogg");
    EXPECT_EQ(content_type_for_format("opus"), "audio/ogg");
    EXPECT_EQ(content_type_for_format("caf"), "application/octet-stream");
    EXPECT_EQ(content_type_for_format(""), "application/octet-stream");
}
