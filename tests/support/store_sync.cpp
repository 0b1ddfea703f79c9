#include "tests/support/store_sync.hpp"

#include <future>

namespace segue::test {

void run_sync(store::store& s, bool write, store::store::unit fn) {
    std::promise<void> p;
    auto f = p.get_future();
    auto done = [&p](std::exception_ptr e) {
        if (e)
            p.set_exception(e);
        else
            p.set_value();
    };
    if (write)
        s.submit_write(std::move(fn), done);
    else
        s.submit_read(std::move(fn), done);
    f.get();
}

}  // namespace segue::test
