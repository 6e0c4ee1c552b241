// CompileFail.AcquireTaskFreeArg (docs/verifier.md, rule R7): the lsm/task_free
// argument is trusted but not RCU-safe: its rcu_users is already 0, a new reference
// would outlive the free.
// Expected: "R1 must be a rcu pointer: the lsm/task_free argument is not RCU-safe"
#include "case_prelude.hpp"

int main() {
  return run_task_free([](task_struct* arg) {
    const auto dying = task_free_arg<task_struct>::from_prog_arg(arg);
    (void)typed::bpf_task_acquire(dying);  // the violation: not RCU-safe
    return 0;
  });
}
