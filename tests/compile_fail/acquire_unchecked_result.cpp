// CompileFail.AcquireUncheckedResult (docs/verifier.md, rule R2): bpf_task_acquire's
// result may be NULL; it cannot be passed to another kfunc before the check.
// Expected: "Possibly NULL pointer passed to trusted arg0"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    auto first = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    (void)typed::bpf_task_acquire(first);  // the violation: `first` is not checked
    if (first) {
      typed::bpf_task_release(std::move(first).take());
    }
    return 0;
  });
}
