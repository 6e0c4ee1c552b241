// CompileFail.ControlCompiles: a correct typed program, using every type and
// every kfunc of typed.hpp as the rules allow. It must compile: the harness
// can pass a good file, so the other cases fail for their one violation only.
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

  // tp_btf/task_newtask: acquire the trusted argument, stash it, take it back, release.
  bpf_prog stash(k, prog_type::tracing, "tp_btf/task_newtask", [&map](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    auto acquired = typed::bpf_task_acquire(task);
    if (!acquired) {
      return 0;
    }
    owned_ref<task_struct> ref = std::move(acquired).take();
    auto again = typed::bpf_task_acquire(ref);  // a referenced pointer may be acquired
    if (again) {
      typed::bpf_task_release(std::move(again).take());
    }
    const std::uint32_t key = 0;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v == nullptr) {
      typed::bpf_task_release(std::move(ref));
      return 0;
    }
    auto old = typed::bpf_kptr_xchg(&v->task, std::move(ref));
    if (old) {
      typed::bpf_task_release(std::move(old).take());
    }
    {
      const rcu_guard guard;
      const rcu_ptr<task_struct> stored = read(v->task, guard);
      if (stored && stored->pid > 0) {
        auto pinned = typed::bpf_task_acquire(stored);
        if (pinned) {
          typed::bpf_task_release(std::move(pinned).take());
        }
      }
    }
    auto back = typed::bpf_kptr_xchg(&v->task, nullptr);
    if (back) {
      typed::bpf_task_release(std::move(back).take());
    }
    return 0;
  });
  (void)stash.run(prog, prog);

  // syscall: look a task up by pid; read current; compare a slot read outside RCU with NULL.
  bpf_prog lookup(k, prog_type::syscall, "syscall", [](task_struct*) {
    const trusted_ptr<task_struct> self = typed::bpf_get_current_task_btf();
    auto found = typed::bpf_task_from_pid(self->pid);
    if (found) {
      owned_ref<task_struct> ref = std::move(found).take();
      const bool same = ref->pid == self->pid && ref.trusted().get() == self.get();
      typed::bpf_task_release(std::move(ref));
      if (!same) {
        return 1;
      }
    }
    auto by_vpid = typed::bpf_task_from_vpid(self->pid);
    if (by_vpid) {
      typed::bpf_task_release(std::move(by_vpid).take());
    }
    auto* obj = bpf_obj_new<task_value>();
    const untrusted_ptr<task_struct> seen = read(obj->task);
    const bool empty = !seen;
    bpf_obj_drop(obj);
    return empty ? 0 : 1;
  });
  (void)lookup.run(prog);

  // lsm/task_free: the argument may be read, nothing more.
  bpf_prog task_free(k, prog_type::lsm, "lsm/task_free", [](task_struct* arg) {
    const auto dying = task_free_arg<task_struct>::from_prog_arg(arg);
    return dying->pid > 0 ? 0 : 1;
  });
  (void)task_free.run(prog, prog);
  return 0;
}
