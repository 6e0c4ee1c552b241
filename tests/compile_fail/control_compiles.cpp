// CompileFail.ControlCompiles: correct typed programs, using every type and every
// kfunc of typed.hpp as the rules allow, through every runner and every body form
// of case_prelude.hpp. It must compile: the harness and the prelude can pass a
// good file, so the other cases fail for their one violation only.
#include "case_prelude.hpp"

namespace {

// What the cases do wrong, done right: acquire the trusted argument (and a
// referenced pointer), stash it, read it back under RCU, take it out, release.
int stash_and_take(task_struct* arg, task_value& v) {
  auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
  if (!acquired) {
    return 0;
  }
  owned_ref<task_struct> ref = std::move(acquired).take();
  auto again = typed::bpf_task_acquire(ref);  // a referenced pointer may be acquired
  if (again) {
    typed::bpf_task_release(std::move(again).take());
  }
  auto old = typed::bpf_kptr_xchg(&v.task, std::move(ref));
  if (old) {
    typed::bpf_task_release(std::move(old).take());
  }
  {
    const rcu_guard guard;
    const rcu_ptr<task_struct> stored = read(v.task, guard);
    if (const checked_rcu_ptr<task_struct> checked = stored.check(); checked && checked->pid > 0) {
      auto pinned = typed::bpf_task_acquire(checked);
      if (pinned) {
        typed::bpf_task_release(std::move(pinned).take());
      }
    }
  }
  auto back = typed::bpf_kptr_xchg(&v.task, nullptr);
  if (back) {
    typed::bpf_task_release(std::move(back).take());
  }
  return 0;
}

// Look a task up by pid and by vpid; read current; compare a slot read outside
// RCU with NULL, all a sleepable program may do with it.
int look_up(task_value& v) {
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
  const untrusted_ptr<task_struct> seen = read(v.task);
  return seen ? 1 : 0;
}

}  // namespace

int main() {
  int failed = run_tracing(&stash_and_take);
  failed += run_syscall(&look_up);
  // The argument-only form: a checked pid lookup, released.
  failed += run_tracing([](task_struct* arg) {
    auto found = typed::bpf_task_from_pid(arg->pid);
    if (!found) {
      return 1;
    }
    typed::bpf_task_release(std::move(found).take());
    return 0;
  });
  // The value-only form: an RCU read under a named guard, acquired and released.
  failed += run_tracing([](task_value& v) {
    const rcu_guard guard;
    const rcu_ptr<task_struct> stored = read(v.task, guard);
    if (const auto checked = stored.check()) {  // MEM_RCU | PTR_MAYBE_NULL: test it first
      if (auto pinned = typed::bpf_task_acquire(checked)) {
        typed::bpf_task_release(std::move(pinned).take());
      }
    }
    return 0;
  });
  // lsm/task_free: the argument may be read, nothing more.
  failed += run_task_free([](task_struct* arg) {
    const auto dying = task_free_arg<task_struct>::from_prog_arg(arg);
    return dying->pid > 0 ? 0 : 1;
  });
  // The task iterator: made under a named guard, destroyed by scope; what it
  // yields is checked before it is acquired.
  failed += run_tracing([](task_struct* arg) {
    const rcu_guard guard;
    int seen = 0;
    {
      task_iter all(task_iter_flavor::all_procs, guard);
      while (const rcu_ptr<task_struct> pos = all.next()) {
        if (const auto checked = pos.check()) {
          if (auto pinned = typed::bpf_task_acquire(checked)) {
            typed::bpf_task_release(std::move(pinned).take());
          }
        }
        ++seen;
      }
    }
    task_iter threads(trusted_ptr<task_struct>::from_prog_arg(arg), guard);
    while (const rcu_ptr<task_struct> pos = threads.next()) {
      ++seen;
    }
    return seen > 0 ? 0 : 1;
  });
  // The empty form.
  failed += run_syscall([] { return 0; });
  return failed;
}
