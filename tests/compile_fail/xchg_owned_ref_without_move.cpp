// CompileFail.XchgOwnedRefWithoutMove (docs/verifier.md, rule R10): storing gives the
// reference to the slot; an lvalue owned_ref would stay usable (and releasable) after
// the store.
// Expected: "R2 must be referenced when passed to release function ... (std::move'd)"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg, task_value& v) {
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    if (acquired) {
      owned_ref<task_struct> ref = std::move(acquired).take();
      (void)typed::bpf_kptr_xchg(&v.task, ref);  // the violation: `ref` is not given up
    }
    return 0;
  });
}
