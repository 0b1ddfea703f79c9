#include "gateway/store/open_store.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>

namespace segue::store {

postgres_options postgres_options_of(const config::storage_settings& s) {
    postgres_options o;
    o.url = s.postgres.url;
    o.writers = 1;  // per lane (two lanes): see postgres_options::writers
    o.readers = std::max(1, s.postgres.pool_size - 2 * o.writers);
    o.statement_timeout_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(s.postgres.statement_timeout)
            .count());
    o.connect_wait_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(s.postgres.connect_wait).count());
    return o;
}

std::unique_ptr<store> open_store(const config::storage_settings& s) {
    switch (s.engine) {
        case config::storage_engine::postgres:
            return open_postgres(postgres_options_of(s));
        case config::storage_engine::sqlite:
            break;
    }
    std::filesystem::create_directories(std::filesystem::absolute(s.sqlite_path).parent_path());
    sqlite_options so;
    so.path = s.sqlite_path;
    so.synchronous_full = s.sync_full;
    so.writer_cache_bytes = s.cache_size;
    so.lock_wait_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(s.sqlite_lock_wait).count());
    return open_sqlite(so);
}

}  // namespace segue::store
