// The event log (event_log.hpp).
#include "event_log.hpp"

#include <atomic>

#include <tasklife/sched_point.hpp>

#include "thread_state.hpp"

namespace tasklife {

std::uint32_t event_thread_id() noexcept {
  if (detail::tls_sim != nullptr) [[unlikely]] {
    return simulated_thread_bit | detail::sim_thread_number(*detail::tls_sim);
  }
  // Relaxed: the numbers only need to be distinct. Wraps after 2^31 threads.
  static std::atomic<std::uint32_t> next{1};
  thread_local std::uint32_t mine = 0;
  if (mine == 0) [[unlikely]] {
    mine = next.fetch_add(1, std::memory_order_relaxed) & ~simulated_thread_bit;
  }
  return mine;
}

}  // namespace tasklife

namespace tasklife::detail {

std::uint64_t event_log::now_ns() const noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now() - epoch_)
                                        .count());
}

void event_log::append(task_event e) {
  const lock_guard lock(mutex_);
  e.seq = ++seq_;
  events_.push_back(e);
  while (events_.size() > capacity_) {
    events_.pop_front();
  }
  if (listener_) {
    listener_(e);  // under the lock: events reach the listener in order
  }
}

std::vector<task_event> event_log::events() const {
  const lock_guard lock(mutex_);
  return {events_.begin(), events_.end()};
}

std::vector<task_event> event_log::history(std::uint64_t task_id) const {
  const lock_guard lock(mutex_);
  std::vector<task_event> out;
  for (const task_event& e : events_) {
    if (e.task_id == task_id) {
      out.push_back(e);
    }
  }
  return out;
}

void event_log::set_listener(std::function<void(const task_event&)> listener) {
  const lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

std::uint64_t event_log::last_seq() const {
  const lock_guard lock(mutex_);
  return seq_;
}

}  // namespace tasklife::detail
