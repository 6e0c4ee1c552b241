// CompileFail.AcquireUntrustedPointer: bpf_task_acquire (KF_RCU) needs a trusted
// or RCU pointer; a slot read outside an RCU section may already be freed.
// Expected: "R1 must be a rcu pointer: a slot read outside an RCU section is untrusted"
// The result is cast to void: the refusing overload returns void, so `auto r =`
// would add a second error ("'void r' has incomplete type") before the rule's.
#include <tuple>

#include <tasklife/kernel.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::syscall, "syscall", [](task_struct*) {
    auto* obj = bpf_obj_new<task_value>();
    const untrusted_ptr<task_struct> seen = read(obj->task);
    if (seen) {
      (void)typed::bpf_task_acquire(seen);  // the violation: PTR_UNTRUSTED
    }
    bpf_obj_drop(obj);
    return 0;
  });
  (void)p.run(prog);
  return 0;
}
