// The helpers every provider shares (providers/common/): the webhook opening and what a call
// that got no answer means for the task.

#include <gtest/gtest.h>

#include "gateway/net/http_client.hpp"
#include "providers/common/transport.hpp"
#include "providers/common/wire.hpp"

namespace net = segue::net;
namespace wire = segue::providers::wire;
using segue::core::error_class;
using segue::providers::update;

TEST(ProviderWebhook, OpensTheBodyAndMatchesTheTask) {
    std::string error;
    auto w = wire::open_webhook("Acme", R"({"task_id":"t1","x":1})", "t1", error);
    ASSERT_TRUE(w) << error;
    EXPECT_EQ(w->task_id, "t1");
    EXPECT_EQ(w->provider_task_id, "t1");
    EXPECT_TRUE(w->object.contains("x"));

    // The attempt's id is unknown (its submit answer was lost): the payload's stands.
    w = wire::open_webhook("Acme", R"({"task_id":"t9"})", "", error);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->provider_task_id, "t9");
    // The payload names none (or not as a string): the attempt's stands.
    w = wire::open_webhook("Acme", R"({"task_id":7})", "t1", error);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->task_id, "");
    EXPECT_EQ(w->provider_task_id, "t1");
}

TEST(ProviderWebhook, RefusesOtherTasksAndNonObjects) {
    std::string error;
    EXPECT_FALSE(wire::open_webhook("Acme", R"({"task_id":"t2"})", "t1", error));
    EXPECT_EQ(error, "Acme webhook for task 't2', expected 't1'");
    for (const char* body : {"", "[1]", "{\"a\":", "\"text\""}) {
        error.clear();
        EXPECT_FALSE(wire::open_webhook("Acme", body, "t1", error)) << body;
        EXPECT_EQ(error, "Acme webhook body is not a JSON object") << body;
    }
}

TEST(ProviderTransport, TimeoutsAndUnreachableHostsAreTransient) {
    net::result r;
    r.error = net::failure::timeout;
    auto u = wire::transport_failure(r, "Acme", "submit");
    EXPECT_EQ(u.what, update::kind::failed);
    EXPECT_EQ(u.error, error_class::transient);
    EXPECT_EQ(u.error_code, "upstream_timeout");
    EXPECT_EQ(u.error_message, "submit: timeout");
    EXPECT_FALSE(u.ambiguous);

    r.error = net::failure::connect;
    r.message = "connection refused";
    u = wire::transport_failure(r, "Acme", "upload");
    EXPECT_EQ(u.error, error_class::transient);
    EXPECT_EQ(u.error_code, "upstream_unreachable");
    EXPECT_EQ(u.error_message, "upload: connect (connection refused)");
}

TEST(ProviderTransport, SentRequestsAreAmbiguous) {
    net::result r;
    r.error = net::failure::reset;
    r.request_sent = true;
    auto u = wire::transport_failure(r, "Acme", "submit");
    EXPECT_TRUE(u.ambiguous);
    EXPECT_EQ(u.error, error_class::transient);
    EXPECT_EQ(u.error_message,
              "submit: reset; the request may have reached Acme (ambiguous: reconcile before "
              "resubmitting)");
}

TEST(ProviderTransport, TlsUrlAndAddressRefusalsAreMisconfiguration) {
    for (auto f : {net::failure::tls, net::failure::bad_url, net::failure::plain_http_refused,
                   net::failure::refused_address}) {
        net::result r;
        r.error = f;
        auto u = wire::transport_failure(r, "Acme", "submit");
        EXPECT_EQ(u.error, error_class::unknown) << net::to_string(f);
        EXPECT_EQ(u.error_code, "upstream_misconfigured") << net::to_string(f);
    }
}
