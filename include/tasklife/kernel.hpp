// tasklife/kernel.hpp — the simulated system: its parts and the task lifecycle.
//
// What it is
//   A kernel owns everything one simulated system has: its RCU domain, its pid
//   namespaces, its tasks, its configuration and its tracepoints. Instances are
//   independent: a test harness creates one per test. It is a composition of
//   parts, each with its own state and lock:
//
//     the lifecycle       fork (src/fork.cpp), exit, final switch, reap and the
//                         grace-period path (src/exit.cpp), the task list under
//                         tasklist_lock; this header
//     tracepoints         task_newtask, sched_process_exit, sched_process_free
//                         (tracepoint.hpp)
//     the event log       the history of traced tasks (history.hpp; src/event_log.*)
//     the holder tracker  ref_tracker, when holders are tracked (holders.hpp;
//                         src/holder_tracker.*)
//     the quarantine      freed tasks kept poisoned, and the registry of every task
//                         whose memory the kernel holds (src/quarantine.*)
//     current             current_task_scope, the thread-local context (current.hpp)
//
//   The lifecycle operations follow the kernel's own path and names:
//
//     fork                copy_process: usage = 1, rcu_users = 2, hashed at every
//                         pid level, task_newtask fires; an injected failure frees
//                         the task without touching the counters (delayed_free_task)
//     do_exit             PF_EXITING, sched_process_exit, exit_notify (EXIT_ZOMBIE,
//                         or EXIT_DEAD + release_task(self) when autoreaped), then
//                         do_task_dead (TASK_DEAD)
//     finish_task_switch  the final context switch away from a dead task: the
//                         scheduler's put_task_struct_rcu_user
//     wait_task_zombie    the parent's reap: EXIT_ZOMBIE -> EXIT_DEAD (one waiter
//                         wins), release_task: unhash from every pid level, then
//                         the reaper's put_task_struct_rcu_user
//     retire              all of the above in the order the task's kind dies
//
//   Both death orders (docs/kernel.md §2) end in the same freed state:
//   A (zombie): do_exit -> finish_task_switch -> wait_task_zombie -> GP -> free;
//   B (autoreap): do_exit (unhash, 2 -> 1) -> finish_task_switch (1 -> 0) -> GP -> free.
//
// Members
//   kernel_config, final_put_mode, clone_args, fork_failure, fork_result,
//   kernel_stats, leaked_task
//   kernel: rcu(), init_pid_ns(), create_pid_namespace(), fork(), do_exit(),
//           finish_task_switch(), wait_task_zombie(), retire(), run_as(),
//           tracepoints, history, holders, stats(), shutdown()
//   detail::kernel_access  the door through which the layers above reach the
//                          kernel's internal hooks (the lifetime functions, kfuncs)
//
// Lifetime
//   Tasks and namespaces belong to their kernel. Destroying a kernel (or calling
//   shutdown()) waits for every pending RCU callback, chained ones included, then
//   reports each task that was never freed, with its counters, as a leak (to the
//   contract handler, component "kernel", and in shutdown()'s result). A leaked
//   task is not freed: someone may still hold it. In checked builds it is kept
//   as a tombstone until the process exits, so that the holder's later put is
//   reported (teardown_order) instead of touching freed memory; without checks
//   its memory is deleted.
//   Teardown mistakes leave memory valid (checked builds): current_task_scopes,
//   RCU registrations and maps should end before their kernel; those that do not
//   are reported (teardown_order) and stay safe to end or destroy afterwards:
//     - a scope on this thread: the thread runs as no task from the teardown on
//       (a kfunc reports no_current); the scope may end later;
//     - a scope on another thread: the destructor waits for it to end (that
//       thread's kfuncs read the kernel), after reporting why it waits;
//     - a registration with the kernel's RCU domain, or a scope's: the domain is
//       kept (not destroyed) until the process exits, so the registration and any
//       read section on it end normally;
//     - a map: orphaned; its destructor frees its values without the kernel (the
//       tombstoned tasks it held are reported) and its operations are refused.
//
// Memory ordering
//   Lifecycle state is published with release and read with acquire (see
//   task.hpp; each pair is named where it is written, src/fork.cpp and
//   src/exit.cpp); the task list and parent/children links are guarded by
//   tasklist_lock (a mutex), as in the kernel; the pid tables are lock-free for
//   readers (pid.hpp). Each part has its own lock (see its header). Statistics
//   are relaxed counters: nothing is ordered by them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <source_location>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <tasklife/check.hpp>
#include <tasklife/current.hpp>
#include <tasklife/export.hpp>
#include <tasklife/history.hpp>
#include <tasklife/holders.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/profile.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/task.hpp>
#include <tasklife/thread_safety.hpp>
#include <tasklife/tracepoint.hpp>

namespace tasklife {

namespace detail {
class event_log;
class holder_tracker;
class task_quarantine;
struct kernel_access;

// See kernel_access::attach_dependent.
struct kernel_dependent {
  std::string_view what;              // "map"
  std::string_view name;              // the map's name (owned by the dependent)
  std::atomic<bool> orphaned{false};  // relaxed: set once, by the teardown
};
}  // namespace detail

// How the final put_task_struct frees (kernel/fork.c; docs/kernel.md §1).
enum class final_put_mode {
  immediate,  // <= v6.16 (non-RT): __put_task_struct inline
  deferred,   // v6.17+ (8671bad873eb): always call_rcu(__put_task_struct_rcu_cb)
  // kernel_config's default: the profile's (deferred for `newest`, immediate for
  // the older ones); the kernel resolves it, so config().final_put never is this.
  profile_default,
};

struct kernel_config {
  std::string name = "kernel";
  semantics_profile profile = semantics_profile::current;
  int pid_max = PID_MAX_DEFAULT;
  // Where cyclic allocation restarts after a wrap (the kernel's RESERVED_PIDS; the
  // kernel also keeps pid_max >= 301). Small values let tests wrap quickly.
  int reserved_pids = RESERVED_PIDS;
  final_put_mode final_put = final_put_mode::profile_default;
  // CONFIG_MEMCG: a failed fork frees through call_rcu (delayed_free_task).
  bool memcg = true;
  // Trace every task from its fork (history.hpp).
  bool record_history = false;
  // Holder tracking, as the kernel's ref_tracker: every reference taken on usage
  // or rcu_users records who took it (label and call site); a release without a
  // live holder is reported with both sites; teardown lists leaked tasks' holders
  // grouped by site. Off by default (it takes a mutex per get and put).
  bool track_holders = false;
  std::size_t history_capacity = std::size_t{1} << 20;
  // Freed tasks kept poisoned for use-after-free reports (TASKLIFE_CHECKS=full).
  std::size_t quarantine_capacity = 1024;
  // Receives every event of the kernel's traced tasks as it is recorded, from the
  // kernel's construction on (kernel::set_event_listener replaces it).
  std::function<void(const task_event&)> event_listener{};
  // The RCU backend; nullptr means liburcu's memb flavor.
  std::function<std::unique_ptr<rcu_backend>()> rcu_backend_factory{};
};

// Where copy_process is made to fail (clone_args::fail).
enum class fork_failure {
  none,
  before_pid_alloc,  // e.g. a resource limit: nothing hashed, no number taken
  after_pid_alloc,   // e.g. cgroup can_fork: numbers allocated, then freed
};

// The parts of struct kernel_clone_args that matter to lifetime.
struct clone_args {
  const char* comm = nullptr;  // nullptr: inherit the parent's
  bool new_pid_ns = false;     // CLONE_NEWPID: pid 1 of a new child namespace
  bool thread = false;         // CLONE_THREAD: same tgid; always autoreaped
  bool autoreap = false;       // the parent ignores SIGCHLD: exit_notify releases it
  bool trace = false;          // record this task's events
  fork_failure fail = fork_failure::none;
};

struct fork_result {
  task_struct* task = nullptr;
  int error = 0;  // -EAGAIN (no free pid), -ENOSPC (pid namespaces too deep), -ENOMEM (injected)
  explicit operator bool() const noexcept { return task != nullptr; }
};

struct kernel_stats {
  std::uint64_t forked;          // successful forks
  std::uint64_t fork_failures;   // failed forks (freed without the counters)
  std::uint64_t rcu_users_zero;  // tasks whose rcu_users reached 0 (grace period requested)
  std::uint64_t gp_elapsed;      // delayed_put_task_struct has run
  std::uint64_t freed;           // tasks freed by __put_task_struct
  std::uint64_t quarantined;     // freed tasks currently kept poisoned
  std::uint64_t torn_down;       // never freed: reported as leaks and freed by shutdown()
  // Derived counts. (tasklife says "allocated" for memory not yet freed, and
  // names every other state by what it is.)
  // Tasks whose rcu_users has not reached 0 yet: running, or zombies not yet reaped.
  std::uint64_t with_rcu_users() const noexcept { return forked - rcu_users_zero; }
  [[deprecated("use with_rcu_users()")]] std::uint64_t live() const noexcept {
    return with_rcu_users();
  }
  std::uint64_t awaiting_gp() const noexcept { return rcu_users_zero - gp_elapsed; }
  std::uint64_t allocated() const noexcept { return forked - freed; }
};

struct leaked_task {
  std::uint64_t id;
  pid_t pid;
  std::string comm;
  unsigned int usage;
  unsigned int rcu_users;
  int exit_state;
  unsigned int state;
  std::string holders;  // grouped by site when holders are tracked, else empty
};

class TASKLIFE_API kernel {
 public:
  explicit kernel(kernel_config config = {});
  ~kernel();
  kernel(const kernel&) = delete;
  kernel& operator=(const kernel&) = delete;

  const kernel_config& config() const noexcept { return config_; }
  const std::string& name() const noexcept { return config_.name; }
  rcu_domain& rcu() noexcept { return *rcu_; }
  pid_namespace& init_pid_ns() noexcept { return *init_ns_; }
  // A new namespace below `parent` (at most MAX_PID_NS_LEVEL deep); owned by the kernel.
  pid_namespace& create_pid_namespace(pid_namespace& parent) TASKLIFE_EXCLUDES(namespaces_mutex_);

  // ---- lifecycle (src/fork.cpp, src/exit.cpp) -------------------------------------------
  // copy_process + wake_up_new_task. parent == nullptr forks the first task of the
  // root namespace. The child becomes its namespace's child reaper if it is pid 1.
  fork_result fork(task_struct* parent, const clone_args& args = {},
                   std::source_location where = std::source_location::current())
      TASKLIFE_EXCLUDES(tasklist_lock_);
  // do_exit: PF_EXITING, sched_process_exit, exit_notify, do_task_dead.
  void do_exit(task_struct* t, int code = 0,
               std::source_location where = std::source_location::current())
      TASKLIFE_EXCLUDES(tasklist_lock_);
  // The final context switch away from a TASK_DEAD task.
  void finish_task_switch(task_struct* prev,
                          std::source_location where = std::source_location::current());
  // The parent's wait: reaps a zombie. False if p is not a zombie (or another
  // waiter won the EXIT_ZOMBIE -> EXIT_DEAD race).
  bool wait_task_zombie(task_struct* p,
                        std::source_location where = std::source_location::current())
      TASKLIFE_EXCLUDES(tasklist_lock_);
  // The whole death of a task, in the order its kind dies: do_exit, the final
  // switch, and the parent's reap unless the task was autoreaped (a thread, or
  // clone_args::autoreap), whose exit_notify released it already. Whether to reap
  // is decided before the final switch: an autoreaped task may be freed by the
  // grace period that switch starts. The task may be freed when this returns (at
  // once, or after a grace period). False if do_exit refused (the task was
  // already exiting): nothing more is done.
  bool retire(task_struct* t, int code = 0,
              std::source_location where = std::source_location::current());

  // ---- current (current.hpp) -------------------------------------------------------------
  current_task_scope run_as(task_struct* t,
                            std::source_location where = std::source_location::current());

  // ---- tracepoints (tracepoint.hpp) ------------------------------------------------------
  tracepoint& task_newtask() noexcept { return task_newtask_; }
  tracepoint& sched_process_exit() noexcept { return sched_process_exit_; }
  tracepoint& sched_process_free() noexcept { return sched_process_free_; }

  // ---- history (history.hpp) -------------------------------------------------------------
  void trace_task(task_struct* t, bool on = true) noexcept;
  std::vector<task_event> events() const;                        // every recorded event
  std::vector<task_event> history(std::uint64_t task_id) const;  // one task's
  // One task's, by pointer; NULL or a pointer no kernel knows is reported (empty).
  std::vector<task_event> history(const task_struct* t) const;
  void set_event_listener(std::function<void(const task_event&)> listener);

  // ---- holders (holders.hpp) -------------------------------------------------------------
  // The live holders of t's references (empty unless holders are tracked).
  std::vector<holder_info> holders(const task_struct* t) const;
  // As ref_tracker_dir_print: "usage has 1/2 users at get_task_struct (file:line)", ...
  std::string format_holders(const task_struct* t) const;

  // ---- accounting and teardown -------------------------------------------------------------
  kernel_stats stats() const noexcept;
  // Tasks allocated and not yet freed, with their counters and, for tasks whose
  // holders are tracked, the holders grouped by site.
  std::vector<leaked_task> allocated_tasks() const TASKLIFE_EXCLUDES(tasklist_lock_);
  // The same (kept for older callers: allocated_tasks() includes the holders).
  std::vector<leaked_task> allocated_tasks_with_holders() const TASKLIFE_EXCLUDES(tasklist_lock_);
  // Drains RCU callbacks (chains included), reports and frees every task that was
  // never freed, empties the quarantine. Idempotent; the destructor calls it.
  std::vector<leaked_task> shutdown() TASKLIFE_EXCLUDES(tasklist_lock_);

  // ---- questions about one task, one meaning each ------------------------------------------
  // Allocated: forked by this kernel and not yet freed by __put_task_struct (or
  // torn down). Never dereferences `t`; walks the task list.
  bool is_allocated(const task_struct* t) const TASKLIFE_EXCLUDES(tasklist_lock_);
  // Freed: __put_task_struct (or a failed fork) freed it and the kernel still
  // remembers it (full-check builds keep freed tasks in quarantine; without full
  // checks, or once evicted, this is false). Never dereferences an unknown `t`.
  bool is_freed(const task_struct* t) const TASKLIFE_EXCLUDES(tasklist_lock_);
  // Hashed: allocated and still findable by its pid (release_task has not
  // unhashed it).
  bool is_hashed(const task_struct* t) const TASKLIFE_EXCLUDES(tasklist_lock_);
  // Known: allocated, or freed and remembered; the registry the checks use.
  // Never dereferences `t`. With TASKLIFE_CHECKS=none this only tests for NULL.
  bool knows_task(const task_struct* t) const;
  // The former name of is_allocated().
  [[deprecated("use is_allocated()")]] bool owns_live_task(const task_struct* t) const
      TASKLIFE_EXCLUDES(tasklist_lock_) {
    return is_allocated(t);
  }

 private:
  friend struct detail::kernel_access;
  friend class current_task_scope;

  // The hooks the layers above reach through detail::kernel_access.
  void on_rcu_users_zero(task_struct* t, std::source_location where)
      TASKLIFE_EXCLUDES(union_mutex_);
  void on_delayed_put(task_struct* t) TASKLIFE_EXCLUDES(union_mutex_);
  void free_task(task_struct* t, std::source_location where, bool fork_failure)
      TASKLIFE_EXCLUDES(tasklist_lock_);
  // A task argument of a lifecycle operation: live, and this kernel's (a task of
  // another kernel is a foreign_object). False: reported, do nothing.
  bool check_own_task(const task_struct* t, std::string_view op, std::source_location where) const;
  void record(task_struct* t, task_event_kind kind, unsigned int usage, unsigned int rcu_users,
              std::string_view detail, std::source_location where);
  void track_get(task_struct* t, holder_counter counter, holder_role role, std::string_view label,
                 std::source_location where);
  bool track_put(task_struct* t, holder_counter counter, holder_role role, std::string_view op,
                 std::source_location where);

  // The lifecycle's own steps (src/fork.cpp, src/exit.cpp).
  bool claim_zombie(task_struct* p) noexcept;
  // claim_zombie unless delay_group_leader(p) (takes tasklist_lock).
  bool claim_reapable_zombie(task_struct* p) TASKLIFE_EXCLUDES(tasklist_lock_);
  fork_result fail_fork(task_struct* t, int error, std::source_location where);
  bool alloc_pids(task_struct* t, pid_namespace* ns);
  void release_task(task_struct* p, std::source_location where) TASKLIFE_EXCLUDES(tasklist_lock_);
  void exit_notify(task_struct* t, std::source_location where) TASKLIFE_EXCLUDES(tasklist_lock_);
  // Reparents t's children to the child reaper.
  void forget_children(task_struct* t) TASKLIFE_REQUIRES(tasklist_lock_);
  void list_add(task_struct* t) TASKLIFE_REQUIRES(tasklist_lock_);
  void list_del(task_struct* t) TASKLIFE_REQUIRES(tasklist_lock_);

  kernel_config config_;
  std::unique_ptr<rcu_domain> rcu_;
  mutable detail::mutex namespaces_mutex_;
  // Every namespace, the root first; a namespace never moves once created.
  std::deque<std::unique_ptr<pid_namespace>> namespaces_ TASKLIFE_GUARDED_BY(namespaces_mutex_);
  pid_namespace* init_ns_ = nullptr;  // set by the constructor, read-only after

  // The task list and parent/children links (the kernel's tasklist_lock).
  mutable detail::mutex tasklist_lock_;
  task_struct* tasks_ TASKLIFE_GUARDED_BY(tasklist_lock_) = nullptr;

  // rcu_users_in_union profiles: the last task whose callback is queued, standing
  // for the tail of the kernel's per-CPU callback list (see on_rcu_users_zero).
  detail::mutex union_mutex_;
  task_struct* union_tail_ TASKLIFE_GUARDED_BY(union_mutex_) = nullptr;

  // The parts.
  const std::unique_ptr<detail::event_log> log_;
  const std::unique_ptr<detail::holder_tracker> holders_;
  const std::unique_ptr<detail::task_quarantine> quarantine_;
  tracepoint task_newtask_{"task_newtask"};
  tracepoint sched_process_exit_{"sched_process_exit"};
  tracepoint sched_process_free_{"sched_process_free"};

  // Relaxed: ids only need to be unique.
  std::atomic<std::uint64_t> next_id_{1};

  // Has any task of this kernel ever been traced or holder-tracked? Once true it
  // stays true. The kfuncs' inline fast paths test this instead of the task's own
  // flags, which share the counters' cache line: a read of a contended counter's
  // line right before its locked RMW costs a second coherence transaction. Alone on
  // its cache line, written at most once, it stays clean in every core's cache.
  // Written (release) before the traced task is published; the fast paths read it
  // relaxed after an operation that synchronises with that publication: the
  // caller's own acquisition of the task, or bpf_task_from_pid's acquire load of
  // the pid table (which re-tests the task's flags after it).
  alignas(64) std::atomic<bool> any_task_slow_{false};
  char any_task_slow_pad_[63] = {};
  // Statistics: relaxed.
  std::atomic<std::uint64_t> forked_{0};
  std::atomic<std::uint64_t> fork_failures_{0};
  std::atomic<std::uint64_t> rcu_users_zero_{0};
  std::atomic<std::uint64_t> gp_elapsed_{0};
  std::atomic<std::uint64_t> freed_{0};
  std::atomic<std::uint64_t> torn_down_{0};
  // The live current_task_scopes of this kernel's tasks; kept (not destroyed)
  // when the kernel goes while some are alive (see Lifetime).
  std::unique_ptr<detail::scope_anchor> scopes_ = std::make_unique<detail::scope_anchor>();
  bool shut_down_ = false;
};

namespace detail {

// The door to the kernel's internal hooks, for tasklife's own layers (the
// lifetime functions of task.hpp, the kfuncs, the programs); not for users.
struct kernel_access {
  // rcu_users reached 0: call_rcu(delayed_put_task_struct).
  static void on_rcu_users_zero(kernel& k, task_struct* t, std::source_location where) {
    k.on_rcu_users_zero(t, where);
  }
  // delayed_put_task_struct's first half: the grace period is over.
  static void on_delayed_put(kernel& k, task_struct* t) { k.on_delayed_put(t); }
  // __put_task_struct's free (or a failed fork's).
  static void free_task(kernel& k, task_struct* t, std::source_location where, bool fork_failure) {
    k.free_task(t, where, fork_failure);
  }
  // Records an event for a traced task, with the counters as given (the caller
  // knows better: after a decrement the task may already be gone) or as they are.
  static void record(kernel& k, task_struct* t, task_event_kind kind, unsigned usage,
                     unsigned rcu_users, std::string_view detail, std::source_location where) {
    k.record(t, kind, usage, rcu_users, detail, where);
  }
  static void record_now(kernel& k, task_struct* t, task_event_kind kind, std::string_view detail,
                         std::source_location where) {
    if (t->traced.load(std::memory_order_relaxed)) {
      k.record(t, kind, refcount_read(&t->usage), refcount_read(&t->rcu_users), detail, where);
    }
  }
  // Holder tracking; no-ops for untracked tasks. track_put is false for a release
  // without a live holder (reported): the caller must not carry out the put.
  static void track_get(kernel& k, task_struct* t, holder_counter counter, holder_role role,
                        std::string_view label, std::source_location where) {
    k.track_get(t, counter, role, label, where);
  }
  static bool track_put(kernel& k, task_struct* t, holder_counter counter, holder_role role,
                        std::string_view op, std::source_location where) {
    return k.track_put(t, counter, role, op, where);
  }
  // t->real_parent, read under tasklist_lock (reparenting writes it).
  static task_struct* real_parent(kernel& k, const task_struct* t) {
    const lock_guard lock(k.tasklist_lock_);
    return t->real_parent;
  }
  // The first task after `after` on the task list (from its head when `after` is
  // NULL) that `keep` accepts, or NULL at the end: the task iterator's walk
  // (kfunc.hpp). `keep` runs under tasklist_lock. `after` must still be on the
  // list (a task stays there until it is freed).
  template <class Keep>
  static task_struct* next_listed_task(kernel& k, const task_struct* after, Keep keep) {
    const lock_guard lock(k.tasklist_lock_);
    for (task_struct* t = after != nullptr ? after->priv.next : k.tasks_; t != nullptr;
         t = t->priv.next) {
      if (keep(static_cast<const task_struct*>(t))) {
        return t;
      }
    }
    return nullptr;
  }
  // See kernel::any_task_slow_.
  static bool any_task_slow(const kernel& k) noexcept {
    return k.any_task_slow_.load(std::memory_order_relaxed);
  }
  // Something that uses a kernel and may outlive it by mistake (a map). While
  // attached, the kernel's teardown reports it and sets `orphaned`; detach
  // returns false if that happened (the kernel is gone: touch nothing of it).
  TASKLIFE_API static void attach_dependent(kernel& k, kernel_dependent* d);
  TASKLIFE_API static bool detach_dependent(kernel_dependent* d) noexcept;
};

}  // namespace detail

}  // namespace tasklife
