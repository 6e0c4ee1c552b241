// tasklife/current.hpp — `current`: the task the calling thread runs as.
//
// What it is
//   The kernel's `current`, for threads of a test harness: a current_task_scope
//   makes the calling thread run as a task of some kernel until the scope ends
//   (kernel::run_as returns one). kfuncs and programs run as current; the kfuncs'
//   inline fast paths read everything they need from one thread-local line
//   (detail::current_context), filled in by the scope.
//
// Members
//   get_current()         the task this thread runs as, or nullptr
//   current_task_scope    RAII "this thread runs as task t"; nests
//   detail::current_context, detail::tls_ctx   the thread-local line
//
// Lifetime
//   A scope registers the thread with the task's kernel's RCU domain for its
//   duration and restores the thread's previous context (saved when it began,
//   never recomputed from tasks that may be freed since) when it ends. It should
//   end before its kernel is destroyed, on the thread that created it; one that
//   does not is reported by the kernel's teardown and stays safe to end (kernel.hpp,
//   Lifetime). A scope for NULL, a freed or buried task, a fake pointer, or (from
//   kernel::run_as) another kernel's task is reported and inert: the thread's
//   context does not change and nothing is registered.
//
// Memory ordering
//   None of its own for the context (thread-local). The kernel counts live
//   scopes in a detail::scope_anchor: sequentially consistent decrement and
//   waiter count, so a teardown waiting for another thread's scopes either sees
//   the decrement or is woken by it (atomic wait/notify).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <source_location>

#include <tasklife/export.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/profile.hpp>
#include <tasklife/rcu.hpp>

namespace tasklife {

class kernel;
struct task_struct;

namespace detail {
class prog_run;
// What the calling thread is: current, its kernel and that kernel's semantics
// profile (set by current_task_scope), and the program run it is inside (set by
// bpf_prog::run; prog.hpp). One thread-local line the kfuncs' inline fast paths
// read; nothing else touches it.
struct current_context {
  task_struct* task;
  kernel* owner;
  semantics_profile profile;
  bool inline_fast_path;  // info(profile).inline_fast_path
  prog_run* run;
  rcu_domain* rcu;         // owner's RCU domain
  pid_lookup init_lookup;  // owner's root pid namespace, for bpf_task_from_pid
};
TASKLIFE_API extern constinit thread_local current_context tls_ctx;

// A kernel's count of live scopes (kernel.hpp keeps it; a scope holds it, not the
// kernel, so that ending a scope after its kernel touches only this).
struct scope_anchor {
  std::atomic<std::size_t> count{0};
  std::atomic<std::uint32_t> waiters{0};
};
// Live scopes of `anchor` on the calling OS thread.
std::size_t scopes_on_this_thread(const scope_anchor* anchor) noexcept;
// Bumped by every teardown that finds scopes alive: a scope ending later then
// checks whether the context it restores names a kernel still alive.
TASKLIFE_API extern std::atomic<std::uint64_t> orphaned_scope_epoch;
}  // namespace detail

// The task this thread runs as, or nullptr: the kernel's `current`.
TASKLIFE_API task_struct* get_current() noexcept;

// RAII: while alive, the calling thread runs as `t` (get_current() == t) and is
// registered with t's kernel's RCU domain. Nests; restores the previous current.
class TASKLIFE_API current_task_scope {
 public:
  explicit current_task_scope(task_struct* t,
                              std::source_location where = std::source_location::current());
  ~current_task_scope();
  current_task_scope(const current_task_scope&) = delete;
  current_task_scope& operator=(const current_task_scope&) = delete;
  current_task_scope(current_task_scope&&) = delete;
  current_task_scope& operator=(current_task_scope&&) = delete;

  // The task the thread runs as in this scope (nullptr for an inert scope).
  task_struct* task() const noexcept { return task_; }

 private:
  friend class kernel;
  struct inert_tag {};
  explicit current_task_scope(inert_tag) noexcept;

  task_struct* task_ = nullptr;
  detail::scope_anchor* anchor_ = nullptr;
  std::uint64_t epoch_ = 0;
  // The thread's context before this scope (all but the program run, which is
  // bpf_prog::run's): restored as it was.
  detail::current_context saved_;
  std::optional<rcu_thread_registration> registration_;
};

}  // namespace tasklife
