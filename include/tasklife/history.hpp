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
//   task_event_kind, task_event_kinds (name and explanation of each kind),
//   info(kind), to_string(kind), explain(kind), task_event
//   (tasklife/fmt.hpp adds fmt::formatter<task_event>, for programs that use fmt)
//
// Lifetime
//   Events are values; they outlive the task (the log is the kernel's). A thread
//   id names the recording thread for as long as the process lives (OS threads'
//   numbers are never reused); a simulated thread's, within its execution only.
//
// Memory ordering
//   The log is guarded by a mutex. The counter values in an event are what the
//   counters hold once the operation is done, from relaxed reads: taken after an
//   increment, but *before* a decrement and adjusted by it (after a decrement only
//   the thread that reached 0 may still touch the task). Exact when nobody else
//   touches the task at the same moment, a snapshot otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <source_location>
#include <string_view>
#include <sys/types.h>

#include <tasklife/export.hpp>

namespace tasklife {

// One row per kind of event: its name and what the kernel does at that step. The
// enum, to_string, explain and every printer read this table (TASKLIFE_TASK_EVENTS
// expands once for each); a new kind is a new row.
#define TASKLIFE_TASK_EVENTS(X)                                                                   \
  X(fork, "copy_process: usage=1 (the rcu users' share), rcu_users=2, hashed at every pid level") \
  X(fork_failed, "copy_process failed: freed without using the counters (delayed_free_task)")     \
  X(get, "get_task_struct: a plain usage reference")                                              \
  X(tryget, "tryget_task_struct: usage +1, it was not 0")                                         \
  X(tryget_failed, "tryget_task_struct: usage was already 0, no reference")                       \
  X(put, "put_task_struct")                                                                       \
  X(put_many, "put_task_struct_many")                                                             \
  X(rcu_user_get, "rcu_users +1 (bpf_task_acquire and friends)")                                  \
  X(rcu_user_put, "put_task_struct_rcu_user")                                                     \
  X(exit, "do_exit: PF_EXITING, sched_process_exit")                                              \
  X(zombie, "exit_notify: EXIT_ZOMBIE, still hashed, waits for the parent")                       \
  X(autoreap, "exit_notify: EXIT_DEAD, release_task(self) while running")                         \
  X(reap, "wait_task_zombie: the parent wins EXIT_ZOMBIE -> EXIT_DEAD")                           \
  X(unhash, "release_task: unhashed from every pid level (before the drop)")                      \
  X(task_dead, "do_task_dead: TASK_DEAD, one last schedule() to go")                              \
  X(final_switch, "finish_task_switch: the scheduler's rcu_users drop")                           \
  X(gp_requested, "rcu_users hit 0: call_rcu(delayed_put_task_struct)")                           \
  X(gp_elapsed, "grace period over: delayed_put_task_struct, sched_process_free")                 \
  X(free_deferred, "v6.17+: call_rcu(__put_task_struct_rcu_cb)")                                  \
  X(free, "__put_task_struct: the memory is freed")                                               \
  X(kfunc, "a kfunc touched the task (the event's detail names it)")

enum class task_event_kind : std::uint8_t {
#define TASKLIFE_TASK_EVENT_ENUM(name, text) name,
  TASKLIFE_TASK_EVENTS(TASKLIFE_TASK_EVENT_ENUM)
#undef TASKLIFE_TASK_EVENT_ENUM
};

struct task_event_kind_info {
  task_event_kind kind;
  std::string_view name;
  std::string_view explanation;  // what the kernel does at this step, one line
};

// The table, in enum order.
inline constexpr task_event_kind_info task_event_kinds[] = {
#define TASKLIFE_TASK_EVENT_INFO(name, text) {task_event_kind::name, #name, text},
    TASKLIFE_TASK_EVENTS(TASKLIFE_TASK_EVENT_INFO)
#undef TASKLIFE_TASK_EVENT_INFO
};

constexpr const task_event_kind_info& info(task_event_kind kind) noexcept {
  return task_event_kinds[static_cast<std::size_t>(kind)];
}
constexpr std::string_view to_string(task_event_kind kind) noexcept {
  return info(kind).name;
}
constexpr std::string_view explain(task_event_kind kind) noexcept {
  return info(kind).explanation;
}

// Who recorded an event (task_event::thread, event_thread_id()): under the
// explorer (explore.hpp), the simulated thread running, as simulated_thread_bit |
// (1 + its index in the order the model declared its threads); anywhere else the
// OS thread, numbered 1, 2, ... in the order threads first record or ask (never
// reused). The explorer's own steps (grace periods, callbacks) and a model's
// setup run on the OS thread that explores, and carry its number.
inline constexpr std::uint32_t simulated_thread_bit = 0x8000'0000U;
constexpr bool is_simulated_thread(std::uint32_t id) noexcept {
  return (id & simulated_thread_bit) != 0;
}
// The id an event recorded now, on this thread, would carry. One thread-local
// load and a branch once the OS thread has its number.
TASKLIFE_API std::uint32_t event_thread_id() noexcept;

struct task_event {
  std::uint64_t seq;      // order within the kernel
  std::uint64_t task_id;  // the task's unique id in its kernel
  pid_t pid;              // root-namespace pid
  task_event_kind kind;
  std::uint32_t thread;  // who recorded it (event_thread_id())
  unsigned int usage;    // after the event
  unsigned int rcu_users;
  std::uint64_t time_ns;    // since the kernel was created
  std::string_view detail;  // static text (e.g. the kfunc's name); may be empty
  std::source_location where;
};

}  // namespace tasklife
