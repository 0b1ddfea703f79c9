#include <gtest/gtest.h>

#include "gateway/util/json_keys.hpp"

using segue::util::duplicate_json_key;

TEST(JsonKeys, FindsTheFirstRepeatedKeyOfAnyObject) {
    EXPECT_EQ(duplicate_json_key(R"({"a":1,"b":2})"), std::nullopt);
    EXPECT_EQ(duplicate_json_key(R"({"a":1,"a":2})"), "a");
    EXPECT_EQ(duplicate_json_key(R"({"a":{"x":1,"y":{"x":2}},"b":[{"k":1},{"k":2}]})"),
              std::nullopt);  // the same name in different objects is fine
    EXPECT_EQ(duplicate_json_key(R"({"m":{"x":1,"x":2}})"), "x");
    EXPECT_EQ(duplicate_json_key(R"([{"k":1},{"k":2,"k":3}])"), "k");
    // Escapes spell the same key differently.
    EXPECT_EQ(duplicate_json_key(R"({"extend_after":8,"extend\u005fafter":9})"), "extend_after");
    // A long key (read in parts) and a key after a long string.
    const std::string big(100000, 'k');
    EXPECT_EQ(duplicate_json_key("{\"" + big + "\":1,\"" + big + "\":2}"), big);
    EXPECT_EQ(duplicate_json_key("{\"s\":\"" + big + "\",\"t\":1}"), std::nullopt);
    // Not JSON: nothing to say (the parse reports it).
    EXPECT_EQ(duplicate_json_key("{\"a\":"), std::nullopt);
    EXPECT_EQ(duplicate_json_key(""), std::nullopt);
}
