// CompileFail.AcquireNullptr (docs/verifier.md, rules R2 and R15): the typed API answers
// NULL and raw pointers with the verifier's words (task_kfunc_acquire_null,
// task_kfunc_acquire_fp, task_kfunc_release_null, task_kfunc_release_fp).
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_value& v) {
    (void)v;
    (void)typed::bpf_task_acquire(nullptr);  // the violation: NULL
    return 0;
  });
}
