#pragma once
// A one-shot, thread-safe yes/no that coroutines can wait for: whether a store commit became
// durable. The create opens it from the store's syncer thread (store::early_commit::settled);
// the submit job it handed off meanwhile waits on it before the provider's request is complete
// (net::request::hold_last_byte), so the call goes out while the disk syncs and nothing is
// started upstream for a task a crash could undo.

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <mutex>
#include <optional>
#include <vector>

namespace segue::util {

class durable_gate {
  public:
    durable_gate() = default;
    durable_gate(const durable_gate&) = delete;
    durable_gate& operator=(const durable_gate&) = delete;
    // A gate never opened says no to anyone still waiting: a waiter never hangs.
    ~durable_gate();

    // The first call decides; later ones change nothing. Any thread; wakes every waiter on its
    // own executor.
    void open(bool durable);
    // Resumes on the caller's executor with what open() said (at once if it has).
    boost::asio::awaitable<bool> wait();
    // What open() said, if it has been called.
    std::optional<bool> state() const;

  private:
    mutable std::mutex m_;
    std::optional<bool> state_;
    std::vector<std::function<void(bool)>> waiters_;
};

}  // namespace segue::util
