#pragma once
// Runs one store unit and waits for it, on the calling thread: for start-up (before any
// io_context runs) and tests. Never on an IO thread.

#include "gateway/store/store.hpp"

namespace segue::store {

// Submits `fn` (a write or a read) and blocks until its completion ran; rethrows the unit's
// (or the store's) exception.
void run_sync(store& s, bool write, store::unit fn);

}  // namespace segue::store
