// What the kfunc examples share: a check that prints its outcome and counts
// failures, two counter readers, the clean-shutdown check each example ends its
// kernels with, and the verdict main returns to ctest. Nothing here is tasklife
// behaviour: everything an example demonstrates is in the example itself.
#pragma once

#include <string_view>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

namespace example {

inline int failures = 0;

// Prints "[ok] what" or "[FAIL] what"; failures make main's exit code non-zero.
inline void check(bool ok, std::string_view what) {
  fmt::print("  [{}] {}\n", ok ? "ok" : "FAIL", what);
  failures += ok ? 0 : 1;
}

inline unsigned usage(const tasklife::task_struct* t) {
  return tasklife::refcount_read(&t->usage);
}
inline unsigned rcu_users(const tasklife::task_struct* t) {
  return tasklife::refcount_read(&t->rcu_users);
}

// Lets the pending grace periods run, tears the kernel down and checks that every
// task it forked was freed exactly once.
inline void check_clean_shutdown(tasklife::kernel& k) {
  k.rcu().rcu_barrier();
  const bool clean = k.shutdown().empty() && k.stats().forked == k.stats().freed;
  check(clean, "shutdown: no leak, every task freed once");
}

// main's result: 0 when every check passed.
inline int verdict() {
  fmt::print("{}\n", failures == 0 ? "all checks passed" : "CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}

}  // namespace example
