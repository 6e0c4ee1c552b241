// tasklife/history.hpp — per-task lifetime events, recorded on demand.
//
// What it is
//   When a task is traced (kernel_config::record_history, clone_args::trace or
//   kernel::trace_task), every step of its life is recorded with the values of
//   usage and rcu_users right after it: fork, each get/put, the exit steps, the
//   unhash, the grace period requested when rcu_users reaches 0 and its end, the
//   free. The events of all traced tasks of a kernel go to one bounded log in
//   kernel order (kernel::events, kernel::history), and to an optional listener
//   as they happen. Untraced tasks pay one predictable branch per operation.
//
// Members
//   task_event_kind, task_event, to_string(kind), fmt::formatter<task_event>
//
// Lifetime
//   Events are values; they outlive the task (the log is the kernel's).
//
// Memory ordering
//   The log is guarded by a mutex. The counter values in an event are what the
//   counters hold once the operation is done, from relaxed reads: taken after an
//   increment, but *before* a decrement and adjusted by it (after a decrement only
//   the thread that reached 0 may still touch the task). Exact when nobody else
//   touches the task at the same moment, a snapshot otherwise.
#pragma once

#include <cstdint>
#include <source_location>
#include <string_view>
#include <sys/types.h>

#include <fmt/format.h>

#include <tasklife/export.hpp>

namespace tasklife {

enum class task_event_kind : std::uint8_t {
  fork,           // copy_process: usage = 1, rcu_users = 2, hashed at every pid level
  fork_failed,    // copy_process failed: freed without using the counters
  get,            // get_task_struct
  tryget,         // tryget_task_struct succeeded
  tryget_failed,  // tryget_task_struct found usage == 0
  put,            // put_task_struct
  put_many,       // put_task_struct_many
  rcu_user_get,   // rcu_users +1 (bpf_task_acquire and friends)
  rcu_user_put,   // put_task_struct_rcu_user
  exit,           // do_exit: PF_EXITING set, sched_process_exit fired
  zombie,         // exit_notify: EXIT_ZOMBIE, waiting for the parent
  autoreap,       // exit_notify: EXIT_DEAD, release_task(self)
  reap,           // wait_task_zombie: EXIT_ZOMBIE -> EXIT_DEAD by the parent
  unhash,         // release_task: unhashed from every pid namespace level
  task_dead,      // do_task_dead: TASK_DEAD, waiting for the final switch
  final_switch,   // finish_task_switch: the scheduler's rcu_users drop
  gp_requested,   // rcu_users reached 0: call_rcu(delayed_put_task_struct)
  gp_elapsed,     // delayed_put_task_struct runs (sched_process_free)
  free_deferred,  // v6.17+: call_rcu(__put_task_struct_rcu_cb)
  free,           // __put_task_struct: the memory goes
  kfunc,          // a kfunc touched the task (detail names it)
};

TASKLIFE_API std::string_view to_string(task_event_kind kind) noexcept;

struct task_event {
  std::uint64_t seq;      // order within the kernel
  std::uint64_t task_id;  // the task's unique id in its kernel
  pid_t pid;              // root-namespace pid
  task_event_kind kind;
  unsigned int usage;  // after the event
  unsigned int rcu_users;
  std::uint64_t time_ns;    // since the kernel was created
  std::string_view detail;  // static text (e.g. the kfunc's name); may be empty
  std::source_location where;
};

}  // namespace tasklife

template <>
struct fmt::formatter<tasklife::task_event> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const tasklife::task_event& e, FormatContext& ctx) const {
    auto out = fmt::format_to(
        ctx.out(), "#{:<4} {:>9.3f} us  pid {:<6} {:<14} usage={:<2} rcu_users={:<2}", e.seq,
        static_cast<double>(e.time_ns) / 1000.0, e.pid, tasklife::to_string(e.kind),
        static_cast<int>(e.usage), static_cast<int>(e.rcu_users));
    if (!e.detail.empty()) {
      out = fmt::format_to(out, " {}", e.detail);
    }
    return out;
  }
};
