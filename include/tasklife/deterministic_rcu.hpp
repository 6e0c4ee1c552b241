// tasklife/deterministic_rcu.hpp — an RCU backend whose grace periods end only
// when told.
//
// What it is
//   A backend for rcu_domain (rcu.hpp's seam; kernel_config::rcu_backend_factory)
//   that implements RCU's rules exactly and nothing more: it knows every reader,
//   a grace period ends only when the harness (or the explorer) ends it and only
//   once every reader that was inside when it started has left, and callbacks run
//   only when the harness runs them, in the order they became ready. Nothing
//   happens on a thread of its own and nothing depends on time, so a test written
//   against it is deterministic and costs no waiting: where liburcu batches
//   callbacks every ~10 ms, here run_callbacks() runs them on the spot.
//
//   A grace period goes through two steps, each a method:
//     start_grace_period()     snapshots the readers inside now: the ones it waits for
//     try_end_grace_period()   ends it if all of them have left
//   advance_grace_period() does both. A callback queued by call_rcu needs a whole
//   grace period that started after it was queued; once that has ended it is
//   ready, and run_one_callback() / run_callbacks() invoke ready callbacks.
//
//   The domain's blocking operations keep their meaning: synchronize_rcu starts
//   and ends grace periods until one that began after the call has ended, and
//   rcu_barrier also runs callbacks until every one queued before it has run.
//   While a reader on another thread keeps a grace period from ending they wait
//   for it to leave (they never return early). A blocked thread first asks the
//   wait hook (set_wait_hook), which the explorer uses to run other simulated
//   threads instead of blocking.
//
// Members
//   deterministic_rcu: the rcu_backend interface; start_grace_period,
//     try_end_grace_period, advance_grace_period, run_one_callback, run_callbacks,
//     grace_period_in_progress, can_end_grace_period, completed_grace_periods,
//     queued_callbacks, ready_callbacks, readers_inside, set_wait_hook
//   deterministic_rcu_factory()   a kernel_config::rcu_backend_factory
//   detail::set_reader_identity   who "this thread" is (the explorer's simulated threads)
//
// Lifetime
//   Owned by its rcu_domain, which drains it (barrier) before destroying it; the
//   explorer's destroy hook (detail::deterministic_rcu_access::on_destroy) runs
//   first in its destructor, so that the explorer forgets it. The
//   reader state of a thread is the backend's, keyed by the thread's identity:
//   the OS thread, or the simulated thread the explorer has made current. An OS
//   thread that exits inside a read-side section or still registered is reported
//   (as with the native backend) and forgotten, so it cannot hold grace periods
//   up forever. A wait that could never end (the only reader in the way is the
//   waiting OS thread's own, under another identity, and no hook) is reported and
//   returns without waiting.
//
// Memory ordering
//   All state is guarded by one mutex. A reader's unlock and the grace period that
//   ends after it, and that grace period and the callbacks it makes ready, are
//   ordered by that mutex (each takes it), which is what RCU promises: everything
//   a reader did happens before a callback that waited for it runs, and before
//   synchronize_rcu returns. Callbacks run outside the mutex, on the thread that
//   calls run_*callbacks or rcu_barrier.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <tasklife/export.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {

namespace detail {
struct deterministic_rcu_access;
}  // namespace detail

class TASKLIFE_API deterministic_rcu final : public rcu_backend {
 public:
  deterministic_rcu();
  ~deterministic_rcu() override;
  deterministic_rcu(const deterministic_rcu&) = delete;
  deterministic_rcu& operator=(const deterministic_rcu&) = delete;

  std::string_view name() const noexcept override { return "deterministic"; }

  // ---- the harness's controls ------------------------------------------------------------------
  // Starts a grace period unless one is in progress: it waits for the readers
  // inside now. False if one was already in progress.
  bool start_grace_period() TASKLIFE_EXCLUDES(mutex_);
  // Ends the grace period in progress if every reader it waits for has left;
  // callbacks it covers become ready. False if none is in progress or a reader
  // it waits for is still inside.
  bool try_end_grace_period() TASKLIFE_EXCLUDES(mutex_);
  // start_grace_period, then try_end_grace_period: true if a grace period ended.
  bool advance_grace_period() TASKLIFE_EXCLUDES(mutex_);
  // Invokes the oldest ready callback on this thread; false if none is ready.
  bool run_one_callback() TASKLIFE_EXCLUDES(mutex_);
  // Invokes the callbacks ready now, oldest first (those they queue wait for a
  // grace period of their own); returns how many ran.
  std::size_t run_callbacks() TASKLIFE_EXCLUDES(mutex_);

  bool grace_period_in_progress() const TASKLIFE_EXCLUDES(mutex_);
  // Would try_end_grace_period succeed now?
  bool can_end_grace_period() const TASKLIFE_EXCLUDES(mutex_);
  // Is there a callback whose grace period has not even started (one would
  // have to start for it)?
  bool callbacks_need_grace_period() const TASKLIFE_EXCLUDES(mutex_);
  std::uint64_t completed_grace_periods() const TASKLIFE_EXCLUDES(mutex_);
  std::size_t queued_callbacks() const TASKLIFE_EXCLUDES(mutex_);  // ready or not
  std::size_t ready_callbacks() const TASKLIFE_EXCLUDES(mutex_);
  std::size_t readers_inside() const TASKLIFE_EXCLUDES(mutex_);  // threads in a section now

  // Called by a thread that must wait for another thread (synchronize_rcu or
  // rcu_barrier held up by a reader or by a callback another thread is running).
  // True: it let other threads run, look again; false (or no hook): block until
  // something changes. The explorer installs one. A hook that throws counts as
  // false (and is reported).
  void set_wait_hook(std::function<bool()> hook) TASKLIFE_EXCLUDES(mutex_);

 private:
  friend struct detail::deterministic_rcu_access;

  // ---- rcu_backend: called by the rcu_domain only, through the base class -----------------
  void register_thread() override TASKLIFE_EXCLUDES(mutex_);
  void unregister_thread() override TASKLIFE_EXCLUDES(mutex_);
  bool thread_registered() const noexcept override TASKLIFE_EXCLUDES(mutex_);
  unsigned thread_registrations() const noexcept override TASKLIFE_EXCLUDES(mutex_);
  void read_lock() noexcept override TASKLIFE_EXCLUDES(mutex_);
  void read_unlock() noexcept override TASKLIFE_EXCLUDES(mutex_);
  unsigned read_depth() const noexcept override TASKLIFE_EXCLUDES(mutex_);
  void synchronize() override TASKLIFE_EXCLUDES(mutex_);
  void call(rcu_head* head) override TASKLIFE_EXCLUDES(mutex_);
  void barrier() override TASKLIFE_EXCLUDES(mutex_);

  struct reader {
    unsigned registrations = 0;
    unsigned depth = 0;
    const void* os_thread = nullptr;  // the OS thread that last used this identity
  };
  struct pending {
    rcu_head* head;
    std::uint64_t needs;  // ready once completed_ >= needs
    std::uint64_t seq;    // queue order
  };

  reader& self() TASKLIFE_REQUIRES(mutex_);
  const reader* self_if_known() const TASKLIFE_REQUIRES(mutex_);
  bool start_locked() TASKLIFE_REQUIRES(mutex_);
  bool try_end_locked() TASKLIFE_REQUIRES(mutex_);
  rcu_head* take_ready_locked() TASKLIFE_REQUIRES(mutex_);
  void finished_callback() TASKLIFE_EXCLUDES(mutex_);
  // A reader identity is gone (its OS thread exited, or the explorer's simulated
  // thread ended): reported if it was inside a section or registered; forgotten.
  void reader_gone(const void* identity, std::string_view who) noexcept TASKLIFE_EXCLUDES(mutex_);
  // Waits for progress (a reader leaving, a callback ending), or lets the hook run
  // others: releases the mutex meanwhile. False if nothing can ever change: the
  // only readers in the way are this very OS thread's and there is no hook.
  bool wait_for_progress(std::string_view op) TASKLIFE_REQUIRES(mutex_);
  bool only_this_thread_in_the_way() const TASKLIFE_REQUIRES(mutex_);

  mutable detail::mutex mutex_;
  std::condition_variable_any progress_cv_;
  std::unordered_map<const void*, reader> readers_ TASKLIFE_GUARDED_BY(mutex_);
  // Readers inside when the grace period in progress started, still inside.
  std::unordered_set<const void*> waited_for_ TASKLIFE_GUARDED_BY(mutex_);
  bool in_progress_ TASKLIFE_GUARDED_BY(mutex_) = false;
  std::uint64_t completed_ TASKLIFE_GUARDED_BY(mutex_) = 0;
  std::uint64_t next_seq_ TASKLIFE_GUARDED_BY(mutex_) = 0;
  std::deque<pending> queue_ TASKLIFE_GUARDED_BY(mutex_);  // in call order
  std::size_t in_flight_ TASKLIFE_GUARDED_BY(mutex_) = 0;  // callbacks taken, still running
  // Bumped by every outermost unlock, finished callback and gone reader, so a
  // waiter never misses a change that happened while it did not hold the mutex.
  std::uint64_t progress_ TASKLIFE_GUARDED_BY(mutex_) = 0;
  std::function<bool()> wait_hook_ TASKLIFE_GUARDED_BY(mutex_);
  // Called first by the destructor (the explorer forgets the backend): set once,
  // before the backend is shared, by the thread that made it.
  std::function<void()> on_destroy_;
};

// A kernel_config::rcu_backend_factory that gives each kernel a deterministic_rcu.
TASKLIFE_API std::function<std::unique_ptr<rcu_backend>()> deterministic_rcu_factory();

// The deterministic backend of a domain, or nullptr if it runs on another.
TASKLIFE_API deterministic_rcu* as_deterministic(rcu_domain& domain) noexcept;

namespace detail {
// Who "this thread" is to the deterministic backend: by default the OS thread
// (an identity of its own, never reused); the explorer sets a simulated thread's
// identity while it runs one (nullptr restores the OS thread's). Returns the
// previous identity. Identities set here must be the addresses of live objects.
TASKLIFE_API const void* set_reader_identity(const void* identity) noexcept;
TASKLIFE_API const void* reader_identity() noexcept;

// The explorer's door: a simulated thread ended; the backend is destroyed.
struct deterministic_rcu_access {
  static void reader_gone(deterministic_rcu& b, const void* identity,
                          std::string_view who) noexcept {
    b.reader_gone(identity, who);
  }
  static void on_destroy(deterministic_rcu& b, std::function<void()> f) {
    b.on_destroy_ = std::move(f);
  }
};
}  // namespace detail

}  // namespace tasklife
