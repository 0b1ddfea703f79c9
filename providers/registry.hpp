#pragma once
// Provider plugins by name. The list of providers is explicit, in registry.cpp.

#include <memory>
#include <string_view>
#include <vector>

#include "gateway/config/settings.hpp"
#include "providers/provider.hpp"

namespace segue::providers {

class registry {
  public:
    // Throws std::invalid_argument if a provider of that name is already registered.
    void add(std::unique_ptr<provider> p);
    provider* find(std::string_view name) const;
    std::vector<provider*> all() const;

  private:
    std::vector<std::unique_ptr<provider>> providers_;
};

// Builds every provider enabled in the settings.
std::unique_ptr<registry> make_registry(const config::settings& settings);

}  // namespace segue::providers
