#pragma once
// Test support: run a store unit and wait for its completion.

#include "gateway/store/store.hpp"

namespace segue::test {

// Blocks until the unit's completion ran; rethrows the unit's (or the store's) exception.
void run_sync(store::store& s, bool write, store::store::unit fn);
inline void sync_write(store::store& s, store::store::unit fn) {
    run_sync(s, true, std::move(fn));
}
inline void sync_read(store::store& s, store::store::unit fn) {
    run_sync(s, false, std::move(fn));
}

}  // namespace segue::test
