// The kernel's task lifetime functions (include/linux/sched/task.h, kernel/fork.c,
// kernel/exit.c) over the simulated task_struct.
#include <cstring>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>
#include <tasklife/task.hpp>

#include "task_internal.hpp"

namespace tasklife {
namespace detail {

diagnostic_object describe_task(const task_struct* t) {
  diagnostic_object o;
  if (t == nullptr) {
    return o;
  }
  o.address = t;
  o.task_id = t->priv.id;
  o.pid = t->pid;
  o.comm.assign(t->comm, ::strnlen(t->comm, TASK_COMM_LEN));
  if (t->priv.owner != nullptr) {
    o.kernel = t->priv.owner->name();
  }
  return o;
}

bool report_bad_task(const task_struct* t, std::string_view op, std::source_location where) {
  if (t == nullptr) {
    report_contract_violation(contract_kind::null_argument, "task", op, {},
                              fmt::format("{}() called with a NULL task", op), where);
    return false;
  }
  const std::uint32_t magic = t->priv.magic.load(std::memory_order_relaxed);
  if (magic == task_freed_magic) {
    contract_violation v{
        contract_kind::use_after_free,
        "task",
        op,
        describe_task(t),
        fmt::format(
            "use-after-free: {}() on task '{}' (pid {}, id {}) of kernel '{}', which was "
            "freed by {} at {}:{} (event #{})",
            op, t->comm, t->pid, t->priv.id, task_kernel(t).name(),
            t->priv.freed_by_fork_failure ? "the failed fork's free_task" : "__put_task_struct",
            t->priv.freed_where.file_name(), t->priv.freed_where.line(), t->priv.freed_event),
        where};
    v.earlier = t->priv.freed_where;
    v.has_earlier = true;
    report_contract_violation(std::move(v));
  } else {
    report_contract_violation(contract_kind::not_a_task, "task", op, describe_address(t),
                              fmt::format("{}() on {}: not a live task_struct (magic {:#x})", op,
                                          static_cast<const void*>(t), magic),
                              where);
  }
  return false;
}

void put_rcu_user_as(task_struct* t, holder_role role, std::source_location where) {
  if (t->holders_tracked) [[unlikely]] {
    if (!detail::kernel_access::track_put(task_kernel(t), t, holder_counter::rcu_users, role,
                                          "put_task_struct_rcu_user", where)) {
      return;  // a double release: reported, not carried out
    }
  }
  if (refcount_dec_and_test(&t->rcu_users, where)) {
    detail::kernel_access::on_rcu_users_zero(task_kernel(t), t, where);
  }
}

void put_task_struct_as(task_struct* t, holder_role role, std::source_location where) {
  // Announced before the check: a free by another thread at this point is then
  // reported here, as a use-after-free, instead of being missed.
  sched_point(sched_op::counter_put, t, "put_task_struct");
  if (!check_task(t, "put_task_struct", where)) {
    return;
  }
  if (t->holders_tracked) [[unlikely]] {
    if (!detail::kernel_access::track_put(task_kernel(t), t, holder_counter::usage, role,
                                          "put_task_struct", where)) {
      return;  // a double release: reported, not carried out
    }
  }
  // Counter values are read before the decrement: after it, only the thread that
  // reaches 0 may still touch the task.
  trace_event(t, task_event_kind::put, refcount_read(&t->usage) - 1U, refcount_read(&t->rcu_users),
              {}, where);
  if (!refcount_dec_and_test(&t->usage, where)) {
    return;
  }
  kernel& k = task_kernel(t);
  if (k.config().final_put == final_put_mode::deferred) {
    // v6.17+ (8671bad873eb): always defer the teardown by a grace period. The rcu
    // head is free again: usage cannot reach 0 while rcu_users > 0, because the
    // rcu_users group owns a usage reference it gives back from its own callback.
    trace_event(t, task_event_kind::free_deferred, 0, refcount_read(&t->rcu_users), {}, where);
    k.rcu().call_rcu(&t->rcu, &__put_task_struct_rcu_cb, where);
    return;
  }
  __put_task_struct(t, where);
}

}  // namespace detail

task_struct* get_task_struct(task_struct* t, std::source_location where) {
  detail::sched_point(sched_op::counter_get, t, "get_task_struct");
  if (!detail::check_task(t, "get_task_struct", where)) {
    return t;
  }
  refcount_inc(&t->usage, where);
  if (t->holders_tracked) [[unlikely]] {
    detail::kernel_access::track_get(task_kernel(t), t, holder_counter::usage, holder_role::other,
                                     "get_task_struct", where);
  }
  detail::trace_event(t, task_event_kind::get, refcount_read(&t->usage),
                      refcount_read(&t->rcu_users), {}, where);
  return t;
}

task_struct* tryget_task_struct(task_struct* t, std::source_location where) {
  detail::sched_point(sched_op::counter_get, t, "tryget_task_struct");
  if (!detail::check_task(t, "tryget_task_struct", where)) {
    return nullptr;
  }
  if (!refcount_inc_not_zero(&t->usage, where)) {
    detail::trace_event(t, task_event_kind::tryget_failed, 0, refcount_read(&t->rcu_users), {},
                        where);
    return nullptr;
  }
  if (t->holders_tracked) [[unlikely]] {
    detail::kernel_access::track_get(task_kernel(t), t, holder_counter::usage, holder_role::other,
                                     "tryget_task_struct", where);
  }
  detail::trace_event(t, task_event_kind::tryget, refcount_read(&t->usage),
                      refcount_read(&t->rcu_users), {}, where);
  return t;
}

void put_task_struct(task_struct* t, std::source_location where) {
  detail::put_task_struct_as(t, holder_role::other, where);
}

void put_task_struct_many(task_struct* t, int nr, std::source_location where) {
  detail::sched_point(sched_op::counter_put, t, "put_task_struct_many");
  if (!detail::check_task(t, "put_task_struct_many", where)) {
    return;
  }
  detail::trace_event(t, task_event_kind::put_many,
                      refcount_read(&t->usage) - static_cast<unsigned>(nr),
                      refcount_read(&t->rcu_users), {}, where);
  if (t->holders_tracked) [[unlikely]] {
    for (int i = 0; i < nr; ++i) {
      detail::kernel_access::track_put(task_kernel(t), t, holder_counter::usage, holder_role::other,
                                       "put_task_struct_many", where);
    }
  }
  if (refcount_sub_and_test(nr, &t->usage, where)) {
    __put_task_struct(t, where);  // never deferred, in every kernel version
  }
}

void put_task_struct_rcu_user(task_struct* t, std::source_location where) {
  detail::sched_point(sched_op::counter_put, t, "put_task_struct_rcu_user");
  if (!detail::check_task(t, "put_task_struct_rcu_user", where)) {
    return;
  }
  detail::trace_event(t, task_event_kind::rcu_user_put, refcount_read(&t->usage),
                      refcount_read(&t->rcu_users) - 1U, {}, where);
  detail::put_rcu_user_as(t, holder_role::other, where);
}

void delayed_put_task_struct(rcu_head* rhp) {
  task_struct* t = detail::task_of_rcu(rhp);
  // A full grace period has passed since rcu_users reached 0: every reader that
  // found the task under RCU has left its critical section.
  detail::kernel_access::on_delayed_put(task_kernel(t), t);
  detail::put_task_struct_as(t, holder_role::rcu_users_group, std::source_location::current());
}

void __put_task_struct_rcu_cb(rcu_head* rhp) {  // NOLINT(bugprone-reserved-identifier)
  __put_task_struct(detail::task_of_rcu(rhp), std::source_location::current());
}

void __put_task_struct(task_struct* t,  // NOLINT(bugprone-reserved-identifier)
                       std::source_location where) {
  if (!detail::check_task(t, "__put_task_struct", where)) {
    return;
  }
  // The kernel's WARN_ONs: they warn and carry on.
  if constexpr (contract_checks_enabled) {
    const unsigned usage = refcount_read(&t->usage);
    const int exit_state = t->exit_state.load(std::memory_order_acquire);
    if (exit_state == 0 || usage != 0 || t == get_current()) [[unlikely]] {
      detail::report_contract_violation(
          contract_kind::invalid_state, "task", "__put_task_struct", detail::describe_task(t),
          fmt::format("__put_task_struct() on task '{}' (pid {}) of kernel '{}' with {}: the "
                      "kernel WARNs (exit_state={:#x}, usage={}, current={})",
                      t->comm, t->pid, task_kernel(t).name(),
                      exit_state == 0 ? "no exit_state (it never exited)"
                      : usage != 0    ? "usage != 0"
                                      : "the task being current",
                      exit_state, static_cast<int>(usage), t == get_current()),
          where);
    }
  }
  detail::kernel_access::free_task(task_kernel(t), t, where, false);
}

}  // namespace tasklife
