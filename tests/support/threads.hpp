// Test support: deterministic hand-offs between a test's threads (no sleeps).
#pragma once

#include <atomic>
#include <thread>

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

}  // namespace tasklife::test
