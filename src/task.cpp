// The kernel's task lifetime functions (include/linux/sched/task.h, kernel/fork.c,
// kernel/exit.c) over the simulated task_struct.
#include <cstring>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>
#include <tasklife/task.hpp>

#include "quarantine.hpp"
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
  o.kernel = kernel_name_of(t);
  return o;
}

bool report_bad_task(const task_struct* t, std::string_view op, std::source_location where) {
  if (t == nullptr) {
    report_contract_violation(contract_kind::null_argument, "task", op, {},
                              fmt::format("{}() called with a NULL task", op), where);
    return false;
  }
  const std::uint32_t magic = t->priv.magic.load(std::memory_order_relaxed);
  if (magic == task_torn_down_magic) {
    report_contract_violation(
        contract_kind::teardown_order, "task", op, describe_task(t),
        fmt::format("{}() on task '{}' (pid {}, id {}) of kernel '{}', which was destroyed while "
                    "the task was still referenced (a leak at its teardown; the task is kept as a "
                    "tombstone and the call is not carried out)",
                    op, t->comm, t->pid, t->priv.id, kernel_name_of(t)),
        where);
    return false;
  }
  if (magic == task_freed_magic) {
    contract_violation v{
        contract_kind::use_after_free,
        "task",
        op,
        describe_task(t),
        fmt::format(
            "use-after-free: {}() on task '{}' (pid {}, id {}) of kernel '{}', which was "
            "freed by {} at {}:{} (event #{})",
            op, t->comm, t->pid, t->priv.id, kernel_name_of(t),
            t->priv.freed_by_fork_failure ? "the failed fork's free_task" : "__put_task_struct",
            t->priv.freed_where.file_name(), t->priv.freed_where.line(), t->priv.freed_event),
        where};
    v.earlier = t->priv.freed_where;
    v.has_earlier = true;
    report_contract_violation(v);
  } else {
    report_contract_violation(contract_kind::not_a_task, "task", op, describe_address(t),
                              fmt::format("{}() on {}: not a live task_struct (magic {:#x})", op,
                                          static_cast<const void*>(t), magic),
                              where);
  }
  return false;
}

void report_unknown_task(const task_struct* t, std::string_view component, std::string_view op,
                         std::source_location where) {
  if (t == nullptr) {
    report_contract_violation(contract_kind::null_argument, component, op, {},
                              fmt::format("{}() called with a NULL task", op), where);
    return;
  }
  switch (graveyard_lookup(t)) {
    case graveyard_state::tombstone:
    case graveyard_state::pooled:
      report_bad_task(t, op, where);  // its memory is a task's: the magic says which
      return;
    case graveyard_state::unknown:
      break;
  }
  report_contract_violation(
      contract_kind::not_a_task, component, op, describe_address(t),
      fmt::format("{}() on {}: not a task_struct of any live kernel (a fake or stray pointer, "
                  "or a task whose memory was reused)",
                  op, static_cast<const void*>(t)),
      where);
}

void report_unknown_task_noexcept(const task_struct* t, std::string_view component,
                                  std::string_view op, std::source_location where) noexcept {
  try {
    report_unknown_task(t, component, op, where);
  } catch (...) {  // a throwing handler has recorded it; this context cannot unwind
  }
}

bool check_known_task(const task_struct* t, std::string_view component, std::string_view op,
                      std::source_location where) {
  if (t == nullptr) {
    report_unknown_task(t, component, op, where);
    return false;
  }
  if constexpr (contract_checks_enabled) {
    if (kernel_knowing(t) == nullptr) [[unlikely]] {
      report_unknown_task(t, component, op, where);
      return false;
    }
  }
  return check_task(t, op, where);
}

bool check_known_task_noexcept(const task_struct* t, std::string_view component,
                               std::string_view op, std::source_location where) noexcept {
  try {
    return check_known_task(t, component, op, where);
  } catch (...) {  // the handler threw: it has seen the violation, the call is skipped
    return false;
  }
}

namespace {

// The references a task's own lifecycle still holds on a counter, which no
// other holder's put may take away (see task.hpp, Lifetime). Read after the
// counter's value with acquire: the lifecycle sets each flag before its drop
// (finish_task_switch, release_task, delayed_put_task_struct), so a value that
// already includes a drop is read together with the flag that announced it.
// Used only where contract checks are compiled in.
[[maybe_unused]] int lifecycle_floor(const task_struct* t, holder_counter counter) noexcept {
  if (counter == holder_counter::usage) {
    return t->priv.group_put_started.load(std::memory_order_acquire) ? 0 : 1;
  }
  return (t->priv.final_switch_done.load(std::memory_order_acquire) ? 0 : 1) +
         (t->priv.pid_detached.load(std::memory_order_acquire) ? 0 : 1);
}

enum class put_outcome { refused, not_last, last };

// A holder's put of n references (not the lifecycle's own): refused and reported
// when it would go below the lifecycle's floor. A counter at 0 or saturated goes
// through refcount_sub_and_test as before, whose warnings say what happened.
put_outcome checked_put(task_struct* t, refcount_t* r, holder_counter counter, int n,
                        std::string_view op, std::source_location where) {
  if constexpr (contract_checks_enabled) {
    std::atomic<int>& refs = refcount_access::refs(r);
    // Acquire: pairs with the lifecycle's release of its drop (see lifecycle_floor).
    int old = refs.load(std::memory_order_acquire);
    while (old > 0) {
      const int floor = lifecycle_floor(t, counter);
      if (old - n < floor) [[unlikely]] {
        report_contract_violation(
            contract_kind::over_release, "task", op, describe_task(t),
            fmt::format("over-release: {}() on task '{}' (pid {}, id {}) would take {} from {} "
                        "to {}, below the {} reference(s) its own lifecycle still holds (the "
                        "{}); a release without a reference to give back. It is not carried out",
                        op, t->comm, t->pid, t->priv.id,
                        counter == holder_counter::usage ? "usage" : "rcu_users", old, old - n,
                        floor,
                        counter == holder_counter::usage
                            ? "rcu_users group's, until its grace period"
                            : "scheduler's until the final switch, the reaper's until the reap"),
            where);
        return put_outcome::refused;
      }
      // acq_rel: the release half is the put's (refcount_sub_and_test), the acquire
      // half orders the free after every other holder's release when it is the last.
      if (refs.compare_exchange_weak(old, old - n, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
        return old == n ? put_outcome::last : put_outcome::not_last;
      }
    }
  }
  return refcount_sub_and_test(n, r, where) ? put_outcome::last : put_outcome::not_last;
}

}  // namespace

void put_rcu_user_as(task_struct* t, holder_role role, std::source_location where) {
  if (t->holders_tracked) [[unlikely]] {
    if (!detail::kernel_access::track_put(task_kernel(t), t, holder_counter::rcu_users, role,
                                          "put_task_struct_rcu_user", where)) {
      return;  // a double release: reported, not carried out
    }
  }
  const bool last = role == holder_role::other
                        ? checked_put(t, &t->rcu_users, holder_counter::rcu_users, 1,
                                      "put_task_struct_rcu_user", where) == put_outcome::last
                        : refcount_dec_and_test(&t->rcu_users, where);
  if (last) {
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
  const bool last = role == holder_role::other
                        ? checked_put(t, &t->usage, holder_counter::usage, 1, "put_task_struct",
                                      where) == put_outcome::last
                        : refcount_dec_and_test(&t->usage, where);
  if (!last) {
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
  put_task_struct_final(t, where);
}

void put_task_struct_final(task_struct* t, std::source_location where) {
  // The kernel's WARN_ONs. The kernel warns and carries on; tasklife reports and,
  // if the handler returns, does not free: a task freed under its holders would
  // be a use-after-free (and its exit state is what the rest of the kernel reads).
  if constexpr (contract_checks_enabled) {
    const unsigned usage = refcount_read(&t->usage);
    const int exit_state = t->exit_state.load(std::memory_order_acquire);
    if (exit_state == 0 || usage != 0 || t == get_current()) [[unlikely]] {
      report_contract_violation(
          contract_kind::invalid_state, "task", "__put_task_struct", describe_task(t),
          fmt::format("__put_task_struct() on task '{}' (pid {}) of kernel '{}' with {}: the "
                      "kernel WARNs (exit_state={:#x}, usage={}, current={}); not freed",
                      t->comm, t->pid, task_kernel(t).name(),
                      exit_state == 0 ? "no exit_state (it never exited)"
                      : usage != 0    ? "usage != 0"
                                      : "the task being current",
                      exit_state, static_cast<int>(usage), t == get_current()),
          where);
      return;
    }
  }
  kernel_access::free_task(task_kernel(t), t, where, false);
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
  if (nr <= 0) [[unlikely]] {
    // The kernel's refcount_sub_and_test(nr) with nr < 0 adds; nr == 0 does
    // nothing. Neither is a release: refused.
    detail::report_contract_violation(
        contract_kind::invalid_argument, "task", "put_task_struct_many", detail::describe_task(t),
        fmt::format("put_task_struct_many() on task '{}' (pid {}) with nr = {}: a count of "
                    "references to release must be positive; not carried out",
                    t->comm, t->pid, nr),
        where);
    return;
  }
  detail::trace_event(t, task_event_kind::put_many,
                      refcount_read(&t->usage) - static_cast<unsigned>(nr),
                      refcount_read(&t->rcu_users), {}, where);
  if (t->holders_tracked) [[unlikely]] {
    for (int i = 0; i < nr; ++i) {
      if (!detail::kernel_access::track_put(task_kernel(t), t, holder_counter::usage,
                                            holder_role::other, "put_task_struct_many", where)) {
        return;  // a release without a live holder: reported, not carried out
      }
    }
  }
  if (detail::checked_put(t, &t->usage, holder_counter::usage, nr, "put_task_struct_many", where) ==
      detail::put_outcome::last) {
    detail::put_task_struct_final(t, where);  // never deferred, in every kernel version
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

namespace {
// The task an RCU callback's head belongs to, checked: NULL, a head that is no
// task's and a freed or buried task are reported (nullptr: skip the callback).
task_struct* task_of_checked_head(rcu_head* rhp, std::string_view op) {
  if (rhp == nullptr) {
    detail::report_contract_violation(contract_kind::null_argument, "task", op, {},
                                      fmt::format("{}(NULL): no rcu_head", op),
                                      std::source_location::current());
    return nullptr;
  }
  task_struct* t = detail::task_of_rcu(rhp);
  return detail::check_known_task(t, "task", op, std::source_location::current()) ? t : nullptr;
}
}  // namespace

void delayed_put_task_struct(rcu_head* rhp) {
  task_struct* t = task_of_checked_head(rhp, "delayed_put_task_struct");
  if (t == nullptr) {
    return;
  }
  // A full grace period has passed since rcu_users reached 0: every reader that
  // found the task under RCU has left its critical section. The flag comes before
  // the group's put (release: pairs with the floor's acquire, lifecycle_floor).
  t->priv.group_put_started.store(true, std::memory_order_release);
  detail::kernel_access::on_delayed_put(task_kernel(t), t);
  detail::put_task_struct_as(t, holder_role::rcu_users_group, std::source_location::current());
}

void __put_task_struct_rcu_cb(rcu_head* rhp) {  // NOLINT(bugprone-reserved-identifier)
  if (task_struct* t = task_of_checked_head(rhp, "__put_task_struct_rcu_cb")) {
    detail::put_task_struct_final(t, std::source_location::current());
  }
}

void __put_task_struct(task_struct* t,  // NOLINT(bugprone-reserved-identifier)
                       std::source_location where) {
  if (!detail::check_known_task(t, "task", "__put_task_struct", where)) {
    return;
  }
  detail::put_task_struct_final(t, where);
}

}  // namespace tasklife
