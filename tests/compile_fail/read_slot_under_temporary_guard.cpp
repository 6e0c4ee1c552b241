// CompileFail.ReadSlotUnderTemporaryGuard (docs/verifier.md, rule R14): a temporary
// rcu_guard unlocks at the end of the full expression, before the RCU pointer could be
// used.
// Expected: "a temporary rcu_guard ends before the pointer could be used"
#include "case_prelude.hpp"

int main() {
  return run_syscall([](task_value& v) {
    read(v.task, rcu_guard{});  // the violation: the guard is a temporary
    return 0;
  });
}
