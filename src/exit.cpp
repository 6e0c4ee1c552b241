// The lifecycle's end (kernel/exit.c, kernel/sched/core.c): do_exit and
// exit_notify, the final switch, the parent's reap, release_task, and the
// grace period that rcu_users reaching 0 starts.
#include <cstdint>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>

#include "event_log.hpp"
#include "task_internal.hpp"

namespace tasklife {

// ---- do_exit ----------------------------------------------------------------------------------

void kernel::do_exit(task_struct* t, int code, std::source_location where) {
  detail::sched_point(sched_op::lifecycle, t, "do_exit");  // before the check: see task.cpp
  if (!detail::check_task(t, "do_exit", where)) {
    return;
  }
  // Release: the exit is published to whoever later reads flags with acquire
  // (forget_children's test of the reaper, retire).
  const unsigned old_flags = t->flags.fetch_or(PF_EXITING, std::memory_order_acq_rel);
  if ((old_flags & PF_EXITING) != 0) {
    detail::report_contract_violation(
        contract_kind::invalid_state, "kernel", "do_exit", detail::describe_task(t),
        fmt::format("do_exit() on task '{}' (pid {}) of kernel '{}', which is already exiting",
                    t->comm, t->pid, name()),
        where);
    return;
  }
  t->exit_code = code;
  detail::kernel_access::record_now(*this, t, task_event_kind::exit, {}, where);
  sched_process_exit_.fire(t);
  exit_notify(t, where);
  // do_task_dead: the last thing do_exit does; the final switch follows. Release
  // pairs with the acquire in finish_task_switch.
  t->state.store(TASK_DEAD, std::memory_order_release);
  detail::kernel_access::record_now(*this, t, task_event_kind::task_dead, {}, where);
}

void kernel::forget_children(task_struct* t) {
  // find_new_reaper: the init of the *exiting parent's* namespace, unless that is
  // the one exiting (a child that is pid 1 of its own new namespace must not be
  // handed to itself). Without a reaper the orphan has no parent; anyone may reap it.
  task_struct* reaper = detail::creation_ns(t)->child_reaper();
  if (reaper == t ||
      (reaper != nullptr && (reaper->flags.load(std::memory_order_acquire) & PF_EXITING) != 0)) {
    reaper = nullptr;
  }
  while (task_struct* child = t->priv.children) {
    detail::unlink_child(child);
    if (reaper != nullptr) {
      detail::link_child(reaper, child);
    }
  }
}

void kernel::exit_notify(task_struct* t, std::source_location where) {
  bool autoreap = false;
  {
    const detail::lock_guard lock(tasklist_lock_);
    forget_children(t);
    autoreap = t->priv.autoreap;
    // Release: pairs with the acquire CAS in wait_task_zombie and the acquire load
    // in retire.
    t->exit_state.store(autoreap ? EXIT_DEAD : EXIT_ZOMBIE, std::memory_order_release);
  }
  pid_namespace* ns = detail::creation_ns(t);
  if (ns->child_reaper() == t) {
    ns->set_child_reaper(nullptr);
  }
  if (autoreap) {
    detail::kernel_access::record_now(*this, t, task_event_kind::autoreap, {}, where);
    release_task(t, where);  // while the task still runs: it is unhashed now
  } else {
    detail::kernel_access::record_now(*this, t, task_event_kind::zombie, {}, where);
  }
}

// ---- the final switch and the reap ---------------------------------------------------------

void kernel::finish_task_switch(task_struct* prev, std::source_location where) {
  detail::sched_point(sched_op::lifecycle, prev, "finish_task_switch");
  if (!detail::check_task(prev, "finish_task_switch", where)) {
    return;
  }
  // Acquire pairs with the release of TASK_DEAD in do_exit.
  if (prev->state.load(std::memory_order_acquire) != TASK_DEAD) {
    detail::report_contract_violation(
        contract_kind::invalid_state, "kernel", "finish_task_switch", detail::describe_task(prev),
        fmt::format("finish_task_switch() away from task '{}' (pid {}) of kernel '{}', which is "
                    "not TASK_DEAD: only a dead task's final switch drops its rcu_users",
                    prev->comm, prev->pid, name()),
        where);
    return;
  }
  // acq_rel: one final switch wins; it pairs with the other callers' exchange.
  if (prev->priv.final_switch_done.exchange(true, std::memory_order_acq_rel)) {
    detail::report_contract_violation(
        contract_kind::double_release, "kernel", "finish_task_switch", detail::describe_task(prev),
        fmt::format("a second final finish_task_switch() away from dead task '{}' (pid {})",
                    prev->comm, prev->pid),
        where);
    return;
  }
  detail::trace_event(prev, task_event_kind::final_switch, refcount_read(&prev->usage),
                      refcount_read(&prev->rcu_users) - 1U, {}, where);
  detail::put_rcu_user_as(prev, holder_role::scheduler, where);  // the scheduler's drop
}

bool kernel::claim_zombie(task_struct* p) noexcept {
  int expected = EXIT_ZOMBIE;
  // Only one waiter wins EXIT_ZOMBIE -> EXIT_DEAD. Acquire pairs with exit_notify.
  return p->exit_state.compare_exchange_strong(expected, EXIT_DEAD, std::memory_order_acq_rel,
                                               std::memory_order_acquire);
}

bool kernel::wait_task_zombie(task_struct* p, std::source_location where) {
  detail::sched_point(sched_op::lifecycle, p, "wait_task_zombie");
  if (!detail::check_task(p, "wait_task_zombie", where)) {
    return false;
  }
  if (!claim_zombie(p)) {
    return false;
  }
  detail::kernel_access::record_now(*this, p, task_event_kind::reap, {}, where);
  release_task(p, where);
  return true;
}

bool kernel::retire(task_struct* t, int code, std::source_location where) {
  if (!detail::check_task(t, "retire", where)) {
    return false;
  }
  // Acquire pairs with do_exit's fetch_or: a task already exiting is refused there.
  if ((t->flags.load(std::memory_order_acquire) & PF_EXITING) != 0) {
    do_exit(t, code, where);  // reports the second exit
    return false;
  }
  do_exit(t, code, where);
  // The reap is claimed before the final switch, while the reaper's rcu_users
  // reference still keeps the task: after the switch an autoreaped task's last
  // reference is gone, and a zombie could be reaped by someone else and freed
  // after a grace period. Whoever wins the claim (here, or a concurrent
  // wait_task_zombie) does the release; the events keep the zombie order
  // (final switch, then reap).
  const bool reap = claim_zombie(t);
  finish_task_switch(t, where);
  if (reap) {
    detail::kernel_access::record_now(*this, t, task_event_kind::reap, {}, where);
    release_task(t, where);
  }
  return true;
}

void kernel::release_task(task_struct* p, std::source_location where) {
  // Announced before the lock: the explorer never switches threads under one.
  detail::sched_point(sched_op::pid_unhash, init_ns_, "release_task: unhash");
  {
    // __exit_signal -> __unhash_process: detach from every pid level and the
    // family, under tasklist_lock. After this no lookup can newly find p.
    const detail::lock_guard lock(tasklist_lock_);
    detail::unlink_child(p);
    for (const upid& u : p->priv.numbers) {
      u.ns->unhash(u.nr, p);
    }
    // detach_pid cleared thread_pid: no number, no namespace any more. Release
    // pairs with the acquire in task_pid_nr_ns / task_active_pid_ns.
    p->priv.pid_detached.store(true, std::memory_order_release);
  }
  for (const upid& u : p->priv.numbers) {
    u.ns->free_nr(u.nr);  // free_pid: the number may be handed out again right away
  }
  detail::kernel_access::record_now(*this, p, task_event_kind::unhash, {}, where);
  // Only now the reaper's rcu_users drop: the unhash always comes first.
  detail::trace_event(p, task_event_kind::rcu_user_put, refcount_read(&p->usage),
                      refcount_read(&p->rcu_users) - 1U, {}, where);
  detail::put_rcu_user_as(p, holder_role::reaper, where);
}

// ---- the grace period (put_task_struct_rcu_user, delayed_put_task_struct) -----------------

namespace {
// What the union leaves in the previous tail's rcu_users: the low half of the next
// head's address in the kernel. tasklife writes a value of that kind (non-zero,
// never a plausible small count) computed from the task's id instead of its real
// address, so that it is the same in every run: the explorer replays executions
// and compares them, and a test's outcome must not depend on where malloc put a
// task. It stays below REFCOUNT_MAX, so incrementing it does not saturate.
int union_pointer_bits(const task_struct* next) noexcept {
  return static_cast<int>(0x40000000U |
                          ((static_cast<std::uint32_t>(next->priv.id) << 6U) & 0x3fffffc0U));
}
}  // namespace

void kernel::on_rcu_users_zero(task_struct* t, std::source_location where) {
  rcu_users_zero_.fetch_add(1, std::memory_order_relaxed);
  if constexpr (contract_checks_enabled) {
    // Relaxed: the exchange itself decides who saw 0 first; it orders nothing.
    if (t->priv.rcu_users_zero_seen.exchange(true, std::memory_order_relaxed)) {
      detail::report_contract_violation(
          contract_kind::over_release, "task", "put_task_struct_rcu_user", detail::describe_task(t),
          fmt::format("rcu_users of task '{}' (pid {}) reached 0 a second time", t->comm, t->pid),
          where);
      return;
    }
  }
  detail::kernel_access::record_now(*this, t, task_event_kind::gp_requested, {}, where);
  if (rcu_users_in_union(config_.profile)) {
    // v5.4 .. v6.3: `union { refcount_t rcu_users; struct rcu_head rcu; }`. call_rcu
    // writes the head: its `next` (whose low half is rcu_users' storage) starts
    // NULL, and becomes the address of the next head queued behind it on the same
    // CPU's callback list. tasklife models that list with one tail per kernel:
    // queuing this task's callback writes this head's address into the previous
    // tail's rcu_users, which is how "rcu_users became non-zero again" on a dead
    // task (docs/kernel.md §4).
    const detail::lock_guard lock(union_mutex_);
    refcount_set(&t->rcu_users, 0);  // head->next = NULL
    if (union_tail_ != nullptr) {
      refcount_set(&union_tail_->rcu_users, union_pointer_bits(t));
    }
    union_tail_ = t;
  }
  rcu_->call_rcu(&t->rcu, &delayed_put_task_struct, where);
}

void kernel::on_delayed_put(task_struct* t) {
  if (rcu_users_in_union(config_.profile)) {
    const detail::lock_guard lock(union_mutex_);
    if (union_tail_ == t) {
      union_tail_ = nullptr;  // the head leaves the list before the task can be freed
    }
  }
  gp_elapsed_.fetch_add(1, std::memory_order_relaxed);
  detail::kernel_access::record_now(*this, t, task_event_kind::gp_elapsed, {},
                                    std::source_location::current());
  sched_process_free_.fire(t);
}

}  // namespace tasklife
