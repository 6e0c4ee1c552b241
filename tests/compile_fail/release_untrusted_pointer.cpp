// CompileFail.ReleaseUntrustedPointer (docs/verifier.md, rule R4): a slot read outside
// any RCU section (a syscall program has no implicit one) is untrusted: only comparable
// with NULL.
// Expected: "R1 must be referenced or trusted"
#include "case_prelude.hpp"

int main() {
  return run_syscall([](task_value& v) {
    const untrusted_ptr<task_struct> seen = read(v.task);
    typed::bpf_task_release(seen);  // the violation: PTR_UNTRUSTED
    return 0;
  });
}
