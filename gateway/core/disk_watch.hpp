#pragma once
// The disk metrics, sampled every storage.disk_check_interval off the IO threads:
//   segue_disk_free_bytes / segue_disk_size_bytes  the data volume (blob_dir's file system, or
//                                                  the SQLite database's if that has less free)
//   segue_disk_min_free_bytes                      storage.min_free_bytes (uploads get 507 below)
//   segue_blob_bytes / segue_blob_files            the files the store holds (their sizes summed)
//   segue_database_bytes                           SQLite: database + WAL files; PostgreSQL:
//                                                  pg_database_size
// deploy/prometheus/rules.yaml alerts on them before the disk fills.

#include <boost/asio/io_context.hpp>

#include <memory>

namespace segue::config {
struct settings;
}
namespace segue::store {
class db;
}
namespace segue::runtime {
class blocking_pool;
}
namespace segue::metrics {
class registry;
}

namespace segue::core {

class disk_watch {
  public:
    disk_watch(boost::asio::io_context& ioc, store::db& db, runtime::blocking_pool& blocking,
               const config::settings& settings, metrics::registry& metrics);
    ~disk_watch();
    disk_watch(const disk_watch&) = delete;
    disk_watch& operator=(const disk_watch&) = delete;
    void start();  // samples now, then every interval
    void stop();

    struct impl;

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::core
