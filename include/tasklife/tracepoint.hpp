// tasklife/tracepoint.hpp — the kernel's tracepoints, as probes on a task.
//
// What it is
//   A tracepoint is a named point in the lifecycle where probes run: the kernel
//   fires task_newtask at the end of fork, sched_process_exit in do_exit and
//   sched_process_free in delayed_put_task_struct (kernel::task_newtask() etc.).
//   Probes run synchronously at the firing point, on the firing thread. The task
//   argument is trusted in the BPF verifier's sense: valid for the probe's
//   duration. A tracepoint without probes costs one predictable branch.
//
// Members
//   tracepoint: name(), attach(probe) -> id, detach(id), enabled(), fire(task)
//
// Lifetime
//   A kernel owns its tracepoints. A probe stays attached until detached or the
//   tracepoint is destroyed; a probe that is running when it is detached finishes
//   its run (fire works on the probe list it found). Probes may not attach or
//   detach probes of the same tracepoint.
//
// Memory ordering
//   The probe list is copy-on-write: attach and detach build a new list under
//   mutex_ and publish it there; fire copies the list's shared pointer under the
//   same mutex and runs it outside. enabled_ is stored with release after the
//   list changes (attach/detach) and loaded with acquire by fire (pairs with
//   those stores), so a firing that sees it set finds the list that set it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <tasklife/export.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {

struct task_struct;

class TASKLIFE_API tracepoint {
 public:
  using probe = std::function<void(task_struct*)>;
  explicit tracepoint(std::string name) : name_(std::move(name)) {}
  tracepoint(const tracepoint&) = delete;
  tracepoint& operator=(const tracepoint&) = delete;

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

  const std::string name_;
  // Release/acquire: pairs attach/detach with enabled() (see Memory ordering).
  std::atomic<bool> enabled_{false};
  mutable detail::mutex mutex_;
  std::shared_ptr<const std::vector<entry>> probes_ TASKLIFE_GUARDED_BY(mutex_);
  std::uint64_t next_id_ TASKLIFE_GUARDED_BY(mutex_) = 1;
};

}  // namespace tasklife
