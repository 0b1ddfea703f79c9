#pragma once
// N IO threads, one io_context each. A connection lives on one context, so its handlers never
// run concurrently (an implicit strand, without a strand's locking), and the contexts share no
// scheduler lock. Context 0 also runs the listener, signals and timers of the whole process.

#include <cstddef>
#include <memory>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace segue::runtime {

class io_pool {
  public:
    explicit io_pool(int threads);
    ~io_pool();
    io_pool(const io_pool&) = delete;
    io_pool& operator=(const io_pool&) = delete;

    std::size_t size() const noexcept { return contexts_.size(); }
    boost::asio::io_context& main() noexcept { return *contexts_.front(); }
    // Round robin, for spreading new connections. Not thread-safe: only the listener (on
    // context 0) calls it.
    boost::asio::io_context& next() noexcept;
    boost::asio::io_context& at(std::size_t i) noexcept { return *contexts_[i]; }

    // Runs every context (the calling thread runs context 0) until stop().
    void run();
    void stop();
    // After run() has returned: destroys every handler the contexts still hold (coroutines
    // suspended for good, e.g. requests cut by the drain deadline), so their frames unwind while
    // what they refer to (server, engine, metrics: owned next to the pool) still exists. The
    // contexts cannot run again. The destructor does the same (every context's handlers before
    // any context is destroyed), but too late for owners destroyed before the pool.
    void shutdown();

  private:
    struct guards;
    std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
    std::unique_ptr<guards> guards_;
    std::size_t next_ = 0;
};

}  // namespace segue::runtime
