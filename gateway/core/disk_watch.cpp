#include "gateway/core/disk_watch.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <filesystem>

#include "gateway/config/settings.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/db.hpp"
#include "gateway/store/disk.hpp"

namespace segue::core {

namespace asio = boost::asio;
using asio::awaitable;

struct disk_watch::impl : std::enable_shared_from_this<impl> {
    impl(asio::io_context& ioc, store::db& db, runtime::blocking_pool& blocking,
         const config::settings& s, metrics::registry& m)
        : ioc(ioc),
          db(db),
          blocking(blocking),
          settings(s),
          timer(ioc),
          free_bytes(m.make_gauge("segue_disk_free_bytes",
                                  "Bytes free on the data volume (the fuller of blob_dir's and "
                                  "the SQLite database's file systems).")),
          size_bytes(m.make_gauge("segue_disk_size_bytes", "Size of the data volume in bytes.")),
          min_free(m.make_gauge("segue_disk_min_free_bytes",
                                "storage.min_free_bytes: below it uploads are refused (507).")),
          blob_bytes(m.make_gauge("segue_blob_bytes",
                                  "Bytes of the files Segue holds (uploads and outputs).")),
          blob_files(m.make_gauge("segue_blob_files", "Files Segue holds.")),
          database_bytes(m.make_gauge("segue_database_bytes",
                                      "Size of the database (SQLite: database and WAL files; "
                                      "PostgreSQL: pg_database_size).")) {
        min_free.set(static_cast<double>(s.storage.min_free_bytes));
    }

    awaitable<void> sample() {
        const auto& st = settings.storage;
        const bool sqlite = st.engine == config::storage_engine::sqlite;
        std::vector<std::string> paths{st.blob_dir};
        if (sqlite)
            paths.push_back(std::filesystem::path(st.sqlite_path).parent_path().string());
        std::optional<store::volume_space> v;
        std::uint64_t wal = 0;
        co_await blocking.run([&] {
            v = store::tightest_volume(paths);
            if (sqlite)
                wal = store::file_size(st.sqlite_path + "-wal");
        });
        if (v) {
            free_bytes.set(static_cast<double>(v->available));
            size_bytes.set(static_cast<double>(v->size));
        }
        store::storage_totals t;
        co_await db.read([&](store::transaction& tx) { t = tx.totals(); });
        blob_bytes.set(static_cast<double>(t.file_bytes));
        blob_files.set(static_cast<double>(t.files));
        database_bytes.set(static_cast<double>(t.database_bytes + static_cast<std::int64_t>(wal)));
    }

    awaitable<void> loop() {
        auto self = shared_from_this();
        while (!stopped) {
            try {
                co_await sample();
            } catch (const std::exception& e) {
                log::warn("disk metrics not measured", {{"error", e.what()}});
            }
            timer.expires_after(settings.storage.disk_check_interval);
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    asio::io_context& ioc;
    store::db& db;
    runtime::blocking_pool& blocking;
    const config::settings& settings;
    asio::steady_timer timer;
    std::atomic<bool> stopped{false};
    metrics::gauge& free_bytes;
    metrics::gauge& size_bytes;
    metrics::gauge& min_free;
    metrics::gauge& blob_bytes;
    metrics::gauge& blob_files;
    metrics::gauge& database_bytes;
};

disk_watch::disk_watch(asio::io_context& ioc, store::db& db, runtime::blocking_pool& blocking,
                       const config::settings& settings, metrics::registry& metrics)
    : impl_(std::make_shared<impl>(ioc, db, blocking, settings, metrics)) {}

// A loop still suspended holds its state and ends with its io_context; nothing is posted to
// a context that may be gone.
disk_watch::~disk_watch() {
    impl_->stopped = true;
}

void disk_watch::start() {
    asio::co_spawn(impl_->ioc, impl_->loop(), asio::detached);
}

void disk_watch::stop() {
    impl_->stopped = true;
    asio::post(impl_->ioc, [i = impl_] { i->timer.cancel(); });
}

}  // namespace segue::core
