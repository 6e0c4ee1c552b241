// CompileFail.ReturnRcuPtrByCopy (docs/verifier.md, rule R14): an rcu_ptr is valid only
// inside its guard's scope; it cannot be copied (or moved) out of it.
// Expected: "use of deleted function rcu_ptr(const rcu_ptr&)"
#include "case_prelude.hpp"

namespace {
rcu_ptr<task_struct> peek(const kptr<task_struct>& slot) {
  const rcu_guard guard;
  rcu_ptr<task_struct> stored = read(slot, guard);
  return stored;  // the violation: a copy that outlives `guard`
}
}  // namespace

int main() {
  return run_syscall([](task_value& v) {
    const rcu_ptr<task_struct> stored = peek(v.task);
    return stored ? 1 : 0;
  });
}
