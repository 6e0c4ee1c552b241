// CompileFail.IterUnderTemporaryGuard (docs/verifier.md, rule R20): the task iterator
// is KF_RCU_PROTECTED; a temporary rcu_guard ends before the iterator could walk.
// Expected: "a temporary rcu_guard ends before the iterator could walk"
#include "case_prelude.hpp"

int main() {
  return run_syscall([] {
    const task_iter it(task_iter_flavor::all_procs, rcu_guard{});  // the violation
    return 0;
  });
}
