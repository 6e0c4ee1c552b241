// CompileFail.WalkUncheckedRcuPointer (docs/verifier.md, rule R19): a slot read
// under RCU is MEM_RCU | PTR_MAYBE_NULL; its fields are loaded only after the NULL
// test, so btf_walk takes the checked form.
// Expected: "invalid mem access: an rcu_ptr is MEM_RCU | PTR_MAYBE_NULL"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_value& v) {
    const rcu_guard guard;
    const rcu_ptr<task_struct> stored = read(v.task, guard);
    typed::btf_walk(stored, &task_struct::group_leader, guard);  // the violation: no NULL test
    return 0;
  });
}
