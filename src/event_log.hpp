// The event log: one kernel's bounded record of its traced tasks' events.
//
// What it is
//   The history part of a kernel (history.hpp for the events themselves). Each
//   event gets the next sequence number and a timestamp relative to the log's
//   creation, is kept in a bounded FIFO (the oldest go first) and handed to the
//   listener, if one is set, in sequence order.
//
// Members
//   event_log(capacity), append(event), events(), history(task_id),
//   set_listener(fn), last_seq()
//
// Lifetime
//   Owned by its kernel; events are values and outlive their tasks. The
//   listener runs under the log's mutex: it must not record events itself.
//
// Memory ordering
//   Everything is guarded by mutex_, which also orders the listener's calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include <tasklife/history.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife::detail {

class event_log {
 public:
  explicit event_log(std::size_t capacity) : capacity_(capacity) {}

  // Nanoseconds since the log was created (the events' time base).
  std::uint64_t now_ns() const noexcept;
  // Numbers `e` (its seq field is overwritten), keeps it, tells the listener.
  void append(task_event e) TASKLIFE_EXCLUDES(mutex_);
  std::vector<task_event> events() const TASKLIFE_EXCLUDES(mutex_);
  std::vector<task_event> history(std::uint64_t task_id) const TASKLIFE_EXCLUDES(mutex_);
  void set_listener(std::function<void(const task_event&)> listener) TASKLIFE_EXCLUDES(mutex_);
  // The sequence number of the latest event (0 before any).
  std::uint64_t last_seq() const TASKLIFE_EXCLUDES(mutex_);

 private:
  const std::size_t capacity_;
  const std::chrono::steady_clock::time_point epoch_ = std::chrono::steady_clock::now();
  mutable mutex mutex_;
  std::deque<task_event> events_ TASKLIFE_GUARDED_BY(mutex_);
  std::function<void(const task_event&)> listener_ TASKLIFE_GUARDED_BY(mutex_);
  std::uint64_t seq_ TASKLIFE_GUARDED_BY(mutex_) = 0;
};

}  // namespace tasklife::detail
