// CompileFail.XchgTrustedPointer (docs/verifier.md, rule R10): what goes into a slot is
// a reference the program gives up; a trusted pointer is not one.
// Expected: "R2 must be referenced when passed to release function"
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg, task_value& v) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    (void)typed::bpf_kptr_xchg(&v.task, task);  // the violation: not a reference
    return 0;
  });
}
