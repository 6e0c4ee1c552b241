// The lifecycle's beginning and end of memory (kernel/fork.c): copy_process,
// the task list, and free_task.
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>

#include "event_log.hpp"
#include "holder_tracker.hpp"
#include "quarantine.hpp"
#include "task_internal.hpp"

namespace tasklife {

// ---- the task list and the family -----------------------------------------------------------

void kernel::list_add(task_struct* t) {
  t->priv.prev = nullptr;
  t->priv.next = tasks_;
  if (tasks_ != nullptr) {
    tasks_->priv.prev = t;
  }
  tasks_ = t;
  t->priv.on_list = true;
}

void kernel::list_del(task_struct* t) {
  if (t->priv.prev != nullptr) {
    t->priv.prev->priv.next = t->priv.next;
  } else if (tasks_ == t) {
    tasks_ = t->priv.next;
  }
  if (t->priv.next != nullptr) {
    t->priv.next->priv.prev = t->priv.prev;
  }
  t->priv.prev = nullptr;
  t->priv.next = nullptr;
  t->priv.on_list = false;
}

namespace detail {

void link_child(task_struct* parent, task_struct* child) {
  child->real_parent = parent;
  for (task_struct* t = child->priv.threads; t != nullptr; t = t->priv.thread_next) {
    t->real_parent = parent;  // forget_original_parent: for_each_thread(p, t)
  }
  child->priv.sibling_prev = nullptr;
  child->priv.sibling_next = parent->priv.children;
  if (parent->priv.children != nullptr) {
    parent->priv.children->priv.sibling_prev = child;
  }
  parent->priv.children = child;
}

void unlink_child(task_struct* child) {
  task_struct* parent = child->real_parent;
  if (parent == nullptr) {
    return;
  }
  if (child->priv.sibling_prev != nullptr) {
    child->priv.sibling_prev->priv.sibling_next = child->priv.sibling_next;
  } else {
    parent->priv.children = child->priv.sibling_next;
  }
  if (child->priv.sibling_next != nullptr) {
    child->priv.sibling_next->priv.sibling_prev = child->priv.sibling_prev;
  }
  child->priv.sibling_prev = nullptr;
  child->priv.sibling_next = nullptr;
  child->real_parent = nullptr;
}

void link_thread(task_struct* leader, task_struct* thread) {
  thread->priv.thread_prev = nullptr;
  thread->priv.thread_next = leader->priv.threads;
  if (leader->priv.threads != nullptr) {
    leader->priv.threads->priv.thread_prev = thread;
  }
  leader->priv.threads = thread;
}

void unlink_thread(task_struct* thread) {
  task_struct* leader = thread->group_leader;
  if (thread->priv.thread_prev != nullptr) {
    thread->priv.thread_prev->priv.thread_next = thread->priv.thread_next;
  } else if (leader->priv.threads == thread) {
    leader->priv.threads = thread->priv.thread_next;
  }
  if (thread->priv.thread_next != nullptr) {
    thread->priv.thread_next->priv.thread_prev = thread->priv.thread_prev;
  }
  thread->priv.thread_prev = nullptr;
  thread->priv.thread_next = nullptr;
}

}  // namespace detail

// ---- copy_process -----------------------------------------------------------------------------

fork_result kernel::fail_fork(task_struct* t, int error, std::source_location where) {
  // delayed_free_task: the counters were never used. With CONFIG_MEMCG the free
  // waits for a grace period (memcg may have looked at the task).
  fork_failures_.fetch_add(1, std::memory_order_relaxed);
  detail::kernel_access::record_now(*this, t, task_event_kind::fork_failed, {}, where);
  if (config_.memcg) {
    rcu_->call_rcu(
        &t->rcu,
        [](rcu_head* rhp) {
          task_struct* dead = detail::task_of_rcu(rhp);
          task_kernel(dead).free_task(dead, std::source_location::current(), true);
        },
        where);
  } else {
    free_task(t, where, true);
  }
  return {nullptr, error};
}

bool kernel::alloc_pids(task_struct* t, pid_namespace* ns) {
  // alloc_pid: a number at every level, from the new task's namespace up to the
  // root; on failure the numbers taken so far are given back.
  t->priv.numbers.resize(ns->level() + 1U);
  for (pid_namespace* p = ns; p != nullptr; p = p->parent()) {
    const pid_t nr = p->alloc_nr();
    if (nr < 0) {
      for (unsigned l = p->level() + 1; l <= ns->level(); ++l) {
        t->priv.numbers[l].ns->free_nr(t->priv.numbers[l].nr);
      }
      t->priv.numbers.clear();
      return false;
    }
    t->priv.numbers[p->level()] = upid{nr, p};
  }
  t->pid = t->priv.numbers[0].nr;
  return true;
}

fork_result kernel::fork(task_struct* parent, const clone_args& args, std::source_location where) {
  if (parent != nullptr && !check_own_task(parent, "fork", where)) {
    return {nullptr, -EINVAL};
  }
  if (args.thread && parent == nullptr) {
    detail::report_contract_violation(contract_kind::null_argument, "kernel", "fork", {},
                                      "fork(CLONE_THREAD) needs a parent task", where);
    return {nullptr, -EINVAL};
  }
  pid_namespace* ns = parent != nullptr ? detail::creation_ns(parent) : &init_pid_ns();

  // dup_task_struct: "one for the rcu users" and the two rcu users.
  task_struct* t = detail::allocate_task();
  quarantine_->admit(t);
  refcount_set(&t->usage, 1);
  refcount_set(&t->rcu_users, 2);
  t->priv.owner = this;
  t->priv.id = next_id_.fetch_add(1, std::memory_order_relaxed);
  t->priv.magic.store(detail::task_alive_magic, std::memory_order_relaxed);
  t->traced.store(config_.record_history || args.trace, std::memory_order_relaxed);
  t->holders_tracked = config_.track_holders;
  if (t->holders_tracked || t->traced.load(std::memory_order_relaxed)) {
    // Before the task is published (hashed) and handed to anyone: every later
    // operation on it sees the flag. Pairs with the fast paths' reads (kfunc.hpp).
    any_task_slow_.store(true, std::memory_order_release);
  }
  track_get(t, holder_counter::rcu_users, holder_role::reaper, "fork: the reaper's release_task",
            where);
  track_get(t, holder_counter::rcu_users, holder_role::scheduler,
            "fork: the scheduler's final switch", where);
  track_get(t, holder_counter::usage, holder_role::rcu_users_group, "fork: the rcu_users group",
            where);
  t->priv.autoreap = args.autoreap || args.thread;
  const char* comm = args.comm != nullptr ? args.comm : (parent != nullptr ? parent->comm : "init");
  // As the kernel's strscpy_pad: at most TASK_COMM_LEN - 1 bytes, always terminated
  // (not strncpy: GCC -O3 warns that it may truncate, which is the point).
  const std::size_t comm_len = strnlen(comm, TASK_COMM_LEN - 1);
  std::memcpy(t->comm, comm, comm_len);
  t->comm[comm_len] = '\0';

  if (args.fail == fork_failure::before_pid_alloc) {
    return fail_fork(t, -ENOMEM, where);
  }
  if (args.new_pid_ns) {
    // copy_namespaces -> create_pid_namespace, after dup_task_struct: too deep a
    // nesting fails the fork with -ENOSPC and the task is freed like any failure.
    if (ns->level() + 1 > MAX_PID_NS_LEVEL) {
      return fail_fork(t, -ENOSPC, where);
    }
    ns = &create_pid_namespace(*ns);
  }
  if (!alloc_pids(t, ns)) {
    return fail_fork(t, -EAGAIN, where);
  }
  if (args.fail == fork_failure::after_pid_alloc) {
    for (const upid& u : t->priv.numbers) {
      u.ns->free_nr(u.nr);
    }
    t->priv.numbers.clear();
    return fail_fork(t, -ENOMEM, where);
  }
  t->tgid = args.thread ? parent->tgid : t->pid;
  t->group_leader = args.thread ? parent->group_leader : t;

  // Announced before the lock: the explorer never switches threads under one.
  // Every pid table of a kernel is one object to the reduction (a task is hashed
  // at several levels).
  detail::sched_point(sched_op::pid_hash, init_ns_, "fork: attach_pid");
  {
    // attach_pid + the task lists, under tasklist_lock as in copy_process.
    const detail::lock_guard lock(tasklist_lock_);
    list_add(t);
    if (args.thread) {
      // copy_process with CLONE_THREAD: the thread's real_parent is the forking
      // task's real_parent (the leader's parent, not the leader), and the thread
      // joins the group's thread list instead of a children list.
      t->real_parent = parent->real_parent;
      detail::link_thread(t->group_leader, t);
    } else if (parent != nullptr) {
      detail::link_child(parent, t);
    }
    for (const upid& u : t->priv.numbers) {
      u.ns->hash(u.nr, t);
    }
  }
  if (t->priv.numbers.back().nr == 1) {
    ns->set_child_reaper(t);
  }
  forked_.fetch_add(1, std::memory_order_relaxed);
  detail::kernel_access::record_now(*this, t, task_event_kind::fork, {}, where);
  task_newtask_.fire(t);
  return {t, 0};
}

namespace detail {
std::atomic<task_storage_free_fn> task_storage_free_hook{nullptr};
}  // namespace detail

// ---- free_task --------------------------------------------------------------------------------

void kernel::free_task(task_struct* t, std::source_location where, bool fork_failure) {
  if (t->holders_tracked) {
    holders_->forget(t);
  }
  if (t->priv.on_list) {
    const detail::lock_guard lock(tasklist_lock_);
    list_del(t);
  }
  if (!fork_failure) {
    freed_.fetch_add(1, std::memory_order_relaxed);
    detail::kernel_access::record_now(*this, t, task_event_kind::free, {}, where);
  }
  // free_task's bpf_task_storage_free (b0fd1852bcc2 "bpf: Fix UAF in task local
  // storage", v6.4): the task's local storage goes with its memory.
  if (const detail::task_storage_free_fn hook =
          detail::task_storage_free_hook.load(std::memory_order_acquire)) {
    hook(t);
  }
  if constexpr (debug_checks_enabled) {
    // Kept for the use-after-free report.
    t->priv.freed_where = where;
    t->priv.freed_by_fork_failure = fork_failure;
    t->priv.freed_event = log_->last_seq();
  }
  quarantine_->release(t);
}

}  // namespace tasklife
