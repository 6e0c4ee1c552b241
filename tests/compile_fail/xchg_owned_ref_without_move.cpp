// CompileFail.XchgOwnedRefWithoutMove: storing gives the reference to the slot;
// an lvalue owned_ref would stay usable (and releasable) after the store.
// Expected: "R2 must be referenced when passed to release function ... (std::move'd)"
// The result is cast to void: the refusing overload returns void, so `auto r =`
// would add a second error ("'void r' has incomplete type") before the rule's.
#include <cstdint>
#include <tuple>
#include <utility>

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
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [&map](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    auto acquired = typed::bpf_task_acquire(task);
    if (!acquired) {
      return 0;
    }
    owned_ref<task_struct> ref = std::move(acquired).take();
    const std::uint32_t key = 0;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v != nullptr) {
      (void)typed::bpf_kptr_xchg(&v->task, ref);  // the violation: `ref` is not given up
    }
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
