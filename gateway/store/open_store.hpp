#pragma once
// Opens the store engine the settings choose (storage.engine): the one place that knows both.

#include <memory>

#include "gateway/config/settings.hpp"
#include "gateway/store/store.hpp"

namespace segue::store {

// SQLite: creates the database's directory. PostgreSQL: connects and migrates (under an
// advisory lock). Throws store_error.
std::unique_ptr<store> open_store(const config::storage_settings& s);

// The PostgreSQL options the settings give (pool split into writers and readers).
postgres_options postgres_options_of(const config::storage_settings& s);

}  // namespace segue::store
