// Pid namespaces: cyclic number allocation and the lock-free table.
#include <cerrno>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/sched_point.hpp>

#include "task_internal.hpp"

namespace tasklife {
namespace {

constexpr std::size_t kBits = 64;

}  // namespace

pid_namespace::pid_namespace(kernel& owner, pid_namespace* parent, int pid_max, int reserved_pids)
    : owner_(owner),
      parent_(parent),
      level_(parent == nullptr ? 0U : parent->level() + 1U),
      pid_max_(pid_max),
      reserved_pids_(reserved_pids),
      // Value-initialised: every entry starts as nullptr.
      table_(new std::atomic<task_struct*>[static_cast<std::size_t>(pid_max) + 1]()),
      allocated_((static_cast<std::size_t>(pid_max) + kBits) / kBits, 0) {
  if (!allocated_.empty()) {
    allocated_.front() |= 1U;  // 0 is never a pid
  }
}

pid_namespace::~pid_namespace() = default;

void pid_namespace::check_rcu_held(pid_t nr, std::source_location where) const {
  // find_task_by_pid_ns' RCU_LOCKDEP_WARN: the result is only protected by RCU.
  if (!owner_.rcu().rcu_read_lock_held()) [[unlikely]] {
    diagnostic_object o;
    o.kernel = owner_.name();
    o.address = this;
    detail::report_contract_violation(
        contract_kind::missing_rcu_lock, "pid", "find_task_by_pid_ns", std::move(o),
        fmt::format("find_task_by_pid_ns({}) in pid namespace level {} of kernel '{}' without "
                    "rcu_read_lock(): the task it returns may be freed at any moment",
                    nr, level_, owner_.name()),
        where);
  }
}

std::size_t pid_namespace::nr_allocated() const {
  const detail::lock_guard lock(alloc_mutex_);
  return nr_allocated_;
}

bool pid_namespace::is_free(pid_t nr) const {
  const auto n = static_cast<std::size_t>(nr);
  return (allocated_[n / kBits] & (std::uint64_t{1} << (n % kBits))) == 0;
}

pid_t pid_namespace::alloc_nr() {
  const detail::lock_guard lock(alloc_mutex_);
  if (nr_allocated_ >= static_cast<std::size_t>(pid_max_)) {
    return -EAGAIN;
  }
  // idr_alloc_cyclic from last_pid + 1; past pid_max, restart at reserved_pids
  // once the cursor has passed it (alloc_pid's pid_min), else at 1.
  const pid_t pid_min = last_pid_ > reserved_pids_ ? reserved_pids_ : 1;
  pid_t found = 0;
  for (pid_t nr = last_pid_ + 1; nr <= pid_max_; ++nr) {
    if (is_free(nr)) {
      found = nr;
      break;
    }
  }
  if (found == 0) {
    for (pid_t nr = pid_min; nr <= last_pid_ && nr <= pid_max_; ++nr) {
      if (is_free(nr)) {
        found = nr;
        break;
      }
    }
  }
  if (found == 0) {
    return -EAGAIN;  // the numbers below pid_min are all that is left
  }
  const auto n = static_cast<std::size_t>(found);
  allocated_[n / kBits] |= std::uint64_t{1} << (n % kBits);
  ++nr_allocated_;
  last_pid_ = found;
  return found;
}

void pid_namespace::free_nr(pid_t nr) noexcept {
  const detail::lock_guard lock(alloc_mutex_);
  const auto n = static_cast<std::size_t>(nr);
  allocated_[n / kBits] &= ~(std::uint64_t{1} << (n % kBits));
  --nr_allocated_;
}

void pid_namespace::hash(pid_t nr, task_struct* t) noexcept {
  // Release pairs with the acquire in find_task(): publishes the initialised task.
  table_[static_cast<std::size_t>(nr)].store(t, std::memory_order_release);
  nr_hashed_.fetch_add(1, std::memory_order_relaxed);
}

void pid_namespace::unhash(pid_t nr, task_struct* t) noexcept {
  (void)t;
  // Relaxed: publishes nothing. A reader that still loads the old pointer is
  // protected by RCU: the reclaim this unhash precedes waits for a grace period.
  table_[static_cast<std::size_t>(nr)].store(nullptr, std::memory_order_relaxed);
  nr_hashed_.fetch_sub(1, std::memory_order_relaxed);
}

task_struct* find_task_by_pid_ns(pid_t nr, pid_namespace* ns, std::source_location where) {
  detail::sched_point(sched_op::pid_lookup, ns == nullptr ? nullptr : ns->root(),
                      "find_task_by_pid_ns");
  return ns->find_task(nr, where);
}

task_struct* find_task_by_vpid(pid_t vnr, std::source_location where) {
  task_struct* cur = get_current();
  if (cur == nullptr) {
    detail::report_contract_violation(
        contract_kind::no_current, "pid", "find_task_by_vpid", {},
        "find_task_by_vpid() on a thread that does not run as a task (no current)", where);
    return nullptr;
  }
  pid_namespace* ns = task_active_pid_ns(cur);
  detail::sched_point(sched_op::pid_lookup, ns == nullptr ? nullptr : ns->root(),
                      "find_task_by_vpid");
  return ns == nullptr ? nullptr : ns->find_task(vnr, where);
}

pid_namespace* task_active_pid_ns(const task_struct* t) noexcept {
  // After release_task, detach_pid has cleared thread_pid: no namespace (NULL).
  // Acquire pairs with the release in release_task.
  if (t->priv.numbers.empty() || t->priv.pid_detached.load(std::memory_order_acquire)) {
    return nullptr;
  }
  return t->priv.numbers.back().ns;
}

pid_t task_pid_nr_ns(const task_struct* t, const pid_namespace* ns) noexcept {
  if (ns == nullptr || t->priv.pid_detached.load(std::memory_order_acquire)) {
    return 0;  // a reaped task has no number anywhere: the kernel's 0
  }
  const auto level = ns->level();
  if (level < t->priv.numbers.size() && t->priv.numbers[level].ns == ns) {
    return t->priv.numbers[level].nr;
  }
  return 0;
}

pid_t task_pid_vnr(const task_struct* t) noexcept {
  task_struct* cur = get_current();
  return cur == nullptr ? 0 : task_pid_nr_ns(t, task_active_pid_ns(cur));
}

}  // namespace tasklife
