// GET /openapi.json: the committed document, byte for byte, without an API key.

#include <gtest/gtest.h>

#include <string>

#include "tests/support/process.hpp"

TEST(OpenApiServed, IsTheCommittedDocument) {
    segue::test::segue_process s("server:\n  listen: 127.0.0.1:0\n  io_threads: 1\n");
    auto r = segue::test::http_request(s.port(), "GET", "/openapi.json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/json");
    EXPECT_EQ(r->body,
              segue::test::read_file(std::string(SEGUE_SOURCE_DIR) + "/docs/openapi.json"));
}
