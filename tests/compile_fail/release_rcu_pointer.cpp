// CompileFail.ReleaseRcuPointer (docs/verifier.md, rule R4): a slot read under RCU is
// an RCU pointer; the reference belongs to the slot, not to the program.
// Expected: "R1 must be referenced or trusted"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_value& v) {
    const rcu_guard guard;
    const rcu_ptr<task_struct> stored = read(v.task, guard);
    if (stored) {
      typed::bpf_task_release(stored);  // the violation: MEM_RCU, not referenced
    }
    return 0;
  });
}
