// The loader of pg_api.hpp.

#define SEGUE_PQ_DEFINING
#include "gateway/store/pg_api.hpp"

#include <dlfcn.h>

#include <atomic>
#include <string>

#include "gateway/store/store.hpp"

namespace segue::store::pg {

namespace {
std::atomic<bool> loaded{false};
}

const pq_functions& pq() {
    // A throwing initializer leaves the static uninitialized: the next call tries again.
    static const pq_functions functions = [] {
        void* lib = ::dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
        if (lib == nullptr) {
            const char* why = ::dlerror();
            throw store_error(std::string("postgres: cannot load libpq.so.5 (Debian package "
                                          "libpq5): ") +
                              (why != nullptr ? why : "unknown error"));
        }
        pq_functions f{};
#define SEGUE_PQ_LOAD(name)                                           \
    f.name = reinterpret_cast<decltype(f.name)>(::dlsym(lib, #name)); \
    if (f.name == nullptr)                                            \
        throw store_error("postgres: libpq.so.5 has no " #name " (libpq 14 or newer needed)");
        SEGUE_PQ_FUNCTIONS(SEGUE_PQ_LOAD)
#undef SEGUE_PQ_LOAD
        loaded.store(true, std::memory_order_release);
        return f;
    }();
    return functions;
}

bool pq_loaded() noexcept {
    return loaded.load(std::memory_order_acquire);
}

}  // namespace segue::store::pg
