#pragma once
// The providers shipped with the gateway. Included only by the app's wiring (gateway/app.cpp).

#include "providers/descriptor.hpp"

namespace segue::providers {

// Their descriptors, in config and docs order.
const descriptor_list& builtin();

}  // namespace segue::providers
