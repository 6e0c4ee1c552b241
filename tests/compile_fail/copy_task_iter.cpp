// CompileFail.CopyTaskIter (docs/verifier.md, rule R21): an iterator's state is its
// own stack slot; it cannot be copied (two destroys, or a copy walking on after the
// original's destroy).
// Expected: "use of deleted function task_iter(const task_iter&)"
#include "case_prelude.hpp"

int main() {
  return run_syscall([] {
    const rcu_guard guard;
    const task_iter it(task_iter_flavor::all_procs, guard);
    const task_iter copy = it;  // the violation
    return 0;
  });
}
