// CompileFail.AcquireUntrustedPointer (docs/verifier.md, rule R5): bpf_task_acquire
// (KF_RCU) needs a trusted or RCU pointer; a slot read outside an RCU section may
// already be freed. A syscall program is sleepable: it has no implicit RCU section.
// Expected: "R1 must be a rcu pointer: a slot read outside an RCU section is untrusted"
#include "case_prelude.hpp"

int main() {
  return run_syscall([](task_value& v) {
    if (const untrusted_ptr<task_struct> seen = read(v.task)) {
      (void)typed::bpf_task_acquire(seen);  // the violation: PTR_UNTRUSTED
    }
    return 0;
  });
}
