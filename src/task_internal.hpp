// Internal helpers shared by the task, pid and kernel implementations.
#pragma once

#include <atomic>
#include <cstddef>
#include <source_location>
#include <string>
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
      // report_bad_task always returns false; said here so that the optimiser knows no
      // path with t == nullptr goes on (GCC 12 -O3 -Wstringop-overflow otherwise warns
      // about the callers' t->... after check_task).
      (void)report_bad_task(t, op, where);
      return false;
    }
  }
  if constexpr (contract_checks_enabled) {
    // Relaxed: the magic is written before the free is published, and a racing
    // use after free is exactly the bug being reported. Full checks keep freed
    // memory (quarantine, pool); every checked tier keeps teardown tombstones.
    if (t->priv.magic.load(std::memory_order_relaxed) != task_alive_magic) [[unlikely]] {
      return report_bad_task(t, op, where);
    }
  }
  return true;
}

// The name of t's kernel if that kernel is still alive, else the destroyed
// kernel's name a tombstone keeps, else "". Never dereferences a dead kernel.
std::string kernel_name_of(const task_struct* t);
// Is `k` a kernel that has not been destroyed? Pointer comparison only.
bool kernel_alive(const kernel* k) noexcept;

// A pointer that should be a task of a live kernel but is not (kernel_knowing
// said nullptr): reports it as what it is — a freed task out of quarantine
// (use_after_free), a teardown tombstone (teardown_order) or not a task at all
// (not_a_task) — without dereferencing anything but a pooled or buried task.
[[gnu::cold]] void report_unknown_task(const task_struct* t, std::string_view component,
                                       std::string_view op, std::source_location where);
// report_unknown_task from a noexcept context.
[[gnu::cold]] void report_unknown_task_noexcept(const task_struct* t, std::string_view component,
                                                std::string_view op,
                                                std::source_location where) noexcept;
// A task argument of a public function that may be anything: NULL, a fake, a
// freed or buried task, or a live task of any kernel. True for a live task a
// live kernel knows (checked builds; without checks: non-NULL); else reported.
bool check_known_task(const task_struct* t, std::string_view component, std::string_view op,
                      std::source_location where);
bool check_known_task_noexcept(const task_struct* t, std::string_view component,
                               std::string_view op, std::source_location where) noexcept;

// free_task's bpf_task_storage_free (kernel/fork.c): set by the map layer when
// the first task storage map is made (src/task_storage.cpp); src/fork.cpp calls
// it on every free. Release store, acquire load.
using task_storage_free_fn = void (*)(task_struct*) noexcept;
extern std::atomic<task_storage_free_fn> task_storage_free_hook;

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
// __put_task_struct on a task known to be valid: the kernel's WARN_ONs, then the free.
void put_task_struct_final(task_struct* t, std::source_location where);

// The parent's children list (src/fork.cpp), under the kernel's tasklist_lock.
// link_child also makes `parent` the real_parent of the child's threads
// (reparenting a leader reparents its group).
void link_child(task_struct* parent, task_struct* child);
void unlink_child(task_struct* child);
// A leader's thread list, under tasklist_lock.
void link_thread(task_struct* leader, task_struct* thread);
void unlink_thread(task_struct* thread);

inline bool thread_group_leader(const task_struct* t) noexcept {
  return t->group_leader == t;
}
// thread_group_empty: no thread of the group but the leader is still listed
// (threads leave the list in release_task).
inline bool thread_group_empty(const task_struct* leader) noexcept {
  return leader->priv.threads == nullptr;
}
// delay_group_leader (kernel/exit.c): a leader whose group still has threads
// must not be reaped; its zombie waits for the group to empty.
inline bool delay_group_leader(const task_struct* p) noexcept {
  return thread_group_leader(p) && !thread_group_empty(p);
}

// The namespace a task was created in, even after its pid was detached (the
// kernel's lifecycle code reaches it through the task's nsproxy/signal instead).
inline pid_namespace* creation_ns(const task_struct* t) noexcept {
  return t->priv.numbers.back().ns;
}

}  // namespace tasklife::detail
