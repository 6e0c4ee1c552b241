// The deterministic RCU backend (deterministic_rcu.hpp).
#include <tasklife/deterministic_rcu.hpp>

namespace tasklife {
namespace detail {
namespace {
// The OS thread's own identity: the address of a thread-local object.
thread_local const char os_thread_identity = 0;
// Set by the explorer while a simulated thread runs.
thread_local const void* simulated_identity = nullptr;
}  // namespace

const void* set_reader_identity(const void* identity) noexcept {
  const void* previous = simulated_identity;
  simulated_identity = identity;
  return previous;
}

const void* reader_identity() noexcept {
  return simulated_identity != nullptr ? simulated_identity : &os_thread_identity;
}
}  // namespace detail

deterministic_rcu::~deterministic_rcu() = default;

deterministic_rcu::reader& deterministic_rcu::self() {
  return readers_[detail::reader_identity()];
}

const deterministic_rcu::reader* deterministic_rcu::self_if_known() const {
  const auto it = readers_.find(detail::reader_identity());
  return it == readers_.end() ? nullptr : &it->second;
}

void deterministic_rcu::register_thread() {
  const detail::lock_guard lock(mutex_);
  ++self().registrations;
}

void deterministic_rcu::unregister_thread() {
  const detail::lock_guard lock(mutex_);
  reader& r = self();
  if (r.registrations > 0) {
    --r.registrations;
  }
  if (r.registrations == 0 && r.depth == 0) {
    readers_.erase(detail::reader_identity());
  }
}

bool deterministic_rcu::thread_registered() const noexcept {
  const detail::lock_guard lock(mutex_);
  const reader* r = self_if_known();
  return r != nullptr && r->registrations > 0;
}

void deterministic_rcu::read_lock() noexcept {
  const detail::lock_guard lock(mutex_);
  ++self().depth;
}

void deterministic_rcu::read_unlock() noexcept {
  {
    const detail::lock_guard lock(mutex_);
    reader& r = self();
    if (r.depth == 0) {
      return;  // the domain reports an unbalanced unlock before it gets here
    }
    if (--r.depth != 0) {
      return;
    }
    // The outermost unlock: a grace period that waited for this reader no longer does.
    waited_for_.erase(detail::reader_identity());
    ++unlocks_;
  }
  reader_left_.notify_all();
}

unsigned deterministic_rcu::read_depth() const noexcept {
  const detail::lock_guard lock(mutex_);
  const reader* r = self_if_known();
  return r == nullptr ? 0U : r->depth;
}

bool deterministic_rcu::start_locked() {
  if (in_progress_) {
    return false;
  }
  in_progress_ = true;
  waited_for_.clear();
  for (const auto& [identity, r] : readers_) {
    if (r.depth > 0) {
      waited_for_.insert(identity);
    }
  }
  return true;
}

bool deterministic_rcu::try_end_locked() {
  if (!in_progress_ || !waited_for_.empty()) {
    return false;
  }
  in_progress_ = false;
  ++completed_;
  return true;
}

bool deterministic_rcu::start_grace_period() {
  const detail::lock_guard lock(mutex_);
  return start_locked();
}

bool deterministic_rcu::try_end_grace_period() {
  const detail::lock_guard lock(mutex_);
  return try_end_locked();
}

bool deterministic_rcu::advance_grace_period() {
  const detail::lock_guard lock(mutex_);
  start_locked();
  return try_end_locked();
}

rcu_head* deterministic_rcu::take_ready_locked() {
  // The queue is in call order and `needs` never decreases along it, so the
  // oldest callback is the only one that can be the oldest ready one.
  if (queue_.empty() || queue_.front().needs > completed_) {
    return nullptr;
  }
  rcu_head* head = queue_.front().head;
  queue_.pop_front();
  return head;
}

bool deterministic_rcu::run_one_callback() {
  rcu_head* head = nullptr;
  {
    const detail::lock_guard lock(mutex_);
    head = take_ready_locked();
  }
  if (head == nullptr) {
    return false;
  }
  rcu_domain::invoke(head);  // outside the mutex: a callback may queue callbacks
  return true;
}

std::size_t deterministic_rcu::run_callbacks() {
  // Only those ready now: a callback queued by one of them needs a grace period
  // that starts after it, which none has yet.
  std::size_t budget = 0;
  {
    const detail::lock_guard lock(mutex_);
    for (const pending& p : queue_) {
      if (p.needs > completed_) {
        break;
      }
      ++budget;
    }
  }
  std::size_t ran = 0;
  while (ran < budget && run_one_callback()) {
    ++ran;
  }
  return ran;
}

void deterministic_rcu::call(rcu_head* head) {
  const detail::lock_guard lock(mutex_);
  // A whole grace period that starts after now: the next one, or the one after
  // the one in progress (which may have started before readers that this
  // callback must wait for).
  const std::uint64_t needs = completed_ + (in_progress_ ? 2U : 1U);
  queue_.push_back(pending{head, needs, next_seq_++});
}

void deterministic_rcu::wait_for_readers() {
  // A reader that leaves while the mutex is released (the hook runs, or the wait
  // has not begun) bumps unlocks_: nothing is missed.
  const std::uint64_t seen = unlocks_;
  const std::function<bool()> hook = wait_hook_;
  if (hook) {
    mutex_.unlock();
    const bool ran_others = hook();
    mutex_.lock();
    if (ran_others) {
      return;
    }
  }
  while (unlocks_ == seen) {
    reader_left_.wait(mutex_);  // unlocks and relocks mutex_ itself
  }
}

void deterministic_rcu::synchronize() {
  const detail::lock_guard lock(mutex_);
  const std::uint64_t target = completed_ + (in_progress_ ? 2U : 1U);
  while (completed_ < target) {
    start_locked();
    if (!try_end_locked()) {
      wait_for_readers();
    }
  }
}

void deterministic_rcu::barrier() {
  std::uint64_t last = 0;
  {
    const detail::lock_guard lock(mutex_);
    if (queue_.empty()) {
      return;
    }
    last = queue_.back().seq;
  }
  for (;;) {
    // Run everything ready; stop once the last callback queued before the call has run.
    bool done = false;
    while (true) {
      rcu_head* head = nullptr;
      {
        const detail::lock_guard lock(mutex_);
        done = queue_.empty() || queue_.front().seq > last;
        if (done) {
          break;
        }
        head = take_ready_locked();
        if (head == nullptr) {
          start_locked();
          if (!try_end_locked()) {
            wait_for_readers();
          }
          continue;
        }
      }
      rcu_domain::invoke(head);
    }
    if (done) {
      return;
    }
  }
}

bool deterministic_rcu::grace_period_in_progress() const {
  const detail::lock_guard lock(mutex_);
  return in_progress_;
}

bool deterministic_rcu::can_end_grace_period() const {
  const detail::lock_guard lock(mutex_);
  return in_progress_ && waited_for_.empty();
}

std::uint64_t deterministic_rcu::completed_grace_periods() const {
  const detail::lock_guard lock(mutex_);
  return completed_;
}

std::size_t deterministic_rcu::queued_callbacks() const {
  const detail::lock_guard lock(mutex_);
  return queue_.size();
}

std::size_t deterministic_rcu::ready_callbacks() const {
  const detail::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const pending& p : queue_) {
    if (p.needs > completed_) {
      break;
    }
    ++n;
  }
  return n;
}

std::size_t deterministic_rcu::readers_inside() const {
  const detail::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [identity, r] : readers_) {
    n += r.depth > 0 ? 1U : 0U;
  }
  return n;
}

void deterministic_rcu::set_wait_hook(std::function<bool()> hook) {
  const detail::lock_guard lock(mutex_);
  wait_hook_ = std::move(hook);
}

std::function<std::unique_ptr<rcu_backend>()> deterministic_rcu_factory() {
  return [] { return std::make_unique<deterministic_rcu>(); };
}

deterministic_rcu* as_deterministic(rcu_domain& domain) noexcept {
  return dynamic_cast<deterministic_rcu*>(domain.backend());
}

}  // namespace tasklife
