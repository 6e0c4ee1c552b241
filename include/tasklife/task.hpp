// tasklife/task.hpp — struct task_struct and the kernel's functions that keep it alive.
//
// What it is
//   The lifetime-relevant part of the kernel's task_struct: the two counters and
//   the RCU callback head, identity (pid, tgid, comm), parent, exit state and the
//   flags that matter to lifetime. Everything else a task has in the kernel is
//   left out. The functions below are the kernel's, under the kernel's names
//   (include/linux/sched/task.h, kernel/fork.c, kernel/exit.c):
//
//   | function                    | counter          | on reaching 0                          |
//   |-----------------------------|------------------|----------------------------------------|
//   | get_task_struct             | usage +1         | (inc from 0: ADD_UAF warning)          |
//   | tryget_task_struct          | usage +1 if > 0  | NULL when usage is 0                   |
//   | put_task_struct             | usage -1         | __put_task_struct, now (<= v6.16) or   |
//   |                             |                  | after a grace period (v6.17+, config)  |
//   | put_task_struct_many        | usage -n         | __put_task_struct, always now          |
//   | put_task_struct_rcu_user    | rcu_users -1     | call_rcu(delayed_put_task_struct)      |
//   | delayed_put_task_struct     | usage -1 (cb)    | fires sched_process_free, then put     |
//   | __put_task_struct           | -                | frees the task                         |
//
//   A new task starts with usage = 1 ("one for the rcu users") and rcu_users = 2
//   (one for the reaper's release_task, one for the scheduler's final switch).
//
// Members
//   task_struct          the task (public kernel fields; internals in `detail`)
//   PF_*, EXIT_*, TASK_* the kernel's flag and state values that matter here
//   the lifetime functions above; task_kernel(t) names the owning kernel,
//   task_id(t) its stable id
//
// Lifetime
//   A task's memory is freed only when usage reaches 0, and never before one
//   grace period has passed since rcu_users reached 0 (the rcu_users group owns
//   one usage reference and gives it back from an RCU callback). A usage holder
//   keeps the memory longer, without a further grace period (the final put frees
//   at once on <= v6.16). So: a pointer found inside an RCU read-side critical
//   section while rcu_users > 0 stays valid until the section ends; a usage
//   reference keeps it valid until put_task_struct.
//   In checked builds (TASKLIFE_CHECKS=full) a freed task is poisoned and kept in
//   a bounded quarantine, then in the process-wide pool whose memory only new
//   tasks reuse (src/quarantine.hpp states the bound); any use through the
//   library until then is reported as a use-after-free naming the task, its pid
//   and the event that freed it.
//   Teardown mistakes leave memory valid: a task its kernel's destruction found
//   still referenced (a leak) is reported, then kept as a tombstone until the
//   process exits (checked builds); a later put or get on it is reported
//   (teardown_order) and not carried out.
//   Over-release (checked builds): a put may not take a counter below the
//   references the task's own lifecycle still holds — rcu_users keeps the
//   scheduler's until the final switch and the reaper's until the reap, usage
//   keeps the rcu_users group's until its grace period has ended. The put that
//   would is reported (over_release) at its call site and not carried out.
//   NULL is a contract violation (null_argument) for every function here, the
//   RCU callbacks included.
//
// Memory ordering
//   The counters are refcount_t (see refcount.hpp): increments relaxed, the
//   decrement that reaches 0 acquires every other holder's release, so the free
//   is ordered after every access made under a reference. The free after
//   rcu_users reaches 0 is additionally ordered after every RCU reader by the
//   grace period (rcu.hpp). flags, exit_state and state are atomics: written with
//   release by the lifecycle operation that changes them and read with acquire by
//   whoever decides on them (pairs named where they are written, src/fork.cpp and src/exit.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <source_location>
#include <sys/types.h>

#include <tasklife/check.hpp>
#include <tasklife/export.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/refcount.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {

class kernel;
class pid_namespace;
struct task_struct;

inline constexpr int TASK_COMM_LEN = 16;

// task->flags (include/linux/sched.h values).
inline constexpr unsigned int PF_IDLE = 0x00000002;
inline constexpr unsigned int PF_EXITING = 0x00000004;
inline constexpr unsigned int PF_KTHREAD = 0x00200000;

// task->exit_state.
inline constexpr int EXIT_DEAD = 0x00000010;
inline constexpr int EXIT_ZOMBIE = 0x00000020;

// task->__state (tasklife spells it `state`: identifiers with a double underscore
// are reserved in C++).
inline constexpr unsigned int TASK_RUNNING = 0x00000000;
inline constexpr unsigned int TASK_DEAD = 0x00000080;

// One level of a task's pid: its number in one namespace (struct upid).
struct upid {
  pid_t nr;
  pid_namespace* ns;
};

namespace detail {

struct task_history;
struct task_storage_elem;
// Every task's and every task storage map's list of values (map.hpp's
// bpf_task_storage_map; defined in src/task_storage.cpp, not exported: only the
// library takes it). One lock where the kernel has one per task's storage and per
// map bucket: the lists are short and the helpers rare next to acquire and release,
// which never take it. free_task does, for every task freed, once any task storage
// map has been made in the process.
extern mutex task_storage_lock;

// A task's pid numbers, level 0 (root) to its active namespace's level: the
// kernel's struct pid numbers[]. The root level lives inside the task itself, so
// forking a task of the root namespace is one allocation (the task allocated with
// its pid number) and tasks lie densely in memory: bpf_task_from_pid over many
// tasks touches fewer pages. A task of a child namespace takes one more
// allocation for its deeper levels.
class pid_numbers {
 public:
  static constexpr std::size_t inline_levels = 1;

  pid_numbers() = default;
  ~pid_numbers() { delete[] more_; }
  pid_numbers(const pid_numbers&) = delete;
  pid_numbers& operator=(const pid_numbers&) = delete;

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  upid& operator[](std::size_t level) noexcept {
    return level < inline_levels ? inline_[level] : more_[level - inline_levels];
  }
  const upid& operator[](std::size_t level) const noexcept {
    return level < inline_levels ? inline_[level] : more_[level - inline_levels];
  }
  const upid& back() const noexcept { return (*this)[size_ - 1]; }
  // Levels 0 .. n-1, each {0, nullptr}.
  void resize(std::size_t n) {
    clear();
    if (n > inline_levels) {
      more_ = new upid[n - inline_levels]();
    }
    for (std::size_t l = 0; l < n && l < inline_levels; ++l) {
      inline_[l] = upid{0, nullptr};
    }
    size_ = static_cast<std::uint32_t>(n);
  }
  void clear() noexcept {
    delete[] more_;
    more_ = nullptr;
    size_ = 0;
  }

  template <class Self, class Upid>
  class iterator_base {
   public:
    iterator_base(Self* self, std::size_t level) : self_(self), level_(level) {}
    Upid& operator*() const noexcept { return (*self_)[level_]; }
    iterator_base& operator++() noexcept {
      ++level_;
      return *this;
    }
    bool operator==(const iterator_base& other) const noexcept { return level_ == other.level_; }

   private:
    Self* self_;
    std::size_t level_;
  };
  using const_iterator = iterator_base<const pid_numbers, const upid>;
  const_iterator begin() const noexcept { return {this, 0}; }
  const_iterator end() const noexcept { return {this, size_}; }

 private:
  upid inline_[inline_levels] = {};
  // A raw owning pointer, not std::unique_ptr: task_struct must stay
  // standard-layout (its rcu head is mapped back with offsetof), which clang does
  // not grant libstdc++'s unique_ptr.
  upid* more_ = nullptr;    // levels inline_levels .. size_ - 1
  std::uint32_t size_ = 0;  // at most MAX_PID_NS_LEVEL + 1
};

// What tasklife keeps beside the kernel's fields. Not part of the API.
struct task_private {
  kernel* owner = nullptr;
  std::uint64_t id = 0;                 // unique within the owning kernel, never reused
  std::atomic<std::uint32_t> magic{0};  // task_alive_magic until freed (checked builds)
  bool autoreap = false;                // exit_notify releases the task itself
  bool on_list = false;                 // on the kernel's task list (under tasklist_lock)
  std::atomic<bool> final_switch_done{false};
  std::atomic<bool> rcu_users_zero_seen{false};
  // delayed_put_task_struct has begun: the rcu_users group's usage reference is
  // being given back (the over-release floor, src/task.cpp).
  std::atomic<bool> group_put_started{false};
  pid_numbers numbers;                    // level 0 (root) .. level of the active namespace
  std::atomic<bool> pid_detached{false};  // release_task ran: thread_pid is NULL in the kernel
  // The kernel's task list and the parent's children list, under tasklist_lock.
  task_struct* prev = nullptr;
  task_struct* next = nullptr;
  task_struct* children = nullptr;  // first child
  task_struct* sibling_next = nullptr;
  task_struct* sibling_prev = nullptr;
  // The thread group (the kernel's signal->thread_head and thread_node), under
  // tasklist_lock: a leader lists its threads; a thread is on its leader's list
  // from fork until release_task. Only leaders are on a parent's children list.
  task_struct* threads = nullptr;  // a leader's first thread
  task_struct* thread_next = nullptr;
  task_struct* thread_prev = nullptr;
  // A leader whose reap retire() found delayed (delay_group_leader): its parent
  // waits, and is woken to reap it by the last thread's release_task.
  bool parent_waits = false;
  // Task local storage (map.hpp): the kernel's task->bpf_storage, this task's
  // values, one per task storage map.
  task_storage_elem* bpf_storage TASKLIFE_GUARDED_BY(task_storage_lock) = nullptr;
  // Kept after the free for the use-after-free report.
  std::uint64_t freed_event = 0;
  std::source_location freed_where{};
  bool freed_by_fork_failure = false;
  task_struct* quarantine_next = nullptr;
};

inline constexpr std::uint32_t task_alive_magic = 0x7a5c11feU;
inline constexpr std::uint32_t task_freed_magic = 0x6b6b6b6bU;  // the slab's POISON_FREE
// A task its kernel's teardown found never freed (a leak), kept as a tombstone.
inline constexpr std::uint32_t task_torn_down_magic = 0x7a5cdeadU;

}  // namespace detail

struct task_struct {
  // The lifetime fields first: one cache line for acquire/release.
  refcount_t usage;
  refcount_t rcu_users;
  // tasklife: record this task's events (history.hpp). Beside the counters so the
  // hot paths' "traced?" test touches no other cache line.
  std::atomic<bool> traced{false};
  // tasklife: every reference is tracked with its holder (kernel_config::
  // track_holders); set at fork, read-only afterwards.
  bool holders_tracked = false;
  rcu_head rcu;

  std::atomic<unsigned int> flags{0};
  std::atomic<int> exit_state{0};
  std::atomic<unsigned int> state{TASK_RUNNING};
  int exit_code = 0;
  pid_t tgid = 0;
  task_struct* real_parent = nullptr;  // under the kernel's tasklist_lock
  task_struct* group_leader = nullptr;

  // Identity last: a freed task keeps pid and comm readable (with priv) for the
  // use-after-free report; everything above is poisoned in quarantine.
  pid_t pid = 0;  // the number in the root namespace (init_pid_ns)
  char comm[TASK_COMM_LEN] = {};

  detail::task_private priv;
};

// The kernel that owns `t`.
inline kernel& task_kernel(const task_struct* t) noexcept {
  return *t->priv.owner;
}

// tasklife: the task's id, unique within its kernel and never reused (1, 2, ...;
// 0 names no task). Stable for the task's whole life and after it: diagnostics
// (diagnostic_object::task_id), history and leak reports name tasks by it.
inline std::uint64_t task_id(const task_struct* t) noexcept {
  return t->priv.id;
}

// get_task_struct: usage +1 (relaxed refcount_inc; from 0: ADD_UAF warning). Returns t.
TASKLIFE_API task_struct* get_task_struct(
    task_struct* t, std::source_location where = std::source_location::current());

// tryget_task_struct: usage +1 unless it is 0; t or nullptr.
[[nodiscard]] TASKLIFE_API task_struct* tryget_task_struct(
    task_struct* t, std::source_location where = std::source_location::current());

// put_task_struct: usage -1; the last one calls __put_task_struct, immediately
// (<= v6.16) or via call_rcu(__put_task_struct_rcu_cb) (v6.17+); see kernel_config.
TASKLIFE_API void put_task_struct(task_struct* t,
                                  std::source_location where = std::source_location::current());

// put_task_struct_many: usage -n; the last one calls __put_task_struct directly.
TASKLIFE_API void put_task_struct_many(
    task_struct* t, int nr, std::source_location where = std::source_location::current());

// put_task_struct_rcu_user: rcu_users -1; the last one queues delayed_put_task_struct.
TASKLIFE_API void put_task_struct_rcu_user(
    task_struct* t, std::source_location where = std::source_location::current());

// The RCU callbacks, exposed under their kernel names for documentation and tests.
TASKLIFE_API void delayed_put_task_struct(rcu_head* rhp);
TASKLIFE_API void __put_task_struct_rcu_cb(rcu_head* rhp);  // NOLINT(bugprone-reserved-identifier)

// __put_task_struct: frees. Preconditions (warned, as the kernel's WARN_ONs): the
// task has an exit_state, usage reads 0, and it is not current.
TASKLIFE_API void __put_task_struct(  // NOLINT(bugprone-reserved-identifier)
    task_struct* t, std::source_location where = std::source_location::current());

}  // namespace tasklife
