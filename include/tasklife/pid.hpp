// tasklife/pid.hpp — pid namespaces and lock-free lookup of a task by number.
//
// What it is
//   A pid_namespace numbers the tasks visible in it. Namespaces nest: a task has
//   a number at each level from its own (active) namespace up to the root
//   (init_pid_ns), as struct pid's upid array does in the kernel. Numbers are
//   allocated cyclically below pid_max (1 .. pid_max - 1: the kernel's
//   idr_alloc_cyclic takes pid_max as an exclusive end): after a wrap-around the search restarts
//   at reserved_pids (the kernel's RESERVED_PIDS, 300), and a number freed by a
//   reaped task can be handed to a new one, so a stale number can later name a
//   different task.
//
//   The table is the one the kernel's idr plays: a flat array indexed by number,
//   sized pid_max when the namespace is created and never resized, whose
//   entries are atomic task pointers. Lookup is two loads, no lock: on the 2-core
//   dev machine an RCU-protected array indexed by pid measured fastest, ahead of
//   a shared_mutex + unordered_map, itself ~3x ahead of liburcu's rculfhash at
//   100k entries (docs/benchmarks.md). Allocation and freeing of numbers take a
//   per-namespace mutex.
//
// Members
//   pid_namespace                     level, parent, pid_max, find_task, counts
//   detail::pid_lookup                a namespace's lookup, cached by the kfuncs' context
//   find_task_by_pid_ns(nr, ns)       the task numbered nr in ns, or nullptr (RCU held)
//   find_task_by_vpid(nr)             the same in current's namespace
//   task_active_pid_ns(t)             the namespace t was created in (its deepest level)
//   task_pid_nr_ns(t, ns), task_pid_vnr(t), task_pid_nr(t)
//
// Lifetime
//   Namespaces are created and owned by their kernel (the constructor is not
//   public: kernel::create_pid_namespace) and live until it is destroyed.
//   The functions below report a NULL task or namespace (null_argument) and, in
//   checked builds, a task that is freed or no task at all, and return
//   nullptr / 0. A task is hashed at every level by fork and unhashed from every
//   level by release_task before its reap-side rcu_users drop; a pointer found
//   by a lookup is therefore valid until the caller's RCU read-side critical
//   section ends, but its rcu_users may already be 0: take a reference with
//   refcount_inc_not_zero(&t->rcu_users) (bpf_task_acquire) inside the section.
//
// Memory ordering
//   hash publishes the task with a release store into the table (pairs with the
//   acquire load in find_task), so a reader that finds a task sees it fully
//   initialised. unhash stores nullptr (relaxed is enough: it publishes
//   nothing; the reclaim it precedes is ordered by the grace period). The free
//   numbers are guarded by the namespace's mutex.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <source_location>
#include <sys/types.h>
#include <vector>

#include <tasklife/export.hpp>
#include <tasklife/task.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {

inline constexpr int PID_MAX_DEFAULT = 0x8000;  // 32768
inline constexpr int PID_MAX_LIMIT = 4 * 1024 * 1024;
inline constexpr int RESERVED_PIDS = 300;
inline constexpr unsigned int MAX_PID_NS_LEVEL = 32;

class pid_namespace;

namespace detail {
// A namespace's lookup with its two fields already in hand: what find_task reads,
// for the one caller that caches it (the kfuncs' thread-local context, so that
// bpf_task_from_pid's dependent chain before its first cache miss is the
// thread-local line and the table entry). Only this header knows what is inside.
class pid_lookup {
 public:
  constexpr pid_lookup() noexcept = default;
  explicit pid_lookup(const pid_namespace& ns) noexcept;
  // find_task without the RCU check: the caller holds the read lock.
  task_struct* find(pid_t nr) const noexcept {
    if (nr <= 0 || nr >= pid_max_) {
      return nullptr;
    }
    // Acquire pairs with the release in pid_namespace::hash(): the task is seen
    // fully initialised.
    return table_[static_cast<std::size_t>(nr)].load(std::memory_order_acquire);
  }

 private:
  const std::atomic<task_struct*>* table_ = nullptr;
  int pid_max_ = 0;
};
}  // namespace detail

class TASKLIFE_API pid_namespace {
 public:
  ~pid_namespace();
  pid_namespace(const pid_namespace&) = delete;
  pid_namespace& operator=(const pid_namespace&) = delete;

  unsigned int level() const noexcept { return level_; }
  // The root of this namespace's tree (init_pid_ns of its kernel).
  const pid_namespace* root() const noexcept {
    const pid_namespace* ns = this;
    while (ns->parent_ != nullptr) {
      ns = ns->parent_;
    }
    return ns;
  }
  pid_namespace* parent() const noexcept { return parent_; }
  kernel& owner() const noexcept { return owner_; }
  int pid_max() const noexcept { return pid_max_; }

  // The task numbered `nr` here, or nullptr (also for nr <= 0 or nr >= pid_max).
  // Lock-free. The caller must hold the RCU read lock (checked builds: reported,
  // and nullptr if the handler returns).
  task_struct* find_task(pid_t nr,
                         std::source_location where = std::source_location::current()) const {
    if constexpr (contract_checks_enabled) {
      if (!check_rcu_held(nr, where)) [[unlikely]] {
        return nullptr;  // reported; a handler that returns skips the lookup
      }
    }
    return detail::pid_lookup(*this).find(nr);
  }

  std::size_t nr_hashed() const noexcept { return nr_hashed_.load(std::memory_order_relaxed); }
  // find_task_by_pid_ns' RCU_LOCKDEP_WARN (checked builds): false if reported.
  bool check_rcu_held(pid_t nr, std::source_location where) const;
  std::size_t nr_allocated() const;

  // The namespace's init (pid 1), which adopts orphans; nullptr once it is gone.
  task_struct* child_reaper() const noexcept {
    return child_reaper_.load(std::memory_order_acquire);
  }

 private:
  friend class kernel;  // creates namespaces; fork and release_task number, hash and unhash tasks
  // Only kernel creates namespaces (kernel::create_pid_namespace): pid_max and
  // reserved_pids come validated from kernel_config. Out of range here they are
  // reported (invalid_argument) and replaced by the defaults.
  pid_namespace(kernel& owner, pid_namespace* parent, int pid_max, int reserved_pids);
  pid_t alloc_nr() TASKLIFE_EXCLUDES(alloc_mutex_);  // -EAGAIN when every number is in use
  // A number outside [1, pid_max] or not allocated is reported and ignored.
  void free_nr(pid_t nr) noexcept TASKLIFE_EXCLUDES(alloc_mutex_);
  void hash(pid_t nr, task_struct* t) noexcept;
  void unhash(pid_t nr, task_struct* t) noexcept;
  void set_child_reaper(task_struct* t) noexcept {
    child_reaper_.store(t, std::memory_order_release);  // pairs with child_reaper()
  }

  bool is_free(pid_t nr) const TASKLIFE_REQUIRES(alloc_mutex_);

  kernel& owner_;
  pid_namespace* const parent_;
  const unsigned int level_;
  const int pid_max_;
  const int reserved_pids_;
  std::unique_ptr<std::atomic<task_struct*>[]> table_;  // pid_max_ entries
  std::atomic<std::size_t> nr_hashed_{0};               // relaxed: a statistic
  std::atomic<task_struct*> child_reaper_{nullptr};

  mutable detail::mutex alloc_mutex_;
  std::vector<std::uint64_t> allocated_ TASKLIFE_GUARDED_BY(alloc_mutex_);  // bitmap
  std::size_t nr_allocated_ TASKLIFE_GUARDED_BY(alloc_mutex_) = 0;
  pid_t last_pid_ TASKLIFE_GUARDED_BY(alloc_mutex_) = 0;

  friend class detail::pid_lookup;
};

inline detail::pid_lookup::pid_lookup(const pid_namespace& ns) noexcept
    : table_(ns.table_.get()), pid_max_(ns.pid_max_) {}

// find_task_by_pid_ns: the task numbered nr in ns; the caller holds the RCU read lock.
TASKLIFE_API task_struct* find_task_by_pid_ns(
    pid_t nr, pid_namespace* ns, std::source_location where = std::source_location::current());

// find_task_by_vpid: the same in the active namespace of current (get_current()).
TASKLIFE_API task_struct* find_task_by_vpid(
    pid_t vnr, std::source_location where = std::source_location::current());

// The namespace t was created in: its deepest level; nullptr once t was released
// (release_task detached its pid, as the kernel's detach_pid clears thread_pid).
TASKLIFE_API pid_namespace* task_active_pid_ns(const task_struct* t) noexcept;

// t's number in ns, or 0 when t is not visible there or was released.
TASKLIFE_API pid_t task_pid_nr_ns(const task_struct* t, const pid_namespace* ns) noexcept;
// t's number in current's namespace.
TASKLIFE_API pid_t task_pid_vnr(const task_struct* t) noexcept;
// t's number in the root namespace (t->pid).
TASKLIFE_API pid_t task_pid_nr(const task_struct* t) noexcept;

}  // namespace tasklife
