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
//   never recomputed from tasks that may be freed since) when it ends. It must
//   end before its kernel is destroyed, on the thread that created it.
//
// Memory ordering
//   None of its own: the context is the thread's (thread-local). The kernel
//   counts live scopes with a relaxed counter, read at teardown to report scopes
//   that outlive it.
#pragma once

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

  task_struct* task() const noexcept { return task_; }

 private:
  task_struct* task_;
  kernel* kernel_;
  // The thread's context before this scope (all but the program run, which is
  // bpf_prog::run's): restored as it was.
  detail::current_context saved_;
  rcu_thread_registration registration_;
};

}  // namespace tasklife
