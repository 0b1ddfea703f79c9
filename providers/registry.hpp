#pragma once
// The providers this process runs, by name. Built from the provider descriptors the app's wiring
// passes in (providers/builtin.hpp lists the shipped ones); the core uses only this interface.

#include <memory>
#include <string_view>
#include <vector>

#include "gateway/config/settings.hpp"
#include "providers/provider.hpp"

namespace segue::providers {

struct descriptor;

class registry {
  public:
    // Throws std::invalid_argument if a provider of that name is already registered.
    void add(std::unique_ptr<provider> p);
    provider* find(std::string_view name) const;
    std::vector<provider*> all() const;

  private:
    std::vector<std::unique_ptr<provider>> providers_;
};

// Builds every provider whose block (settings.providers.<name>) is enabled, with its descriptor's
// factory. Throws std::invalid_argument if a built provider's name differs from its descriptor's.
std::unique_ptr<registry> make_registry(const std::vector<const descriptor*>& descriptors,
                                        const config::settings& settings);

}  // namespace segue::providers
