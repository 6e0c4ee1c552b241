// CompileFail.AcquireTaskFreeArg: the lsm/task_free argument is trusted but not
// RCU-safe: its rcu_users is already 0, a new reference would outlive the free.
// Expected: "R1 must be a rcu pointer: the lsm/task_free argument is not RCU-safe"
// The result is cast to void: the refusing overload returns void, so `auto r =`
// would add a second error ("'void r' has incomplete type") before the rule's.
#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::lsm, "lsm/task_free", [](task_struct* arg) {
    const auto dying = task_free_arg<task_struct>::from_prog_arg(arg);
    (void)typed::bpf_task_acquire(dying);  // the violation: not RCU-safe
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
