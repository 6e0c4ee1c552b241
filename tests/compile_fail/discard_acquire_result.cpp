// CompileFail.DiscardAcquireResult (docs/verifier.md, rule R1): an acquiring kfunc's
// result is a reference; discarding it leaks it ([[nodiscard]], an error under
// -Werror=unused-result).
// Expected: "ignoring return value of ... bpf_task_acquire ... nodiscard"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    typed::bpf_task_acquire(task);  // the violation: the reference is dropped on the floor
    return 0;
  });
}
