// CompileFail.ReleaseUncheckedResult (docs/verifier.md, rule R2): bpf_task_acquire may
// return NULL; the verifier wants the check before the result goes anywhere, release
// included.
// Expected: "Possibly NULL pointer passed to trusted arg0"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    typed::bpf_task_release(acquired);  // the violation: a maybe_ref, not checked
    return 0;
  });
}
