#include "tests/support/store_sync.hpp"

#include "gateway/store/run_sync.hpp"

namespace segue::test {

void run_sync(store::store& s, bool write, store::store::unit fn) {
    store::run_sync(s, write, std::move(fn));
}

}  // namespace segue::test
