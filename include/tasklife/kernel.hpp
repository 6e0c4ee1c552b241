// tasklife/kernel.hpp — the simulated system: RCU domain, pid namespaces, tasks.
//
// What it is
//   A kernel owns everything one simulated system has: its RCU domain, its pid
//   namespaces, its tasks, its configuration and its tracepoints. Instances are
//   independent: a test harness creates one per test. The lifecycle operations
//   follow the kernel's own path and names:
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
//
//   Both orders of section 2.4 of the kernel notes end in the same freed state:
//   A (zombie): do_exit -> finish_task_switch -> wait_task_zombie -> GP -> free;
//   B (autoreap): do_exit (unhash, 2 -> 1) -> finish_task_switch (1 -> 0) -> GP -> free.
//
// Members
//   kernel_config, clone_args, fork_result, kernel_stats, leaked_task
//   kernel: rcu(), init_pid_ns(), create_pid_namespace(), fork(), do_exit(),
//           finish_task_switch(), wait_task_zombie(), run_as(), tracepoints,
//           history, stats(), shutdown()
//   tracepoint            attach/detach probes; the task argument is trusted
//   current_task_scope    RAII "this thread runs as task t" (registers it with RCU)
//   get_current()         the task this thread runs as, or nullptr (`current`)
//
// Lifetime
//   Tasks and namespaces belong to their kernel. Destroying a kernel (or calling
//   shutdown()) waits for every pending RCU callback, chained ones included, then
//   reports each task that was never freed, with its counters, as a leak (to the
//   contract handler, component "kernel", and in shutdown()'s result), and frees
//   it. A current_task_scope must end before its kernel does.
//
// Memory ordering
//   Lifecycle state is published with release and read with acquire (see
//   task.hpp); the task list and parent/children links are guarded by
//   tasklist_lock (a mutex), as in the kernel; the pid tables are lock-free for
//   readers (pid.hpp). Statistics are relaxed counters.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <source_location>
#include <string>
#include <sys/types.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <tasklife/check.hpp>
#include <tasklife/export.hpp>
#include <tasklife/history.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/task.hpp>

namespace tasklife {

// How the final put_task_struct frees (kernel/fork.c, section 1.7 of the notes).
enum class final_put_mode {
  immediate,  // <= v6.16 (non-RT): __put_task_struct inline
  deferred,   // v6.17+ (8671bad873eb): always call_rcu(__put_task_struct_rcu_cb)
};

// The kernel's history of the BPF task kfuncs, selectable per kernel instance
// (kfunc.hpp documents each kfunc in each profile; docs/kfuncs.md has the table).
enum class semantics_profile {
  // 90660309b0c7 (Nov 2022): bpf_task_acquire is an unconditional
  // refcount_inc(&rcu_users); bpf_task_kptr_get and bpf_task_acquire_not_zero
  // exist; bpf_task_from_pid ignores the acquire result; rcu_users shares its
  // storage with the RCU callback head (the union of v5.4 .. v6.3).
  rcu_users_inc,
  // 156ed20d22ee (Dec 2022, v6.2 .. v6.3): acquire/release use usage
  // (get_task_struct / put_task_struct); kptr_get and acquire_not_zero always
  // return NULL; the union is still there.
  usage_based,
  // d02c48fa1139 + 22df776a9a86 + f85671c6ef46 (v6.4+): acquire is
  // refcount_inc_not_zero(&rcu_users), release put_task_struct_rcu_user; a task
  // read from a map slot under RCU may be acquired; the legacy kfuncs are gone;
  // rcu_users has its own storage.
  rcu_safe,
  // rcu_safe plus bpf_task_release_dtor (v6.8) and bpf_task_from_vpid (v6.13).
  current,
};

// rcu_users and the callback head shared storage before v6.4 (22df776a9a86).
constexpr bool rcu_users_in_union(semantics_profile p) noexcept {
  return p == semantics_profile::rcu_users_inc || p == semantics_profile::usage_based;
}

TASKLIFE_API std::string_view to_string(semantics_profile p) noexcept;

struct kernel_config {
  std::string name = "kernel";
  semantics_profile profile = semantics_profile::current;
  int pid_max = PID_MAX_DEFAULT;
  // Where cyclic allocation restarts after a wrap (the kernel's RESERVED_PIDS; the
  // kernel also keeps pid_max >= 301). Small values let tests wrap quickly.
  int reserved_pids = RESERVED_PIDS;
  final_put_mode final_put = final_put_mode::immediate;
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
  // Derived counts.
  std::uint64_t live() const noexcept { return forked - rcu_users_zero; }
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

// Holder tracking (kernel_config::track_holders).
enum class holder_counter : std::uint8_t { usage, rcu_users };
// Whose reference it is: the lifecycle's own three, or anyone else's.
enum class holder_role : std::uint8_t { reaper, scheduler, rcu_users_group, other };
struct holder_info {
  std::uint64_t id;
  holder_counter counter;
  holder_role role;
  std::string_view label;  // static text: "bpf_task_acquire", "get_task_struct", ...
  std::source_location taken_at;
};

// A tracepoint: probes run synchronously at the point the kernel fires it. The
// task argument is trusted in the BPF verifier's sense: valid for the probe's
// duration. Probes may not attach or detach probes of the same tracepoint.
class TASKLIFE_API tracepoint {
 public:
  using probe = std::function<void(task_struct*)>;
  explicit tracepoint(std::string name) : name_(std::move(name)) {}
  const std::string& name() const noexcept { return name_; }
  std::uint64_t attach(probe p);
  bool detach(std::uint64_t id);
  bool enabled() const noexcept { return enabled_.load(std::memory_order_acquire); }
  void fire(task_struct* t) const {
    if (enabled()) [[unlikely]] {
      fire_slow(t);
    }
  }

 private:
  struct entry {
    std::uint64_t id;
    probe fn;
  };
  void fire_slow(task_struct* t) const;

  std::string name_;
  // Acquire/release: pairs with attach/detach publishing the probe list.
  std::atomic<bool> enabled_{false};
  mutable std::mutex mutex_;
  std::shared_ptr<const std::vector<entry>> probes_;  // copy-on-write, guarded by mutex_
  std::uint64_t next_id_ = 1;                         // guarded by mutex_
};

class current_task_scope;

class TASKLIFE_API kernel {
 public:
  explicit kernel(kernel_config config = {});
  ~kernel();
  kernel(const kernel&) = delete;
  kernel& operator=(const kernel&) = delete;

  const kernel_config& config() const noexcept { return config_; }
  const std::string& name() const noexcept { return config_.name; }
  rcu_domain& rcu() noexcept { return *rcu_; }
  pid_namespace& init_pid_ns() noexcept { return *namespaces_.front(); }
  // A new namespace below `parent` (at most MAX_PID_NS_LEVEL deep); owned by the kernel.
  pid_namespace& create_pid_namespace(pid_namespace& parent);

  // ---- lifecycle ----------------------------------------------------------------------
  // copy_process + wake_up_new_task. parent == nullptr forks the first task of the
  // root namespace. The child becomes its namespace's child reaper if it is pid 1.
  fork_result fork(task_struct* parent, const clone_args& args = {},
                   std::source_location where = std::source_location::current());
  // do_exit: PF_EXITING, sched_process_exit, exit_notify, do_task_dead.
  void do_exit(task_struct* t, int code = 0,
               std::source_location where = std::source_location::current());
  // The final context switch away from a TASK_DEAD task.
  void finish_task_switch(task_struct* prev,
                          std::source_location where = std::source_location::current());
  // The parent's wait: reaps a zombie. False if p is not a zombie (or another
  // waiter won the EXIT_ZOMBIE -> EXIT_DEAD race).
  bool wait_task_zombie(task_struct* p,
                        std::source_location where = std::source_location::current());
  // The whole death of a task, in the order its kind dies: do_exit, the final
  // switch, and the parent's reap unless the task was autoreaped (a thread, or
  // clone_args::autoreap), whose exit_notify released it already. Whether to reap
  // is decided before the final switch: an autoreaped task may be freed by the
  // grace period that switch starts. The task may be freed when this returns (at
  // once, or after a grace period). False if do_exit refused (the task was
  // already exiting): nothing more is done.
  bool retire(task_struct* t, int code = 0,
              std::source_location where = std::source_location::current());

  // ---- current ------------------------------------------------------------------------
  current_task_scope run_as(task_struct* t,
                            std::source_location where = std::source_location::current());

  // ---- tracepoints --------------------------------------------------------------------
  tracepoint& task_newtask() noexcept { return task_newtask_; }
  tracepoint& sched_process_exit() noexcept { return sched_process_exit_; }
  tracepoint& sched_process_free() noexcept { return sched_process_free_; }

  // ---- history ------------------------------------------------------------------------
  void trace_task(task_struct* t, bool on = true) noexcept;
  std::vector<task_event> events() const;                        // every recorded event
  std::vector<task_event> history(std::uint64_t task_id) const;  // one task's
  std::vector<task_event> history(const task_struct* t) const { return history(t->priv.id); }
  void set_event_listener(std::function<void(const task_event&)> listener);
  // Records an event for a traced task (used by the layers above: kfuncs), with
  // the counters as they are now, or as given (when the caller knows better:
  // after a decrement the task may already be gone).
  void record(task_struct* t, task_event_kind kind, std::string_view detail,
              std::source_location where);
  void record(task_struct* t, task_event_kind kind, unsigned int usage, unsigned int rcu_users,
              std::string_view detail, std::source_location where);

  // ---- accounting and teardown ---------------------------------------------------------
  kernel_stats stats() const noexcept;
  // Tasks allocated and not yet freed, with their counters.
  std::vector<leaked_task> allocated_tasks() const;
  // The same, with each task's holders grouped by site (when tracked).
  std::vector<leaked_task> allocated_tasks_with_holders() const;
  // Drains RCU callbacks (chains included), reports and frees every task that was
  // never freed, empties the quarantine. Idempotent; the destructor calls it.
  std::vector<leaked_task> shutdown();

  // ---- holder tracking ------------------------------------------------------------------
  // The live holders of t's references (empty unless holders are tracked).
  std::vector<holder_info> holders(const task_struct* t) const;
  // As ref_tracker_dir_print: "usage has 1/2 users at get_task_struct (file:line)", ...
  std::string format_holders(const task_struct* t) const;
  // Used by the lifetime functions and kfuncs; no-ops for untracked tasks.
  void track_get(task_struct* t, holder_counter counter, holder_role role, std::string_view label,
                 std::source_location where);
  // False when there is no live holder to release (a double release): reported,
  // and the caller must not carry out the put.
  bool track_put(task_struct* t, holder_counter counter, holder_role role, std::string_view op,
                 std::source_location where);

  // Is `t` a task of this kernel that has not been freed? (walks the task list)
  bool owns_live_task(const task_struct* t) const;
  // Is `t` a task this kernel allocated whose memory it still holds (live, or
  // freed and in quarantine)? Never dereferences `t`. Checked builds keep the
  // registry; with TASKLIFE_CHECKS=none this only tests for NULL.
  bool knows_task(const task_struct* t) const;

  // ---- internal: called by task.cpp's lifetime functions --------------------------------
  void on_rcu_users_zero(task_struct* t, std::source_location where);
  void on_delayed_put(task_struct* t);
  void free_task(task_struct* t, std::source_location where, bool fork_failure);

 private:
  friend class current_task_scope;
  void release_task(task_struct* p, std::source_location where);
  void exit_notify(task_struct* t, std::source_location where);
  void forget_children(task_struct* t);  // reparent to the child reaper, under tasklist_lock
  void list_add(task_struct* t);
  void list_del(task_struct* t);
  void quarantine(task_struct* t);
  void emit(const task_event& e);

  kernel_config config_;
  std::unique_ptr<rcu_domain> rcu_;
  std::deque<std::unique_ptr<pid_namespace>> namespaces_;  // front: init_pid_ns
  std::mutex namespaces_mutex_;

  mutable std::mutex tasklist_lock_;  // the task list, parent/children links
  task_struct* tasks_ = nullptr;      // guarded by tasklist_lock_

  struct holder_entry {
    holder_info info;
    bool live;
    std::source_location dropped_at;
  };
  mutable std::mutex holders_mutex_;
  std::unordered_map<const task_struct*, std::vector<holder_entry>> holders_;  // guarded
  std::atomic<std::uint64_t> next_holder_id_{1};

  mutable std::mutex known_mutex_;
  std::unordered_set<const task_struct*> known_;  // guarded by known_mutex_ (checked builds)
  void forget_task(task_struct* t) noexcept;      // out of known_, then delete

  std::mutex quarantine_mutex_;
  task_struct* quarantine_head_ = nullptr;  // oldest; guarded by quarantine_mutex_
  task_struct* quarantine_tail_ = nullptr;
  std::size_t quarantine_size_ = 0;

  // rcu_users_in_union profiles: the last task whose callback is queued, standing
  // for the tail of the kernel's per-CPU callback list (see on_rcu_users_zero).
  std::mutex union_mutex_;
  task_struct* union_tail_ = nullptr;  // guarded by union_mutex_

  tracepoint task_newtask_{"task_newtask"};
  tracepoint sched_process_exit_{"sched_process_exit"};
  tracepoint sched_process_free_{"sched_process_free"};

  mutable std::mutex history_mutex_;
  std::deque<task_event> events_;  // guarded by history_mutex_
  std::function<void(const task_event&)> listener_;
  std::uint64_t event_seq_ = 0;

  const std::chrono::steady_clock::time_point epoch_ = std::chrono::steady_clock::now();
  std::atomic<std::uint64_t> next_id_{1};

 public:
  // Has any task of this kernel ever been traced or holder-tracked? Once true it
  // stays true. The kfuncs' inline fast paths test this instead of the task's own
  // flags, which share the counters' cache line: a read of a contended counter's
  // line right before its locked RMW costs a second coherence transaction. Alone on
  // its cache line, written at most once, it stays clean in every core's cache.
  // Written (release) before the traced task is published; the fast paths read it
  // relaxed after an operation that synchronises with that publication: the
  // caller's own acquisition of the task, or bpf_task_from_pid's acquire load of
  // the pid table (which re-tests the flag after it).
  bool any_task_slow() const noexcept { return any_task_slow_.load(std::memory_order_relaxed); }

 private:
  alignas(64) std::atomic<bool> any_task_slow_{false};
  char any_task_slow_pad_[63] = {};
  // Statistics: relaxed.
  std::atomic<std::uint64_t> forked_{0};
  std::atomic<std::uint64_t> fork_failures_{0};
  std::atomic<std::uint64_t> rcu_users_zero_{0};
  std::atomic<std::uint64_t> gp_elapsed_{0};
  std::atomic<std::uint64_t> freed_{0};
  std::atomic<std::uint64_t> torn_down_{0};
  std::atomic<std::size_t> current_scopes_{0};
  bool shut_down_ = false;
};

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
  prog_run* run;
  rcu_domain* rcu;         // owner->rcu(), for the kfuncs' inline fast paths
  pid_namespace* init_ns;  // &owner->init_pid_ns()
  // init_ns's table and pid_max: bpf_task_from_pid's dependent chain before its
  // first cache miss is then the thread-local line and the table entry.
  const std::atomic<task_struct*>* init_table;
  int init_pid_max;
};
TASKLIFE_API extern constinit thread_local current_context tls_ctx;
}  // namespace detail

// The task this thread runs as, or nullptr: the kernel's `current`.
TASKLIFE_API task_struct* get_current() noexcept;

// RAII: while alive, the calling thread runs as `t` (get_current() == t) and is
// registered with t's kernel's RCU domain. Nests; restores the previous current.
class TASKLIFE_API current_task_scope {
 public:
  current_task_scope(task_struct* t, std::source_location where = std::source_location::current());
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
  // bpf_prog::run's): restored as it was, never recomputed from tasks that may
  // have been freed meanwhile.
  detail::current_context saved_;
  rcu_thread_registration registration_;
};

}  // namespace tasklife
