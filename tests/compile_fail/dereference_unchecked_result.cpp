// CompileFail.DereferenceUncheckedResult (docs/verifier.md, rule R2): an acquiring
// kfunc's result may be NULL; a maybe_ref has no operator-> until it is checked and
// taken.
// Expected: "base operand of '->' has non-pointer type maybe_ref"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg) {
    auto found = typed::bpf_task_from_pid(arg->pid);
    const int pid = found->pid;  // the violation: not checked
    if (found) {
      typed::bpf_task_release(std::move(found).take());
    }
    return pid > 0 ? 0 : 1;
  });
}
