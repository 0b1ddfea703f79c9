#pragma once
// The OpenAPI 3.1 document of the API (docs/openapi.json, embedded at build time by
// cmake/embed.cmake): GET /openapi.json serves these bytes unchanged.

#include <string_view>

namespace segue::api {

std::string_view openapi_document() noexcept;

}  // namespace segue::api
