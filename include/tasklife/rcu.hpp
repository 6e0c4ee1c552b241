// tasklife/rcu.hpp — the RCU domain: read-side critical sections, grace periods,
// deferred callbacks.
//
// What it is
//   An rcu_domain is the RCU of one simulated kernel. By default it runs on
//   liburcu's memb flavor (real grace periods, membarrier-based readers); the
//   backend is a seam (rcu_backend) so a deterministic backend with manually
//   advanced grace periods can replace it without touching the code above. All
//   native domains share liburcu's one process-wide RCU: a grace period of one is
//   a grace period of all, which only ever makes a domain wait longer, never less.
//   liburcu's headers are included by src/rcu.cpp only: their macros
//   (rcu_dereference, call_rcu, ...) would otherwise rename kernel-style names.
//
// Members (kernel names where the kernel has the operation)
//   rcu_head, rcu_callback_t          the callback head embedded in an object
//   rcu_domain::rcu_read_lock/unlock  enter/leave a read-side critical section (nests)
//   rcu_domain::rcu_read_lock_held    is this thread inside one?
//   rcu_domain::synchronize_rcu       wait for a full grace period
//   rcu_domain::call_rcu              run a callback after a grace period
//   rcu_domain::rcu_barrier           wait for every queued callback, chained ones too
//   rcu_domain::stats                 queued/completed callbacks, grace periods waited
//   rcu_read_guard                    RAII read-side critical section
//   rcu_thread_registration           RAII registration of the calling thread
//   rcu_backend                       the seam
//
// Diagnostics (checked builds; see check.hpp)
//   Misuse that liburcu answers with a hang or a silent failure is a contract
//   violation naming the domain: synchronize_rcu or rcu_barrier inside a read-side
//   critical section, rcu_barrier from a callback, a read lock on an unregistered
//   thread, an unbalanced unlock, unregistering inside a critical section, a thread
//   that exits inside a critical section or still registered, a domain destroyed
//   while threads are registered with it.
//
// Lifetime
//   A thread must be registered (rcu_thread_registration) before its first read
//   lock and until after its last unlock; registrations nest. call_rcu and
//   rcu_barrier may be called from any thread (an unregistered caller is
//   registered for the duration of the call). A callback runs once, on a backend
//   thread, at least one grace period after call_rcu; the head must stay valid
//   until then; call_rcu on a head already queued is reported (already_queued)
//   and refused. Destroying a domain first waits for all of its callbacks,
//   including those queued by its callbacks. A kernel's own domain destroyed
//   while registrations with it are alive is kept instead, until the process
//   exits, so they end safely (kernel.hpp, Lifetime). A domain of your own
//   should outlive its registrations and read guards. Destroying it while
//   registrations with it are alive is reported (teardown_order, the domain) and
//   leaves what they touch valid: the count of registrations and the backend
//   (a deterministic backend the domain owns included) live in a part of the
//   domain allocated apart from it, which is then kept until the process exits,
//   so each registration still ends safely, unregistering its thread from the
//   backend. A read guard still alive on a domain of your own with a backend of
//   its own (not liburcu) still refers to the domain: end it first.
//
// Memory ordering
//   The guarantee is RCU's: every read-side critical section that began before
//   synchronize_rcu was called (or before call_rcu queued the callback) has ended,
//   and everything it did happens before synchronize_rcu returns (before the
//   callback runs). liburcu provides this with membarrier and futexes, which
//   ThreadSanitizer cannot see; TSan builds therefore annotate the edges in
//   src/rcu.cpp: a release on a grace-period token before every read unlock
//   (pairs with the acquire after synchronize_rcu and at the top of every
//   callback), and a release on the head before call_rcu (pairs with the acquire
//   on the head in rcu_domain::invoke, which every backend's callback goes through). The domain's
//   statistics are relaxed counters; its count of pending callbacks is released after each callback
//   returns and acquired by rcu_barrier and the destructor, so what a callback did
//   happens before they return.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <string_view>

#include <tasklife/check.hpp>
#include <tasklife/export.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {

class rcu_domain;
struct rcu_head;

using rcu_callback_t = void (*)(rcu_head* head);

// The callback head an object embeds, like the kernel's struct rcu_head. Recover
// the object in the callback with offsetof (the object must be standard-layout)
// or keep the head as its first member.
struct rcu_head {
  // Room for the backend's queue node (liburcu's struct rcu_head: 16 bytes).
  alignas(void*) std::byte backend_node[16];
  rcu_callback_t func = nullptr;
  rcu_domain* domain = nullptr;
  bool chained = false;    // queued from inside a callback of the same domain
  std::uint8_t epoch = 0;  // rcu_barrier's epoch index this chain counts under
  // Queued and its callback not yet started (checked builds): call_rcu on a head
  // already queued is reported (already_queued) and refused — liburcu would link
  // it twice, and its domain could never drain. Set by call_rcu's exchange,
  // cleared by rcu_domain::invoke before the callback (which may queue it again);
  // relaxed: it orders nothing, the exchange alone decides.
  std::atomic<bool> queued{false};
};

// The seam. A backend implements the flavor; the domain adds checks, statistics
// and (for the native backend) the inlined read-side fast path.
class TASKLIFE_API rcu_backend {
 public:
  virtual ~rcu_backend();
  virtual std::string_view name() const noexcept = 0;
  virtual void register_thread() = 0;
  virtual void unregister_thread() = 0;
  virtual bool thread_registered() const noexcept = 0;
  // How many registrations of the calling thread are alive (they nest). The
  // default, for backends that do not count them, claims one: the domain then
  // treats every unregistration as the last.
  virtual unsigned thread_registrations() const noexcept { return thread_registered() ? 1U : 0U; }
  virtual void read_lock() noexcept = 0;
  virtual void read_unlock() noexcept = 0;
  virtual unsigned read_depth() const noexcept = 0;
  virtual void synchronize() = 0;
  // Queues `head`; after a grace period the backend calls rcu_domain::invoke(head).
  virtual void call(rcu_head* head) = 0;
  // Waits until every callback queued before the call has been invoked.
  virtual void barrier() = 0;
};

struct rcu_stats {
  std::uint64_t callbacks_queued;     // call_rcu calls
  std::uint64_t callbacks_completed;  // callbacks that returned
  std::uint64_t synchronize_calls;    // grace periods waited for by synchronize_rcu
  std::uint64_t barrier_calls;        // rcu_barrier calls (and destructor drains)
  std::uint64_t pending() const noexcept { return callbacks_queued - callbacks_completed; }
};

namespace detail {
// What an rcu_thread_registration touches when it ends: the domain's count of
// live registrations and its backend. Allocated apart from the domain so that it
// can outlive it: a domain destroyed while registrations with it are alive keeps
// it (and the backend it owns) until the process exits (see Lifetime). Defined in
// src/rcu.cpp.
struct rcu_domain_core;
// The door through which a registration reaches its domain's core.
struct rcu_domain_access;
TASKLIFE_API void unregister_thread(rcu_domain_core* core, std::source_location where) noexcept;

// The native (liburcu memb) read side, defined in src/rcu.cpp with liburcu's
// inlined fast path. When tasklife is linked statically into a target built with
// link-time optimisation (the release preset), these calls are inlined into the
// caller; otherwise each is one direct call. See docs/design.md.
TASKLIFE_API void native_read_lock() noexcept;
TASKLIFE_API void native_read_unlock() noexcept;
TASKLIFE_API bool native_read_lock_held() noexcept;
}  // namespace detail

class TASKLIFE_API rcu_domain {
 public:
  // A domain on liburcu's memb flavor.
  explicit rcu_domain(std::string name = "rcu");
  // A domain on a custom backend (e.g. the deterministic one).
  rcu_domain(std::string name, std::unique_ptr<rcu_backend> backend);
  ~rcu_domain();
  rcu_domain(const rcu_domain&) = delete;
  rcu_domain& operator=(const rcu_domain&) = delete;

  const std::string& name() const noexcept { return name_; }
  std::string_view backend_name() const noexcept { return backend_->name(); }
  bool is_native() const noexcept { return native_; }
  // The backend the domain runs on (as_deterministic in deterministic_rcu.hpp
  // gives the deterministic one its controls).
  rcu_backend* backend() const noexcept { return backend_; }

  // Read side. Inline: one predictable branch on the backend, then liburcu's
  // inlined fast path (native) or the backend's virtual call.
  void rcu_read_lock() noexcept {
    if (native_) [[likely]] {
      detail::native_read_lock();
    } else {
      checked_backend_read_lock();
    }
  }
  void rcu_read_unlock() noexcept {
    if (native_) [[likely]] {
      detail::native_read_unlock();
    } else {
      checked_backend_read_unlock();
    }
  }
  bool rcu_read_lock_held() const noexcept {
    return native_ ? detail::native_read_lock_held() : backend_->read_depth() != 0;
  }
  bool thread_registered() const noexcept { return backend_->thread_registered(); }

  // Waits for a grace period. Contract: not inside a read-side critical section.
  void synchronize_rcu(std::source_location where = std::source_location::current());

  // Queues `func(head)` to run after a grace period. `head` must stay valid and
  // unqueued until the callback runs.
  void call_rcu(rcu_head* head, rcu_callback_t func,
                std::source_location where = std::source_location::current());

  // Waits for all callbacks queued before the call, and for every callback they
  // queue in turn (chains). Callbacks queued by other threads after the call
  // began, and their chains, are not waited for, so the wait is bounded unless a
  // callback re-queues itself forever. Everything the waited-for callbacks did
  // happens before rcu_barrier returns. Contract: not inside a read-side critical
  // section and not from a callback. liburcu 0.13 batches callbacks every 10 ms,
  // so one call costs at least ~10 ms (one more per link of a callback chain).
  void rcu_barrier(std::source_location where = std::source_location::current());

  rcu_stats stats() const noexcept;
  // rcu_thread_registration objects alive with this domain, on every thread.
  std::int64_t live_registrations() const noexcept;

  // Called by a backend when a callback's grace period has elapsed.
  static void invoke(rcu_head* head) noexcept;

  // Registration bookkeeping used by rcu_thread_registration.
  void register_thread(std::source_location where);
  void unregister_thread(std::source_location where) noexcept;

 private:
  friend struct detail::rcu_domain_access;
  void checked_backend_read_lock() noexcept;
  void drain() noexcept;  // waits for every pending callback (the destructor's first step)
  void checked_backend_read_unlock() noexcept;

  std::string name_;
  std::unique_ptr<rcu_backend> owned_backend_;
  rcu_backend* backend_;
  bool native_;
  // Statistics: relaxed.
  std::atomic<std::uint64_t> queued_{0};
  std::atomic<std::uint64_t> completed_{0};
  // Callbacks queued and not yet returned: incremented before the enqueue,
  // decremented with release as invoke()'s last access to the domain (pairs with
  // the acquire loads in rcu_barrier and the destructor). A chain link is queued
  // before its parent returns, so this never reads 0 while a chain is running.
  std::atomic<std::uint64_t> pending_{0};
  // rcu_barrier's epochs: callbacks queued from callbacks, counted under the
  // epoch index of the root of their chain (see rcu_barrier).
  std::atomic<unsigned> epoch_{0};
  std::atomic<std::uint64_t> chained_[2] = {0, 0};
  detail::mutex barrier_mutex_;  // serialises rcu_barrier (one epoch flip at a time)
  // The explorer's simulated thread inside rcu_barrier, or nullptr. Simulated
  // threads all run on the explorer's OS thread and serialise their barriers on
  // this instead of barrier_mutex_ (the first may be suspended inside the backend
  // while the second runs: a mutex held across that switch would block the OS
  // thread). Relaxed: it is read and written on that one OS thread only (real
  // threads never touch it but to read nullptr).
  std::atomic<const void*> barrier_sim_{nullptr};
  std::atomic<std::uint64_t> synchronize_calls_{0};
  std::atomic<std::uint64_t> barrier_calls_{0};
  // The live registrations and what they touch (owned; kept past the domain if
  // registrations outlive it).
  detail::rcu_domain_core* core_;
};

namespace detail {
struct rcu_domain_access {
  static rcu_domain_core* core(const rcu_domain& d) noexcept { return d.core_; }
};
}  // namespace detail

// RAII read-side critical section; nests.
// The backend is decided once, at the lock: the guard keeps the decision in
// itself (usually a register) rather than reading the domain again at the unlock.
class rcu_read_guard {
 public:
  explicit rcu_read_guard(rcu_domain& domain) noexcept
      : domain_(domain), native_(domain.is_native()) {
    if (native_) [[likely]] {
      detail::native_read_lock();
    } else {
      domain_.rcu_read_lock();
    }
  }
  ~rcu_read_guard() {
    if (native_) [[likely]] {
      detail::native_read_unlock();
    } else {
      domain_.rcu_read_unlock();
    }
  }
  rcu_read_guard(const rcu_read_guard&) = delete;
  rcu_read_guard& operator=(const rcu_read_guard&) = delete;

 private:
  rcu_domain& domain_;
  const bool native_;
};

// RAII registration of the calling thread with a domain; nests. Must be
// destroyed on the thread that created it.
class rcu_thread_registration {
 public:
  explicit rcu_thread_registration(rcu_domain& domain,
                                   std::source_location where = std::source_location::current())
      : core_(detail::rcu_domain_access::core(domain)), where_(where) {
    domain.register_thread(where_);
  }
  // Touches the domain's core only, never the domain: it ends safely after a
  // domain destroyed too early (reported by the domain's destructor).
  ~rcu_thread_registration() { detail::unregister_thread(core_, where_); }
  rcu_thread_registration(const rcu_thread_registration&) = delete;
  rcu_thread_registration& operator=(const rcu_thread_registration&) = delete;

 private:
  detail::rcu_domain_core* core_;
  std::source_location where_;
};

// Facts about the native backend, for benchmark reports.
struct rcu_native_info {
  std::string_view flavor;  // "memb"
  bool has_sys_membarrier;  // false: liburcu fell back to full barriers
  bool read_side_inlined;   // _LGPL_SOURCE (TASKLIFE_URCU_INLINE)
};
TASKLIFE_API rcu_native_info rcu_native_backend_info() noexcept;

}  // namespace tasklife
