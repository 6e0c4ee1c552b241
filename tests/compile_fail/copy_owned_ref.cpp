// CompileFail.CopyOwnedRef (docs/verifier.md, rule R9): one acquire is one reference; a
// copy would be released twice.
// Expected: "use of deleted function owned_ref(const owned_ref&)"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    if (acquired) {
      owned_ref<task_struct> ref = std::move(acquired).take();
      owned_ref<task_struct> copy = ref;  // the violation: a second owner
      typed::bpf_task_release(std::move(ref));
      typed::bpf_task_release(std::move(copy));
    }
    return 0;
  });
}
