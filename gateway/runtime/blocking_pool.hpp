#pragma once
// Threads for work that blocks (file I/O, audio processing, DNS): IO threads hand it over and
// resume, on their own executor, when it is done.

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>

namespace segue::runtime {

class blocking_pool {
  public:
    explicit blocking_pool(int threads);
    ~blocking_pool();
    blocking_pool(const blocking_pool&) = delete;
    blocking_pool& operator=(const blocking_pool&) = delete;

    // Runs `fn` on a pool thread; the awaiting coroutine resumes on its own executor.
    // An exception thrown by `fn` is rethrown in the coroutine.
    boost::asio::awaitable<void> run(std::function<void()> fn);
    // Waits for queued work, then joins the threads.
    void stop();

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace segue::runtime
