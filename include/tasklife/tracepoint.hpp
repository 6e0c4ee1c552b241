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
//   tracepoint: name(), attach(probe) -> id, detach(id), link(probe) -> tracepoint_link,
//               enabled(), fire(task)
//   tracepoint_link: an attached probe as an owned handle (the kernel's bpf_link):
//               detaches when destroyed; detach(), attached(), id()
//
// Lifetime
//   A kernel owns its tracepoints. A probe stays attached until detached or the
//   tracepoint is destroyed (a tracepoint_link detaches it when the link ends; a
//   link that outlives its tracepoint's kernel knows it, through a flag it shares
//   with the tracepoint, and its end touches nothing); a probe that is running when it is detached
//   finishes its run (fire works on the probe list it found). Probes may not attach or detach
//   probes of the same tracepoint.
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
  // Its links learn that it is gone (their detach then touches nothing).
  ~tracepoint() { alive_->store(false, std::memory_order_relaxed); }

  const std::string& name() const noexcept { return name_; }
  std::uint64_t attach(probe p);
  bool detach(std::uint64_t id);
  // attach(), as a handle that detaches the probe when it is destroyed.
  [[nodiscard]] class tracepoint_link link(probe p);
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
  // Shared with every link: false once the tracepoint is destroyed. Relaxed: the
  // destruction and a link's detach are ordered by the caller (a detach racing
  // the destruction is a teardown mistake no flag could make safe).
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
  friend class tracepoint_link;
};

// One attached probe, owned: moving the link moves the attachment, destroying it
// detaches the probe.
class tracepoint_link {
 public:
  tracepoint_link() noexcept = default;
  tracepoint_link(tracepoint& tp, std::uint64_t id) noexcept
      : tp_(&tp), id_(id), alive_(tp.alive_) {}
  tracepoint_link(tracepoint_link&& other) noexcept
      : tp_(std::exchange(other.tp_, nullptr)),
        id_(std::exchange(other.id_, 0)),
        alive_(std::move(other.alive_)) {}
  tracepoint_link& operator=(tracepoint_link&& other) noexcept {
    if (this != &other) {
      detach();
      tp_ = std::exchange(other.tp_, nullptr);
      id_ = std::exchange(other.id_, 0);
      alive_ = std::move(other.alive_);
    }
    return *this;
  }
  tracepoint_link(const tracepoint_link&) = delete;
  tracepoint_link& operator=(const tracepoint_link&) = delete;
  ~tracepoint_link() { detach(); }

  // Detaches now; true if the probe was still attached. A link whose tracepoint
  // (its kernel) is already gone has nothing left to detach: false.
  bool detach() noexcept {
    tracepoint* tp = std::exchange(tp_, nullptr);
    const std::shared_ptr<std::atomic<bool>> alive = std::move(alive_);
    if (tp == nullptr || !alive || !alive->load(std::memory_order_relaxed)) {
      return false;
    }
    try {
      return tp->detach(std::exchange(id_, 0));
    } catch (...) {  // allocating the new probe list failed: the probe stays attached
      return false;
    }
  }
  bool attached() const noexcept {
    return tp_ != nullptr && alive_ && alive_->load(std::memory_order_relaxed);
  }
  std::uint64_t id() const noexcept { return id_; }
  const tracepoint* point() const noexcept { return attached() ? tp_ : nullptr; }

 private:
  tracepoint* tp_ = nullptr;
  std::uint64_t id_ = 0;
  std::shared_ptr<std::atomic<bool>> alive_;  // the tracepoint's (see tracepoint::alive_)
};

inline tracepoint_link tracepoint::link(probe p) {
  const std::uint64_t id = attach(std::move(p));
  return tracepoint_link(*this, id);
}

}  // namespace tasklife
