// CompileFail.StoreRawPointerIntoSlot: a kptr slot has no setter: only
// bpf_kptr_xchg stores into it (a plain store would bypass the reference).
// Expected: no assignment from task_struct* to kptr<task_struct>
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
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [&map](task_struct* arg) {
    const std::uint32_t key = 0;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v != nullptr) {
      v->task = arg;  // the violation: a plain store of a raw pointer
    }
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
