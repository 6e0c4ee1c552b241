// Internal helpers shared by the task, pid and kernel implementations.
#pragma once

#include <cstddef>
#include <source_location>
#include <string_view>
#include <type_traits>

#include <tasklife/kernel.hpp>
#include <tasklife/task.hpp>

namespace tasklife::detail {

static_assert(std::is_standard_layout_v<task_struct>,
              "task_struct must be standard-layout: its rcu head is mapped back with offsetof");

// The kernel's container_of for the task's rcu head.
inline task_struct* task_of_rcu(rcu_head* rhp) noexcept {
  return reinterpret_cast<task_struct*>(reinterpret_cast<char*>(rhp) - offsetof(task_struct, rcu));
}

// The diagnostic object for a task the library allocated (live or freed and still
// remembered: its identity stays readable). nullptr gives an empty object.
diagnostic_object describe_task(const task_struct* t);
// The live kernel that knows `t` (allocated it and holds its memory), or nullptr:
// a fake or stray pointer. Checked builds only (nullptr otherwise). src/kernel.cpp.
const kernel* kernel_knowing(const task_struct* t) noexcept;
// Only the address: for a pointer that may not be a task at all.
inline diagnostic_object describe_address(const void* p) {
  diagnostic_object o;
  o.address = p;
  return o;
}

// Reports (and returns false for) a null task and, in full-check builds, a task
// that has been freed (poisoned, in quarantine). `op` names the operation.
[[gnu::cold]] bool report_bad_task(const task_struct* t, std::string_view op,
                                   std::source_location where);

inline bool check_task(const task_struct* t, std::string_view op, std::source_location where) {
  if constexpr (contract_checks_enabled) {
    if (t == nullptr) [[unlikely]] {
      return report_bad_task(t, op, where);
    }
  }
  if constexpr (debug_checks_enabled) {
    // Relaxed: the magic is written before the free is published, and a racing
    // use after free is exactly the bug being reported.
    if (t->priv.magic.load(std::memory_order_relaxed) != task_alive_magic) [[unlikely]] {
      return report_bad_task(t, op, where);
    }
  }
  return true;
}

// Defined in kernel.cpp.
void record_event(task_struct* t, task_event_kind kind, unsigned usage, unsigned rcu_users,
                  std::string_view detail, std::source_location where);

// Records an event for a traced task; `usage`/`rcu_users` are the values to show.
inline void trace_event(task_struct* t, task_event_kind kind, unsigned usage, unsigned rcu_users,
                        std::string_view detail, std::source_location where) {
  if (t->traced.load(std::memory_order_relaxed)) [[unlikely]] {
    record_event(t, kind, usage, rcu_users, detail, where);
  }
}

// put_task_struct_rcu_user without its own event (the caller records one), on
// behalf of `role` (the reaper's and the scheduler's drops are theirs).
void put_rcu_user_as(task_struct* t, holder_role role, std::source_location where);
// put_task_struct on behalf of `role` (delayed_put_task_struct drops the group's).
void put_task_struct_as(task_struct* t, holder_role role, std::source_location where);

// The parent's children list (src/fork.cpp), under the kernel's tasklist_lock.
void link_child(task_struct* parent, task_struct* child);
void unlink_child(task_struct* child);

// The namespace a task was created in, even after its pid was detached (the
// kernel's lifecycle code reaches it through the task's nsproxy/signal instead).
inline pid_namespace* creation_ns(const task_struct* t) noexcept {
  return t->priv.numbers.back().ns;
}

}  // namespace tasklife::detail
