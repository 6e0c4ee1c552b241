// CompileFail.StoreRawPointerIntoSlot (docs/verifier.md, rule R11): a kptr slot has no
// setter: only bpf_kptr_xchg stores into it (a plain store would bypass the reference).
// Expected: no assignment from task_struct* to kptr<task_struct>
#include "case_prelude.hpp"

int main() {
  return run_tracing([](task_struct* arg, task_value& v) {
    v.task = arg;  // the violation: a plain store of a raw pointer
    return 0;
  });
}
