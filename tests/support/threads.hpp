// Test support: deterministic hand-offs between a test's threads (no sleeps).
#pragma once

#include <atomic>
#include <functional>
#include <thread>
#include <utility>

#include <tasklife/rcu.hpp>

namespace tasklife::test {

// Waits (yielding) until `phase` has reached `at_least`; acquire pairs with the
// release store that advanced it.
inline void wait_for(const std::atomic<int>& phase, int at_least) {
  while (phase.load(std::memory_order_acquire) < at_least) {
    std::this_thread::yield();
  }
}

// Spins (yielding) for a while: gives a broken grace period the chance to end
// early. It never decides a test's outcome on its own.
inline void give_others_a_chance() {
  for (int i = 0; i < 2000; ++i) {
    std::this_thread::yield();
  }
}

// Holds a read-side critical section of `domain` open on its own thread until
// release(): no grace period of the domain can end meanwhile. The constructor
// returns once the thread is inside. Before it leaves the section, the thread
// runs `last` (if given): what it sees there, it sees inside the section.
class rcu_reader_hold {
 public:
  explicit rcu_reader_hold(rcu_domain& domain, std::function<void()> last = {})
      : last_(std::move(last)), thread_([this, &domain] {
          const rcu_thread_registration reg(domain);
          const rcu_read_guard guard(domain);
          inside_.store(true, std::memory_order_release);
          while (!release_.load(std::memory_order_acquire)) {
            std::this_thread::yield();
          }
          if (last_) {
            last_();
          }
        }) {
    while (!inside_.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
  }
  ~rcu_reader_hold() { release(); }
  rcu_reader_hold(const rcu_reader_hold&) = delete;
  rcu_reader_hold& operator=(const rcu_reader_hold&) = delete;
  // Lets the reader run `last` and leave its section; returns when it has.
  void release() {
    release_.store(true, std::memory_order_release);
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  std::function<void()> last_;
  std::atomic<bool> inside_{false};
  std::atomic<bool> release_{false};
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace tasklife::test
