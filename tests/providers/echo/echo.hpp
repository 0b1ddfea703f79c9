#pragma once
// The echo provider: a provider defined entirely under tests/, to show that a provider is one
// folder. It has its own config block with a bound (providers.echo.speed, 1..10), its own price,
// and a capability no shipped provider has: it finishes a task in its submit call (no polling,
// no webhooks), answering every requested output with a copy of the uploaded file.

#include "providers/descriptor.hpp"

namespace segue::test::echo {

struct echo_settings {
    bool enabled = false;
    int speed = 1;     // shown in every output's title
    double price = 7;  // credits per output
};

const providers::descriptor& provider_descriptor();

}  // namespace segue::test::echo
