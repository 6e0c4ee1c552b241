// CompileFail.ReleaseTrustedPointer (docs/verifier.md, rule R3): a tracepoint's
// argument is trusted, not referenced: the program holds no reference to give back.
// Expected: "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    typed::bpf_task_release(trusted_ptr<task_struct>::from_prog_arg(arg));  // the violation
    return 0;
  });
}
