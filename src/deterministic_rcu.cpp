// The deterministic RCU backend (deterministic_rcu.hpp).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <tasklife/check.hpp>
#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/sched_point.hpp>

namespace tasklife {
namespace detail {
namespace {

// Live backends, so that an exiting thread only touches backends that still exist.
// Lock order: g_live_mutex before a backend's own mutex.
mutex g_live_mutex;
std::unordered_set<const deterministic_rcu*> g_live TASKLIFE_GUARDED_BY(g_live_mutex);
// Relaxed: only uniqueness matters.
std::atomic<std::uintptr_t> g_next_os_identity{1};

// An OS thread's identity (odd numbers: never the address of a simulated thread,
// never reused) and the backends it has used, told when the thread exits.
struct os_thread_identity {
  // NOLINTNEXTLINE(performance-no-int-to-ptr): an opaque identity, compared, never dereferenced.
  const void* id = reinterpret_cast<const void*>(
      (g_next_os_identity.fetch_add(1, std::memory_order_relaxed) << 1U) | 1U);
  std::vector<deterministic_rcu*> backends;
  os_thread_identity() = default;
  os_thread_identity(const os_thread_identity&) = delete;
  os_thread_identity& operator=(const os_thread_identity&) = delete;
  ~os_thread_identity();
};
thread_local os_thread_identity tls_os;
// Set by the explorer while a simulated thread runs.
constinit thread_local const void* simulated_identity = nullptr;

}  // namespace

const void* set_reader_identity(const void* identity) noexcept {
  const void* previous = simulated_identity;
  simulated_identity = identity;
  return previous;
}

const void* reader_identity() noexcept {
  return simulated_identity != nullptr ? simulated_identity : tls_os.id;
}

namespace {
os_thread_identity::~os_thread_identity() {
  const lock_guard lock(g_live_mutex);
  for (deterministic_rcu* b : backends) {
    if (g_live.contains(b)) {
      deterministic_rcu_access::reader_gone(*b, id, "an OS thread exits");
    }
  }
}

void note_backend(deterministic_rcu* b) {
  if (std::find(tls_os.backends.begin(), tls_os.backends.end(), b) == tls_os.backends.end()) {
    tls_os.backends.push_back(b);
  }
}
}  // namespace
}  // namespace detail

deterministic_rcu::deterministic_rcu() {
  const detail::lock_guard lock(detail::g_live_mutex);
  detail::g_live.insert(this);
}

deterministic_rcu::~deterministic_rcu() {
  if (on_destroy_) {
    on_destroy_();
  }
  const detail::lock_guard lock(detail::g_live_mutex);
  detail::g_live.erase(this);
}

deterministic_rcu::reader& deterministic_rcu::self() {
  reader& r = readers_[detail::reader_identity()];
  r.os_thread = detail::tls_os.id;
  return r;
}

const deterministic_rcu::reader* deterministic_rcu::self_if_known() const {
  const auto it = readers_.find(detail::reader_identity());
  return it == readers_.end() ? nullptr : &it->second;
}

void deterministic_rcu::register_thread() {
  detail::note_backend(this);
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
  detail::sched_point(sched_op::rcu_read_lock, this);
  const detail::lock_guard lock(mutex_);
  ++self().depth;
}

void deterministic_rcu::read_unlock() noexcept {
  detail::sched_point(sched_op::rcu_read_unlock, this);
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
    ++progress_;
  }
  progress_cv_.notify_all();
}

unsigned deterministic_rcu::thread_registrations() const noexcept {
  const detail::lock_guard lock(mutex_);
  const reader* r = self_if_known();
  return r == nullptr ? 0U : r->registrations;
}

unsigned deterministic_rcu::read_depth() const noexcept {
  const detail::lock_guard lock(mutex_);
  const reader* r = self_if_known();
  return r == nullptr ? 0U : r->depth;
}

void deterministic_rcu::reader_gone(const void* identity, std::string_view who) noexcept {
  std::string report;
  {
    const detail::lock_guard lock(mutex_);
    const auto it = readers_.find(identity);
    if (it == readers_.end()) {
      return;
    }
    if (it->second.depth > 0) {
      report = fmt::format(
          "{} inside an RCU read-side critical section (nesting {}) of the deterministic "
          "backend; every later grace period would wait for it forever. tasklife ends the "
          "section.",
          who, it->second.depth);
    } else if (it->second.registrations > 0) {
      report = fmt::format(
          "{} while still registered with RCU ({} registration(s) not destroyed); tasklife "
          "unregisters it.",
          who, it->second.registrations);
    }
    readers_.erase(it);
    waited_for_.erase(identity);
    ++progress_;
  }
  progress_cv_.notify_all();
  if (!report.empty()) {
    detail::report_contract_violation_noexcept(contract_kind::exit_in_read_section, "rcu",
                                               "thread exit", {}, std::move(report),
                                               std::source_location::current());
  }
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
  // The queue is in call order and `needs` never decreases along it (a call
  // during a grace period needs completed_ + 2, and completed_ only grows), so
  // the oldest callback is the only candidate for the oldest ready one.
  if (queue_.empty() || queue_.front().needs > completed_) {
    return nullptr;
  }
  rcu_head* head = queue_.front().head;
  queue_.pop_front();
  ++in_flight_;
  return head;
}

void deterministic_rcu::finished_callback() {
  {
    const detail::lock_guard lock(mutex_);
    --in_flight_;
    ++progress_;
  }
  progress_cv_.notify_all();
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
  finished_callback();
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
  detail::sched_point(sched_op::call_rcu, this);
  const detail::lock_guard lock(mutex_);
  // A whole grace period that starts after now: the next one, or the one after
  // the one in progress (which may have started before readers that this
  // callback must wait for).
  const std::uint64_t needs = completed_ + (in_progress_ ? 2U : 1U);
  queue_.push_back(pending{head, needs, next_seq_++});
}

bool deterministic_rcu::only_this_thread_in_the_way() const {
  if (in_flight_ > 0 || waited_for_.empty()) {
    return false;
  }
  for (const void* identity : waited_for_) {
    const auto it = readers_.find(identity);
    if (it == readers_.end() || it->second.os_thread != detail::tls_os.id) {
      return false;
    }
  }
  return true;
}

bool deterministic_rcu::wait_for_progress(std::string_view op) {
  const std::uint64_t seen = progress_;
  std::function<bool()> hook = wait_hook_;
  if (hook) {
    bool ran_others = false;
    mutex_.unlock();
    try {
      ran_others = hook();
    } catch (...) {
      detail::report_contract_violation_noexcept(
          contract_kind::callback_failed, "rcu", op, {},
          fmt::format("the deterministic backend's wait hook threw during {}", op),
          std::source_location::current());
    }
    mutex_.lock();
    if (ran_others || progress_ != seen) {
      return true;
    }
  }
  if (only_this_thread_in_the_way()) {
    return false;
  }
  while (progress_ == seen) {
    progress_cv_.wait(mutex_);  // unlocks and relocks mutex_ itself
  }
  return true;
}

void deterministic_rcu::synchronize() {
  detail::sched_point(sched_op::synchronize_rcu, this);
  bool stuck = false;
  {
    const detail::lock_guard lock(mutex_);
    const std::uint64_t target = completed_ + (in_progress_ ? 2U : 1U);
    while (completed_ < target) {
      start_locked();
      if (!try_end_locked() && !wait_for_progress("synchronize_rcu")) {
        stuck = true;
        break;
      }
    }
  }
  if (stuck) {
    detail::report_contract_violation(
        contract_kind::wait_forever, "rcu", "synchronize_rcu", {},
        "synchronize_rcu() on the deterministic backend would wait forever: the only readers "
        "in the way run on this very OS thread (under another reader identity) and no wait "
        "hook lets them run. It returns without waiting.",
        std::source_location::current());
  }
}

void deterministic_rcu::barrier() {
  bool stuck = false;
  std::uint64_t last = 0;
  {
    const detail::lock_guard lock(mutex_);
    if (queue_.empty() && in_flight_ == 0) {
      return;
    }
    last = queue_.empty() ? 0 : queue_.back().seq;
    if (queue_.empty()) {
      last = next_seq_;  // only callbacks in flight: wait for them
    }
  }
  while (!stuck) {
    rcu_head* head = nullptr;
    {
      const detail::lock_guard lock(mutex_);
      const bool queued_done = queue_.empty() || queue_.front().seq > last;
      if (queued_done && in_flight_ == 0) {
        return;
      }
      head = queued_done ? nullptr : take_ready_locked();
      if (head == nullptr) {
        // Nothing ready: a grace period has to end first, or a callback another
        // thread is running has to finish.
        start_locked();
        if (!queued_done && try_end_locked()) {
          continue;
        }
        if (!wait_for_progress("rcu_barrier")) {
          stuck = true;
        }
        continue;
      }
    }
    rcu_domain::invoke(head);
    finished_callback();
  }
  detail::report_contract_violation(
      contract_kind::wait_forever, "rcu", "rcu_barrier", {},
      "rcu_barrier() on the deterministic backend would wait forever: the only readers in the "
      "way run on this very OS thread (under another reader identity) and no wait hook lets "
      "them run. It returns without waiting.",
      std::source_location::current());
}

bool deterministic_rcu::grace_period_in_progress() const {
  const detail::lock_guard lock(mutex_);
  return in_progress_;
}

bool deterministic_rcu::can_end_grace_period() const {
  const detail::lock_guard lock(mutex_);
  return in_progress_ && waited_for_.empty();
}

bool deterministic_rcu::callbacks_need_grace_period() const {
  const detail::lock_guard lock(mutex_);
  if (queue_.empty()) {
    return false;
  }
  // The newest callback needs the most; it needs a grace period that has not
  // started if its requirement is beyond the one in progress.
  return queue_.back().needs > completed_ + (in_progress_ ? 1U : 0U);
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
