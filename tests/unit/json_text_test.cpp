#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "gateway/core/json.hpp"
#include "gateway/util/json_text.hpp"

namespace json = boost::json;
using segue::util::json_text;

namespace {

std::string one(double d) {
    return json_text(json::value(d));
}

}  // namespace

TEST(JsonText, DoublesArePlainShortestDecimals) {
    EXPECT_EQ(one(0.1), "0.1");
    EXPECT_EQ(one(2.5), "2.5");
    EXPECT_EQ(one(0.125), "0.125");
    EXPECT_EQ(one(50.0), "50");
    EXPECT_EQ(one(1.0), "1");
    EXPECT_EQ(one(-3.0), "-3");
    EXPECT_EQ(one(-2.75), "-2.75");
    EXPECT_EQ(one(123456789.125), "123456789.125");
    EXPECT_EQ(one(1e21), "1000000000000000000000");
    EXPECT_EQ(one(1e-7), "0.0000001");
    EXPECT_EQ(one(0.0), "0");
    EXPECT_EQ(one(-0.0), "0");
    EXPECT_EQ(one(181.2), "181.2");
    EXPECT_EQ(one(0.1 + 0.2), "0.30000000000000004");  // shortest that reads back the same
}

// Exact by std::from_chars (Boost 1.81's own parser is not exact for 300-digit numbers).
TEST(JsonText, DoublesReadBackExactly) {
    for (double d : {0.1, 2.5, 1e21, 1e-7, 123456789.125, 1.7976931348623157e308,
                     std::numeric_limits<double>::denorm_min(), 5e-324, 9007199254740993.0, -1e300,
                     3.141592653589793}) {
        const auto text = one(d);
        EXPECT_EQ(text.find_first_of("eE"), std::string::npos) << text;
        double back = 0;
        const auto r = std::from_chars(text.data(), text.data() + text.size(), back);
        EXPECT_EQ(r.ptr, text.data() + text.size()) << text;
        EXPECT_EQ(back, d) << text;
    }
}

TEST(JsonText, NonFiniteIsNull) {
    EXPECT_EQ(one(std::numeric_limits<double>::infinity()), "null");
    EXPECT_EQ(one(-std::numeric_limits<double>::infinity()), "null");
    EXPECT_EQ(one(std::numeric_limits<double>::quiet_NaN()), "null");
}

TEST(JsonText, EverythingElseAsBoostWritesIt) {
    const auto v = json::parse(
        R"({"s":"a\"b\\c\n\t\u0001/é","i":-42,"u":18446744073709551615,"t":true,"f":false,)"
        R"("n":null,"a":[1,"x",[],{}],"o":{"k\u0000":"v"},"big":-9223372036854775808})");
    EXPECT_EQ(json_text(v), json::serialize(v));
    EXPECT_EQ(json_text(v.as_object()), json::serialize(v));
    EXPECT_EQ(json_text(json::array{1, "two", nullptr}), R"([1,"two",null])");
    EXPECT_EQ(json_text(json::object{}), "{}");
    EXPECT_EQ(json_text(json::array{}), "[]");
}

TEST(JsonText, NestedDoubles) {
    json::object o;
    o["duration"] = 12.5;
    o["outputs"] = json::array{json::object{{"duration", 30.0}}, 0.25};
    EXPECT_EQ(json_text(o), R"({"duration":12.5,"outputs":[{"duration":30},0.25]})");
    EXPECT_EQ(json::serialize(o), R"({"duration":1.25E1,"outputs":[{"duration":3E1},2.5E-1]})")
        << "Boost's own form, the reason for json_text";
}

// The public task and event documents, written the way the API writes them: a fractional
// duration in an output and in event data comes out plain.
TEST(JsonText, TaskAndEventDocumentsHaveNoExponents) {
    segue::store::task_row t;
    t.id = "ext_1";
    t.status = "succeeded";
    segue::core::extend_request r;
    r.extend_after = 2.5;
    r.length = 30.125;
    r.source_duration = 181.2;
    r.num_outputs = 2;
    t.request_json = segue::core::request_to_json(r);
    std::vector<segue::store::output_row> outs{
        {"ext_1", 1, "ready", json_text(json::object{{"duration", 32.625}}), 0},
        {"ext_1", 2, "ready", json_text(json::object{{"duration", 50.0}}), 0}};
    const auto task = json_text(segue::core::task_document(t, outs, {}));
    EXPECT_EQ(task.find_first_of("E"), std::string::npos) << task;
    EXPECT_NE(task.find(R"("extend_after":2.5)"), std::string::npos) << task;
    EXPECT_NE(task.find(R"("length":30.125)"), std::string::npos) << task;
    EXPECT_NE(task.find(R"("duration":181.2)"), std::string::npos) << task;
    EXPECT_NE(task.find(R"("duration":32.625)"), std::string::npos) << task;
    EXPECT_NE(task.find(R"("duration":50)"), std::string::npos) << task;

    segue::store::event_row e;
    e.id = "evt_1";
    e.type = "extension.output.ready";
    e.task_id = "ext_1";
    // As older versions stored it.
    e.data_json = R"({"index":1,"duration":3.25E1,"extend_after":2.5E0})";
    const auto event = json_text(segue::core::event_document(e));
    EXPECT_EQ(event.find_first_of("E"), std::string::npos) << event;
    EXPECT_NE(event.find(R"("duration":32.5,"extend_after":2.5)"), std::string::npos) << event;
}
