// CompileFail.ReadSlotUnderTemporaryGuard: a temporary rcu_guard unlocks at the
// end of the full expression, before the RCU pointer could be used.
// Expected: "a temporary rcu_guard ends before the pointer could be used"
// A bare statement: the refusing overload returns void, so `auto p =` would add
// a second error ("'void p' has incomplete type") before the rule's.
#include <cstdint>
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
  bpf_array_map<task_value> map(k, 1);
  bpf_prog p(k, prog_type::syscall, "syscall", [&map](task_struct*) {
    const std::uint32_t key = 0;
    const rcu_guard lookup_guard;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v != nullptr) {
      read(v->task, rcu_guard{});  // the violation: the guard is a temporary
    }
    return 0;
  });
  (void)p.run(prog);
  return 0;
}
