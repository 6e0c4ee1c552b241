// CompileFail.IterProcThreadsOfRcuPointer (docs/verifier.md, rule R22): the task of
// BPF_TASK_ITER_PROC_THREADS is a trusted argument; an RCU pointer is not enough.
// Expected: "R2 must be referenced or trusted"
#include "case_prelude.hpp"

int main() {
  return run_syscall([](task_value& v) {
    const rcu_guard guard;
    const rcu_ptr<task_struct> stored = read(v.task, guard);
    if (const auto checked = stored.check()) {
      const task_iter it(checked, guard);  // the violation
    }
    return 0;
  });
}
