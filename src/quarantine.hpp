// The quarantine: where a kernel's tasks go when they are freed, and the
// registry of every task it still has memory for.
//
// What it is
//   The part of a kernel that owns the memory of its tasks between allocation and
//   the real delete. admit() registers a new task (checked builds), knows() tells
//   whether a pointer is one of them without dereferencing it, and release()
//   disposes of a freed task: in full-check builds it is poisoned (the slab's
//   POISON_FREE in the lifetime fields, ASan's manual poisoning of them when built
//   with ASan) and kept in a bounded FIFO, so a later use through the library is
//   reported as a use-after-free naming the task; without full checks it is
//   deleted at once. The oldest quarantined task leaves the FIFO when it is full.
//
//   What leaves a quarantine is not deleted (full checks): it goes to the
//   process-wide task pool, still poisoned, where fork takes memory from, oldest
//   first. So a freed task's memory is only ever reused by another task, never by
//   anything else, and a use through the library is reported as a use-after-free
//   until a later fork reuses it: after quarantine_capacity later frees of its
//   kernel and, once in the pool, after every task that entered the pool before
//   it has been reused. The pool holds at most the process's peak number of tasks
//   allocated at once; its memory is never given back to the allocator.
//
//   Teardown tombstones (checked builds): a task a destroyed kernel never freed
//   (a leak) may still be held by someone; it is marked torn down and kept, never
//   reused, until the process exits, so that a later put is reported
//   (teardown_order) instead of touching freed memory.
//
// Members
//   task_quarantine(capacity), admit, knows, release, destroy, drain, size
//   allocate_task, bury_task, graveyard_state, graveyard_kernel_name
//
// Lifetime
//   Owned by its kernel; drain() (teardown) hands everything still held to the
//   pool (full checks) or deletes it. The pool and the tombstones live until the
//   process exits.
//
// Memory ordering
//   The registry and the FIFO each have their own mutex. The poison is written
//   with relaxed stores before the task enters the FIFO: a racing use after the
//   free is the bug being reported, not an access that needs ordering.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>

#include <tasklife/thread_safety.hpp>

namespace tasklife {
struct task_struct;
}  // namespace tasklife

namespace tasklife::detail {

// fork's allocation: memory of a task that left a quarantine (the oldest), or new.
task_struct* allocate_task();
// Keeps a torn-down task (a leak at teardown) until the process exits; `kernel`
// names the destroyed kernel for later reports.
void bury_task(task_struct* t, std::string_view kernel) noexcept;
enum class graveyard_state { unknown, pooled, tombstone };
// Whether `t` is in the pool (freed, out of its quarantine) or a tombstone. Never
// dereferences `t`. Checked builds only (unknown otherwise).
graveyard_state graveyard_lookup(const task_struct* t) noexcept;
// The destroyed kernel a tombstone belonged to ("" if `t` is none).
std::string graveyard_kernel_name(const task_struct* t);

class task_quarantine {
 public:
  explicit task_quarantine(std::size_t capacity) : capacity_(capacity) {}
  task_quarantine(const task_quarantine&) = delete;
  task_quarantine& operator=(const task_quarantine&) = delete;

  void admit(const task_struct* t) TASKLIFE_EXCLUDES(known_mutex_);
  // Is `t` a task whose memory is still held (live, or freed and quarantined)?
  // Never dereferences `t`. Without contract checks: only `t != nullptr`.
  bool knows(const task_struct* t) const TASKLIFE_EXCLUDES(known_mutex_);
  // A freed task: quarantined (full checks) or deleted.
  void release(task_struct* t) TASKLIFE_EXCLUDES(fifo_mutex_, known_mutex_);
  // Deletes a task that never reaches the quarantine.
  void destroy(task_struct* t) noexcept TASKLIFE_EXCLUDES(known_mutex_);
  // Teardown of a leak: a tombstone in checked builds (bury_task), else deleted.
  void bury(task_struct* t, std::string_view kernel) noexcept TASKLIFE_EXCLUDES(known_mutex_);
  // Hands every quarantined task to the pool (full checks).
  void drain() TASKLIFE_EXCLUDES(fifo_mutex_, known_mutex_);
  std::size_t size() const TASKLIFE_EXCLUDES(fifo_mutex_);

 private:
  void poison(task_struct* t) noexcept;
  void forget(const task_struct* t) noexcept TASKLIFE_EXCLUDES(known_mutex_);

  const std::size_t capacity_;
  mutable mutex known_mutex_;
  std::unordered_set<const task_struct*> known_ TASKLIFE_GUARDED_BY(known_mutex_);
  mutable mutex fifo_mutex_;
  task_struct* head_ TASKLIFE_GUARDED_BY(fifo_mutex_) = nullptr;  // oldest
  task_struct* tail_ TASKLIFE_GUARDED_BY(fifo_mutex_) = nullptr;
  std::size_t size_ TASKLIFE_GUARDED_BY(fifo_mutex_) = 0;
};

}  // namespace tasklife::detail
