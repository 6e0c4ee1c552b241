// CompileFail.ReleaseWithoutMove (docs/verifier.md, rule R9): releasing consumes the
// reference; an lvalue owned_ref would stay usable after the release.
// Expected: "releasing consumes the reference: pass std::move(ref)"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    if (acquired) {
      owned_ref<task_struct> ref = std::move(acquired).take();
      typed::bpf_task_release(ref);  // the violation: not given up with std::move
    }
    return 0;
  });
}
