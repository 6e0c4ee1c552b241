// CompileFail.AcquireUncheckedRcuPointer (docs/verifier.md, rule R5): a slot read
// under RCU is MEM_RCU | PTR_MAYBE_NULL; check_kfunc_args refuses a possibly NULL
// pointer before it looks at trust, so bpf_task_acquire needs the NULL check first
// (rcu_ptr::check()), as the kernel's task_kfunc_success.c programs write it.
// Expected: "Possibly NULL pointer passed to trusted arg0"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_value& v) {
    const rcu_guard guard;
    const rcu_ptr<task_struct> stored = read(v.task, guard);
    (void)typed::bpf_task_acquire(stored);  // the violation: no NULL check
    return 0;
  });
}
