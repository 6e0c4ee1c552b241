// CompileFail.IterProcThreadsUnderTemporaryGuard (docs/verifier.md, rule R20): the
// PROC_THREADS constructors refuse a temporary rcu_guard too; it would end before
// the iterator could walk.
// Expected: "a temporary rcu_guard ends before the iterator could walk"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    const trusted_ptr<task_struct> task = trusted_ptr<task_struct>::from_prog_arg(arg);
    const task_iter it(task, rcu_guard{});  // the violation
    return 0;
  });
}
