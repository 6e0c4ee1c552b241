// The RCU domain and its native backend on liburcu's memb flavor. This is the
// only translation unit of tasklife that includes liburcu.
#if TASKLIFE_URCU_INLINE
// NOLINTNEXTLINE(bugprone-reserved-identifier): liburcu's documented switch, its name.
#define _LGPL_SOURCE 1  // liburcu's inlined read side (LGPL-2.1; see README)
#endif
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <urcu/urcu-memb.h>

#include <tasklife/rcu.hpp>
#include <tasklife/sched_point.hpp>

#include "thread_state.hpp"

#if !TASKLIFE_URCU_INLINE
// Exported by liburcu-memb; declared by its static header only under _LGPL_SOURCE.
extern "C" int urcu_memb_has_sys_membarrier;
#endif

// ThreadSanitizer annotations of the grace-period edges (see rcu.hpp, Memory
// ordering). The Debian liburcu 0.13.2 is not instrumented, so these are the
// only happens-before edges TSan sees between readers and reclaimers.
#if defined(__SANITIZE_THREAD__)
#define TASKLIFE_TSAN_ANNOTATE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TASKLIFE_TSAN_ANNOTATE 1
#endif
#endif

#ifdef TASKLIFE_TSAN_ANNOTATE
extern "C" void __tsan_acquire(void* addr);  // NOLINT(bugprone-reserved-identifier)
extern "C" void __tsan_release(void* addr);  // NOLINT(bugprone-reserved-identifier)
#endif

namespace tasklife {
namespace {

#ifdef TASKLIFE_TSAN_ANNOTATE
// One token stands for "a grace period": every reader releases it when it leaves
// a critical section; whoever has waited for a grace period acquires it.
char g_gp_token;
void tsan_release(void* addr) noexcept {
  __tsan_release(addr);
}
void tsan_acquire(void* addr) noexcept {
  __tsan_acquire(addr);
}
#else
void tsan_release(void*) noexcept {}
void tsan_acquire(void*) noexcept {}
#endif
void* gp_token() noexcept {
#ifdef TASKLIFE_TSAN_ANNOTATE
  return &g_gp_token;
#else
  return nullptr;
#endif
}

// TASKLIFE_TEST_BROKEN_GRACE_PERIOD builds a deliberately broken variant, used
// only by the TSan self-test: synchronize_rcu returns without waiting and
// callbacks run at once, with every annotation still in place. TSan must then
// report the premature free the test commits.
#ifdef TASKLIFE_TEST_BROKEN_GRACE_PERIOD
constexpr bool kBrokenGracePeriod = true;
#else
constexpr bool kBrokenGracePeriod = false;
#endif

// Per-thread state of the native backend. Trivially constructible, so access is
// a plain TLS load. read_depth is maintained only in checked builds; release
// builds ask liburcu (urcu_memb_read_ongoing).
struct native_thread_state {
  unsigned registrations;
  unsigned read_depth;
  unsigned callback_depth;  // > 0 while this thread runs an RCU callback
  rcu_domain* callback_domain;
  std::uint8_t callback_epoch;  // the running callback's chain epoch index
  bool urcu_registered;         // tasklife called urcu_memb_register_thread on this thread
  bool exit_check_armed;
};
constinit thread_local native_thread_state tls{};
static_assert(sizeof(native_thread_state) <= sizeof(detail::rcu_thread_state) &&
              alignof(native_thread_state) <= alignof(detail::rcu_thread_state));

// liburcu registers its call_rcu worker itself: a thread running a callback is a
// registered reader even though it never created an rcu_thread_registration.
bool natively_registered() noexcept {
  return tls.registrations > 0 || tls.callback_depth > 0;
}

void force_unregister() noexcept {
  while (tls.read_depth > 0) {
    --tls.read_depth;
    urcu_memb_read_unlock();
  }
  tls.registrations = 0;
  if (tls.urcu_registered) {
    tls.urcu_registered = false;
    urcu_memb_unregister_thread();
  }
}

// Runs when a thread that ever registered exits: liburcu forbids exiting inside a
// critical section (grace periods would stall forever) or while registered.
struct thread_exit_check {
  thread_exit_check() = default;
  thread_exit_check(const thread_exit_check&) = delete;
  thread_exit_check& operator=(const thread_exit_check&) = delete;
  ~thread_exit_check() {
    if (tls.read_depth > 0) {
      detail::report_contract_violation_noexcept(
          contract_kind::exit_in_read_section, "rcu", "thread exit", {},
          fmt::format("a thread exits inside an RCU read-side critical section (nesting {}); "
                      "every later grace period would wait for it forever. tasklife ends the "
                      "section and unregisters the thread.",
                      tls.read_depth),
          std::source_location::current());
    } else if (tls.registrations > 0) {
      detail::report_contract_violation_noexcept(
          contract_kind::exit_in_read_section, "rcu", "thread exit", {},
          fmt::format("a thread exits while still registered with RCU ({} registration(s) not "
                      "destroyed); liburcu requires unregistering first. tasklife unregisters it.",
                      tls.registrations),
          std::source_location::current());
    }
    force_unregister();
  }
};
thread_local thread_exit_check tls_exit_check;

// Registers the calling thread for the duration of a scope if it is not already
// (call_rcu and rcu_barrier take liburcu read locks internally).
class scoped_native_registration {
 public:
  scoped_native_registration() noexcept : registered_here_(!natively_registered()) {
    if (registered_here_) {
      urcu_memb_register_thread();
    }
  }
  ~scoped_native_registration() {
    if (registered_here_) {
      urcu_memb_unregister_thread();
    }
  }
  scoped_native_registration(const scoped_native_registration&) = delete;
  scoped_native_registration& operator=(const scoped_native_registration&) = delete;

 private:
  bool registered_here_;
};

extern "C" void tasklife_urcu_trampoline(::rcu_head* node) {
  // backend_node is the first member of tasklife::rcu_head (asserted below).
  rcu_domain::invoke(reinterpret_cast<tasklife::rcu_head*>(node));
}

class urcu_memb_backend final : public rcu_backend {
 public:
  std::string_view name() const noexcept override { return "liburcu-memb"; }

  void register_thread() override {
    if (!tls.exit_check_armed) {
      tls.exit_check_armed = true;
      (void)&tls_exit_check;  // odr-use: constructs it, so its destructor runs at exit
    }
    // liburcu's callback worker is registered by liburcu: registering it again
    // would trip liburcu's assertion (and unregistering would unregister it).
    if (!natively_registered()) {
      urcu_memb_register_thread();
      tls.urcu_registered = true;
    }
    ++tls.registrations;
  }
  void unregister_thread() override {
    if (tls.registrations > 0 && --tls.registrations == 0 && tls.urcu_registered) {
      tls.urcu_registered = false;
      urcu_memb_unregister_thread();
    }
  }
  bool thread_registered() const noexcept override { return natively_registered(); }
  void read_lock() noexcept override { detail::native_read_lock(); }
  void read_unlock() noexcept override { detail::native_read_unlock(); }
  unsigned read_depth() const noexcept override {
    if constexpr (contract_checks_enabled) {
      return tls.read_depth;
    } else {
      return urcu_memb_read_ongoing() ? 1U : 0U;
    }
  }
  void synchronize() override {
    if constexpr (!kBrokenGracePeriod) {
      urcu_memb_synchronize_rcu();
    }
    tsan_acquire(gp_token());  // pairs with the release in native_read_unlock
  }
  void call(tasklife::rcu_head* head) override {
    static_assert(sizeof(::rcu_head) <= sizeof(head->backend_node));
    static_assert(alignof(::rcu_head) <= alignof(tasklife::rcu_head));
    static_assert(offsetof(tasklife::rcu_head, backend_node) == 0);
    tsan_release(head);  // pairs with the acquire on the head in rcu_domain::invoke
    if constexpr (kBrokenGracePeriod) {
      rcu_domain::invoke(head);
      return;
    }
    const scoped_native_registration registration;
    urcu_memb_call_rcu(reinterpret_cast<::rcu_head*>(head->backend_node),
                       &tasklife_urcu_trampoline);
  }
  void barrier() override {
    const scoped_native_registration registration;
    urcu_memb_barrier();
  }
};

urcu_memb_backend& native_backend() noexcept {
  static urcu_memb_backend backend;
  return backend;
}

diagnostic_object domain_object(const rcu_domain& d) {
  diagnostic_object o;
  o.kernel = d.name();
  o.address = &d;
  return o;
}

std::string describe(const rcu_domain& d) {
  return fmt::format("RCU domain '{}' ({})", d.name(), d.backend_name());
}

}  // namespace

namespace detail {
// See rcu.hpp (detail::rcu_domain_core). Everything but the count is written
// once, before the domain is shared, or by its destructor once no callback runs.
struct rcu_domain_core {
  std::string name;      // the domain's, for diagnostics after it is gone
  const void* domain;    // its address: the object diagnostics name, never dereferenced
  rcu_backend* backend;  // the domain's backend
  bool native;           // liburcu memb (the registration bookkeeping differs)
  std::unique_ptr<rcu_backend> kept_backend;  // an owned backend, moved here by an early teardown
  // Live rcu_thread_registration objects. The decrement is an unregistration's
  // last access to the core, with release; the destructor's acquire load pairs
  // with it, so a core it frees is no longer touched by any registration.
  std::atomic<std::int64_t> registrations{0};
};
}  // namespace detail

namespace {
// Cores of domains destroyed while registrations were alive: kept until the
// process exits (never destroyed), so those registrations can still end.
struct parked_cores {
  detail::mutex m;
  std::vector<std::unique_ptr<detail::rcu_domain_core>> cores TASKLIFE_GUARDED_BY(m);
};
parked_cores& parked() {
  static parked_cores* p = new parked_cores;  // NOLINT: deliberately never destroyed
  return *p;
}
}  // namespace

rcu_backend::~rcu_backend() = default;

namespace detail {

void native_read_lock() noexcept {
  if constexpr (contract_checks_enabled) {
    if (!natively_registered()) [[unlikely]] {
      report_contract_violation_noexcept(
          contract_kind::unregistered_reader, "rcu", "rcu_read_lock", {},
          "rcu_read_lock() on a thread that is not registered with RCU: liburcu's "
          "synchronize_rcu would not wait for this reader (a silent use-after-free window). "
          "Create an rcu_thread_registration first; the lock is not taken.",
          std::source_location::current());
      return;
    }
    ++tls.read_depth;
  }
  urcu_memb_read_lock();
}

void native_read_unlock() noexcept {
  if constexpr (contract_checks_enabled) {
    if (tls.read_depth == 0) [[unlikely]] {
      report_contract_violation_noexcept(
          contract_kind::unbalanced_unlock, "rcu", "rcu_read_unlock", {},
          "rcu_read_unlock() without a matching rcu_read_lock() on this thread; the unlock "
          "is not passed to liburcu (it would corrupt the reader's nesting count).",
          std::source_location::current());
      return;
    }
    --tls.read_depth;
  }
  tsan_release(gp_token());  // pairs with the acquire after a grace period
  urcu_memb_read_unlock();
}

bool native_read_lock_held() noexcept {
  if constexpr (contract_checks_enabled) {
    return tls.read_depth > 0;
  } else {
    return urcu_memb_read_ongoing() != 0;
  }
}

}  // namespace detail

rcu_domain::rcu_domain(std::string name)
    : name_(std::move(name)),
      backend_(&native_backend()),
      native_(true),
      core_(new detail::rcu_domain_core{name_, this, backend_, true, nullptr}) {}

rcu_domain::rcu_domain(std::string name, std::unique_ptr<rcu_backend> backend)
    : name_(std::move(name)),
      owned_backend_(std::move(backend)),
      backend_(owned_backend_.get()),
      native_(false),
      core_(new detail::rcu_domain_core{name_, this, backend_, false, nullptr}) {}

std::int64_t rcu_domain::live_registrations() const noexcept {
  return core_->registrations.load(std::memory_order_relaxed);
}

rcu_domain::~rcu_domain() {
  drain();
  // Acquire pairs with the release decrement that ends every unregistration:
  // at 0 no registration touches the core any more.
  const auto live = core_->registrations.load(std::memory_order_acquire);
  if (live == 0) {
    delete core_;
    return;
  }
  // Registrations outlive the domain: they keep its core, and the backend they
  // unregister from, until the process exits (rcu.hpp, Lifetime).
  if constexpr (contract_checks_enabled) {
    detail::report_contract_violation_noexcept(
        contract_kind::teardown_order, "rcu", "~rcu_domain", domain_object(*this),
        fmt::format("{} destroyed while {} thread registration(s) with it are alive: its "
                    "registration count and backend are kept until the process exits, so they "
                    "can still end",
                    describe(*this), live),
        std::source_location::current());
  }
  core_->kept_backend = std::move(owned_backend_);
  parked_cores& p = parked();
  const detail::lock_guard lock(p.m);
  p.cores.emplace_back(core_);
}

void rcu_domain::drain() noexcept {
  // Drain: invoke() touches the domain after each callback, so every one of them
  // must have returned before the memory goes. Acquire pairs with the release
  // decrement in invoke().
  if (pending_.load(std::memory_order_acquire) == 0) {
    return;
  }
  if (rcu_read_lock_held() || tls.callback_depth > 0) [[unlikely]] {
    // Waiting here would never end: the pending callbacks wait for a grace period
    // that waits for this reader, or for the very worker that would run them.
    detail::report_contract_violation_noexcept(
        contract_kind::teardown_order, "rcu", "~rcu_domain", domain_object(*this),
        fmt::format("{} destroyed with {} callback(s) pending {}: they can never run before the "
                    "domain's memory goes",
                    describe(*this), pending_.load(std::memory_order_relaxed),
                    tls.callback_depth > 0 ? "from inside an RCU callback"
                                           : "inside a read-side critical section"),
        std::source_location::current());
    std::abort();
  }
  while (pending_.load(std::memory_order_acquire) != 0) {
    barrier_calls_.fetch_add(1, std::memory_order_relaxed);
    backend_->barrier();
  }
}

void rcu_domain::checked_backend_read_lock() noexcept {
  if constexpr (contract_checks_enabled) {
    if (!backend_->thread_registered()) [[unlikely]] {
      detail::report_contract_violation_noexcept(
          contract_kind::unregistered_reader, "rcu", "rcu_read_lock", domain_object(*this),
          fmt::format("rcu_read_lock() on a thread not registered with {}; the lock is not taken",
                      describe(*this)),
          std::source_location::current());
      return;
    }
  }
  backend_->read_lock();
}

void rcu_domain::checked_backend_read_unlock() noexcept {
  if constexpr (contract_checks_enabled) {
    if (backend_->read_depth() == 0) [[unlikely]] {
      detail::report_contract_violation_noexcept(
          contract_kind::unbalanced_unlock, "rcu", "rcu_read_unlock", domain_object(*this),
          fmt::format("rcu_read_unlock() without a matching rcu_read_lock() in {}",
                      describe(*this)),
          std::source_location::current());
      return;
    }
  }
  backend_->read_unlock();
}

void rcu_domain::synchronize_rcu(std::source_location where) {
  if constexpr (contract_checks_enabled) {
    if (rcu_read_lock_held()) [[unlikely]] {
      detail::report_contract_violation(
          contract_kind::wait_in_read_section, "rcu", "synchronize_rcu", domain_object(*this),
          fmt::format("synchronize_rcu() inside an RCU read-side critical section of {}: the "
                      "grace period would wait for this very reader and never end (liburcu "
                      "hangs). It returns without waiting.",
                      describe(*this)),
          where);
      return;
    }
  }
  backend_->synchronize();
  synchronize_calls_.fetch_add(1, std::memory_order_relaxed);
}

void rcu_domain::call_rcu(rcu_head* head, rcu_callback_t func, std::source_location where) {
  if constexpr (contract_checks_enabled) {
    if (head == nullptr || func == nullptr) [[unlikely]] {
      detail::report_contract_violation(
          contract_kind::null_argument, "rcu", "call_rcu", domain_object(*this),
          fmt::format("call_rcu() with a null {} on {}", head == nullptr ? "head" : "callback",
                      describe(*this)),
          where);
      return;
    }
  }
  if constexpr (contract_checks_enabled) {
    if (head->queued.exchange(true, std::memory_order_relaxed)) [[unlikely]] {
      diagnostic_object o = domain_object(*this);
      o.address = head;
      detail::report_contract_violation(
          contract_kind::already_queued, "rcu", "call_rcu", std::move(o),
          fmt::format("call_rcu() on rcu_head {} of {}, which is already queued and whose "
                      "callback has not run yet; not queued again",
                      static_cast<const void*>(head), describe(*this)),
          where);
      return;
    }
  }
  head->func = func;
  head->domain = this;
  head->chained = tls.callback_depth > 0 && tls.callback_domain == this;
  if (head->chained) {
    // A chain link counts under its root's epoch (see rcu_barrier). Relaxed: the
    // increment happens inside the parent callback, which liburcu's barrier (a
    // full-barrier handshake with the worker) orders before rcu_barrier's next
    // read of this counter; the release decrement in invoke() pairs with that
    // acquire read once the link itself has run.
    head->epoch = tls.callback_epoch;
    chained_[head->epoch].fetch_add(1, std::memory_order_relaxed);
  } else {
    head->epoch = static_cast<std::uint8_t>(epoch_.load(std::memory_order_acquire) & 1U);
  }
  queued_.fetch_add(1, std::memory_order_relaxed);
  // Release: ordered before the enqueue that hands the head to the backend.
  pending_.fetch_add(1, std::memory_order_release);
  backend_->call(head);
}

void rcu_domain::rcu_barrier(std::source_location where) {
  if constexpr (contract_checks_enabled) {
    if (rcu_read_lock_held()) [[unlikely]] {
      detail::report_contract_violation(
          contract_kind::wait_in_read_section, "rcu", "rcu_barrier", domain_object(*this),
          fmt::format("rcu_barrier() inside an RCU read-side critical section of {}: liburcu "
                      "prints an error and returns without waiting. It returns without waiting.",
                      describe(*this)),
          where);
      return;
    }
    if (tls.callback_depth > 0) [[unlikely]] {
      detail::report_contract_violation(
          contract_kind::wait_in_read_section, "rcu", "rcu_barrier", domain_object(*this),
          fmt::format("rcu_barrier() from inside an RCU callback of {}: the callback worker would "
                      "wait for itself (liburcu deadlocks). It returns without waiting.",
                      describe(*this)),
          where);
      return;
    }
  }
  barrier_calls_.fetch_add(1, std::memory_order_relaxed);
  // SRCU-style epochs keep the wait bounded. Flip the epoch: roots queued from
  // now on count under the other index. One backend barrier runs every callback
  // queued before it; a chain link queued by one of them counts under the old
  // index, so pass again until that index has drained. Later roots' chains use
  // the new index and are not waited for.
  auto flip_and_drain = [this] {
    const unsigned old_epoch = epoch_.fetch_add(1, std::memory_order_acq_rel) & 1U;
    do {
      backend_->barrier();
    } while (chained_[old_epoch].load(std::memory_order_acquire) != 0);
  };
  if (detail::tls_sim != nullptr) {
    // An explorer's simulated thread: every caller runs on this one OS thread, and
    // the first may be suspended inside backend_->barrier() (waiting for a reader),
    // so barrier_mutex_ is never held across that switch. The second waits as a
    // simulated thread until the first is done.
    detail::sched_wait(
        sched_op::synchronize_rcu, this, "rcu_barrier waits for another rcu_barrier",
        [](const void* d) {
          return static_cast<const rcu_domain*>(d)->barrier_sim_.load(std::memory_order_relaxed) ==
                 nullptr;
        },
        this);
    barrier_sim_.store(detail::tls_sim, std::memory_order_relaxed);
    struct clear_on_exit {
      std::atomic<const void*>& owner;
      ~clear_on_exit() { owner.store(nullptr, std::memory_order_relaxed); }
    } const clear{barrier_sim_};
    flip_and_drain();
  } else {
    // Real threads serialise on the mutex. The model's own context (its teardown)
    // takes this path too: a simulated thread left inside rcu_barrier for good (a
    // deadlock abandoned it) holds no mutex, and its readers' sections have been
    // ended, so this barrier drains what is queued.
    const detail::lock_guard lock(barrier_mutex_);
    flip_and_drain();
  }
  // Acquire pairs with every callback's release of pending_: what the callbacks
  // did happens before rcu_barrier returns (also for TSan, which cannot see
  // liburcu's own barrier).
  (void)pending_.load(std::memory_order_acquire);
}

rcu_stats rcu_domain::stats() const noexcept {
  rcu_stats s{};
  s.callbacks_completed = completed_.load(std::memory_order_relaxed);
  s.callbacks_queued = queued_.load(std::memory_order_relaxed);
  s.synchronize_calls = synchronize_calls_.load(std::memory_order_relaxed);
  s.barrier_calls = barrier_calls_.load(std::memory_order_relaxed);
  return s;
}

void rcu_domain::invoke(rcu_head* head) noexcept {
  tsan_acquire(head);        // pairs with the release before call_rcu
  tsan_acquire(gp_token());  // pairs with every reader's release at unlock
  // The callback may free the head's object: read everything needed first.
  rcu_domain* const domain = head->domain;
  const bool chained = head->chained;
  const std::uint8_t epoch = head->epoch;

  native_thread_state& state = tls;
  rcu_domain* const outer_domain = state.callback_domain;
  const std::uint8_t outer_epoch = state.callback_epoch;
  ++state.callback_depth;
  state.callback_domain = domain;
  state.callback_epoch = epoch;
  head->queued.store(false, std::memory_order_relaxed);  // the callback may queue it again
  try {
    head->func(head);
  } catch (...) {
    detail::report_contract_violation_noexcept(
        contract_kind::callback_failed, "rcu", "rcu callback", domain_object(*domain),
        fmt::format("an RCU callback of {} threw an exception", describe(*domain)),
        std::source_location::current());
  }
  --state.callback_depth;
  state.callback_domain = outer_domain;
  state.callback_epoch = outer_epoch;

  if (chained) {
    domain->chained_[epoch].fetch_sub(1, std::memory_order_release);
  }
  domain->completed_.fetch_add(1, std::memory_order_relaxed);
  // Release: the callback's effects happen before rcu_barrier/~rcu_domain see the
  // count drop (pairs with their acquire loads). The last access to the domain.
  domain->pending_.fetch_sub(1, std::memory_order_release);
}

void rcu_domain::register_thread(std::source_location where) {
  (void)where;
  backend_->register_thread();
  // Relaxed: the count orders nothing on the way up; see rcu_domain_core.
  core_->registrations.fetch_add(1, std::memory_order_relaxed);
}

void rcu_domain::unregister_thread(std::source_location where) noexcept {
  detail::unregister_thread(core_, where);
}

namespace detail {
void unregister_thread(rcu_domain_core* core, std::source_location where) noexcept {
  rcu_backend* const backend = core->backend;
  const bool native = core->native;
  bool unregister = true;
  if constexpr (contract_checks_enabled) {
    const bool last = native ? tls.registrations == 1 : backend->thread_registrations() <= 1;
    if (backend->read_depth() > 0 && last) [[unlikely]] {
      diagnostic_object o;  // the domain, by its name and address (it may be gone)
      o.kernel = core->name;
      o.address = core->domain;
      report_contract_violation_noexcept(
          contract_kind::exit_in_read_section, "rcu", "rcu_thread_registration", std::move(o),
          fmt::format("a thread unregisters from RCU domain '{}' ({}) inside a read-side "
                      "critical section (nesting {}), registered at {}:{}{}",
                      core->name, backend->name(), backend->read_depth(), where.file_name(),
                      where.line(), native ? "; tasklife ends the section first" : ""),
          where);
      if (native) {
        force_unregister();
        unregister = false;
      }
    }
  }
  if (unregister) {
    backend->unregister_thread();
  }
  // Release: the last access to the core (pairs with the destructor's acquire).
  core->registrations.fetch_sub(1, std::memory_order_release);
}
}  // namespace detail

rcu_native_info rcu_native_backend_info() noexcept {
  return rcu_native_info{"memb", urcu_memb_has_sys_membarrier != 0, TASKLIFE_URCU_INLINE != 0};
}

namespace detail {
void swap_rcu_thread_state(rcu_thread_state& other) noexcept {
  rcu_thread_state mine;
  std::memcpy(mine.bytes, &tls, sizeof(tls));
  std::memcpy(&tls, other.bytes, sizeof(tls));
  other = mine;
}
}  // namespace detail

}  // namespace tasklife
