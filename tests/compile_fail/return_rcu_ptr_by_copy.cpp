// CompileFail.ReturnRcuPtrByCopy: an rcu_ptr is valid only inside its guard's
// scope; it cannot be copied (or moved) out of it.
// Expected: "use of deleted function rcu_ptr(const rcu_ptr&)"
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

namespace {
rcu_ptr<task_struct> peek(const kptr<task_struct>& slot) {
  const rcu_guard guard;
  rcu_ptr<task_struct> stored = read(slot, guard);
  return stored;  // the violation: a copy that outlives `guard`
}
}  // namespace

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  auto* obj = bpf_obj_new<task_value>();
  bpf_prog p(k, prog_type::syscall, "syscall", [obj](task_struct*) {
    const rcu_ptr<task_struct> stored = peek(obj->task);
    return stored ? 1 : 0;
  });
  (void)p.run(prog);
  bpf_obj_drop(obj);
  return 0;
}
