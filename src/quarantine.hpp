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
//   deleted at once. The oldest quarantined task is deleted when the FIFO is full.
//
// Members
//   task_quarantine(capacity), admit, knows, release, destroy, drain, size
//
// Lifetime
//   Owned by its kernel; drain() (teardown) deletes everything still held.
//
// Memory ordering
//   The registry and the FIFO each have their own mutex. The poison is written
//   with relaxed stores before the task enters the FIFO: a racing use after the
//   free is the bug being reported, not an access that needs ordering.
#pragma once

#include <cstddef>
#include <unordered_set>

#include <tasklife/thread_safety.hpp>

namespace tasklife {
struct task_struct;
}  // namespace tasklife

namespace tasklife::detail {

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
  // Deletes a task that never reaches the quarantine (teardown of a leak).
  void destroy(task_struct* t) noexcept TASKLIFE_EXCLUDES(known_mutex_);
  // Deletes every quarantined task.
  void drain() TASKLIFE_EXCLUDES(fifo_mutex_, known_mutex_);
  std::size_t size() const TASKLIFE_EXCLUDES(fifo_mutex_);

 private:
  void poison(task_struct* t) noexcept;
  void unpoison(task_struct* t) noexcept;

  const std::size_t capacity_;
  mutable mutex known_mutex_;
  std::unordered_set<const task_struct*> known_ TASKLIFE_GUARDED_BY(known_mutex_);
  mutable mutex fifo_mutex_;
  task_struct* head_ TASKLIFE_GUARDED_BY(fifo_mutex_) = nullptr;  // oldest
  task_struct* tail_ TASKLIFE_GUARDED_BY(fifo_mutex_) = nullptr;
  std::size_t size_ TASKLIFE_GUARDED_BY(fifo_mutex_) = 0;
};

}  // namespace tasklife::detail
