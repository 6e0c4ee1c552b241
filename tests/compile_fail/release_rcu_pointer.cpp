// CompileFail.ReleaseRcuPointer: a slot read under RCU is an RCU pointer; the
// reference belongs to the slot, not to the program.
// Expected: "R1 must be referenced or trusted"
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
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [&map](task_struct*) {
    const std::uint32_t key = 0;
    const rcu_guard guard;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v != nullptr) {
      const rcu_ptr<task_struct> stored = read(v->task, guard);
      if (stored) {
        typed::bpf_task_release(stored);  // the violation: MEM_RCU, not referenced
      }
    }
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
