// A simulated thread's share of the OS thread's thread-local state.
//
// What it is
//   The explorer runs every simulated thread of an execution on one OS thread, so
//   the thread-local state tasklife keeps per thread must be switched with them:
//   `current` (current.hpp), the RCU layer's callback nesting (src/rcu.cpp) and
//   the typed API's live guards (src/typed.cpp). Each owner exposes a swap of its
//   state with a saved copy; the explorer swaps at every switch. The event log
//   asks the explorer for the running simulated thread's number (task_event::thread).
//
// Lifetime
//   A saved copy belongs to its simulated thread.
//
// Memory ordering
//   None: thread-local.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tasklife::detail {

// src/rcu.cpp's per-thread state, as opaque bytes (checked there by static_assert).
struct rcu_thread_state {
  alignas(8) unsigned char bytes[32] = {};
};
void swap_rcu_thread_state(rcu_thread_state& other) noexcept;

// src/typed.cpp's per-thread state.
struct typed_thread_state {
  std::uint64_t next_guard = 1;
  std::vector<std::uint64_t> live_guards;
};
void swap_typed_thread_state(typed_thread_state& other) noexcept;

class sim_thread;
// 1 + the simulated thread's index in its execution (src/explore/explore.cpp).
std::uint32_t sim_thread_number(const sim_thread& t) noexcept;

}  // namespace tasklife::detail
