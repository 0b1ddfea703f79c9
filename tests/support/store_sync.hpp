#pragma once
// Test support: run a store unit and wait for its completion.

#include "gateway/store/run_sync.hpp"
#include "gateway/store/store.hpp"

namespace segue::test {

using store::run_sync;
inline void sync_write(store::store& s, store::store::unit fn) {
    run_sync(s, true, std::move(fn));
}
inline void sync_read(store::store& s, store::store::unit fn) {
    run_sync(s, false, std::move(fn));
}

}  // namespace segue::test
