// tasklife/refcount.hpp — the kernel's saturating reference counter, refcount_t.
//
// What it is
//   refcount_t as include/linux/refcount.h and lib/refcount.c define it since the
//   2019 rework (v5.5): a 32-bit signed counter whose bad states are detected after
//   the fact and answered by *saturation*. An operation that finds it used a dead
//   counter (increment from 0, decrement below 0) or overflowed writes
//   REFCOUNT_SATURATED (INT_MIN / 2) first and then warns once per kind. A saturated
//   counter stays saturated: the object leaks rather than being freed under someone.
//   Increment from 0 is *not* refused (the old UINT_MAX-saturating implementation
//   refused it; tasklife models the current one).
//
// Members (kernel names, pointer arguments, argument order as in the kernel)
//   refcount_t                              the counter, REFCOUNT_INIT(n) == refcount_t{n}
//   REFCOUNT_MAX, REFCOUNT_SATURATED        INT_MAX and INT_MIN / 2
//   refcount_set, refcount_set_release, refcount_read
//   refcount_inc, refcount_add              increment; from 0: ADD_UAF; overflow: ADD_OVF
//   refcount_inc_not_zero, refcount_add_not_zero          CAS loop, false on 0
//   refcount_inc_not_zero_acquire, refcount_add_not_zero_acquire, and their _limited_ forms
//   refcount_dec_and_test, refcount_sub_and_test          true when the count hit 0
//   refcount_dec                            decrement that must not hit 0 (DEC_LEAK)
//   refcount_dec_if_one, refcount_dec_not_one
//   refcount_dec_and_lock, refcount_dec_and_mutex_lock   (a std::mutex stands for both locks)
//   refcount_saturation_type                ADD_NOT_ZERO_OVF, ADD_OVF, ADD_UAF, SUB_UAF, DEC_LEAK
//   refcount_warning, set_refcount_warning_sink, refcount_reset_warnings,
//   refcount_warnings_seen                  the WARN_ONCE machinery, pluggable for tests
//
// Warnings
//   Each kind warns once per process ("boot") like the kernel's WARN_ONCE, with
//   the kernel's message, e.g. "refcount_t: addition on 0; use-after-free.". The
//   warning goes to the installed sink (default: stderr through fmt). Every
//   occurrence is counted, printed or not: refcount_warnings_seen(kind).
//   refcount_reset_warnings() re-arms the once flags and zeroes the counts (tests).
//
// Lifetime
//   A refcount_t is a plain member of the object it counts; it owns nothing. The
//   counter never frees: the caller of a *_and_test that returned true is the one
//   that tears the object down. The caller of inc/add must already hold a
//   reference; the caller of *_not_zero must guarantee by other means (RCU, a lock)
//   that the memory is still there.
//
// Memory ordering (the kernel's; each operation justifies its order where it is
// implemented below)
//   | operation                   | order                                                 |
//   |-----------------------------|-------------------------------------------------------|
//   | set, read                   | relaxed                                               |
//   | set_release                 | release store                                         |
//   | inc, add                    | relaxed RMW                                           |
//   | inc/add_not_zero            | relaxed CAS; success orders later stores only by      |
//   |                             | control dependency (see _acquire for more)            |
//   | inc/add_not_zero_acquire    | acquire CAS on success; refuses at the limit         |
//   | dec_and_test, sub_and_test  | release RMW; acquire fence on the path to 0           |
//   | dec, dec_if_one, dec_not_one| release RMW / release CAS                             |
//   Under ThreadSanitizer, which does not model fences, the decrements are acq_rel
//   RMWs instead of release + acquire fence (x86 emits the same lock xadd for both).
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <mutex>
#include <source_location>
#include <string_view>

#include <tasklife/check.hpp>
#include <tasklife/export.hpp>

namespace tasklife {

inline constexpr int REFCOUNT_MAX = INT_MAX;
inline constexpr int REFCOUNT_SATURATED = INT_MIN / 2;

// The kernel's enum refcount_saturation_type, same order and names.
enum refcount_saturation_type : int {
  REFCOUNT_ADD_NOT_ZERO_OVF,
  REFCOUNT_ADD_OVF,
  REFCOUNT_ADD_UAF,
  REFCOUNT_SUB_UAF,
  REFCOUNT_DEC_LEAK,
};
inline constexpr int refcount_saturation_type_count = 5;

class refcount_t;
namespace detail {
struct refcount_access;
}  // namespace detail

// What a warning sink receives. `message` is the kernel's text, e.g.
// "refcount_t: underflow; use-after-free.".
struct refcount_warning {
  refcount_saturation_type type;
  const refcount_t* ref;  // the counter (already saturated when `saturated`)
  std::string_view message;
  bool saturated;              // false only for refcount_dec_not_one's underflow warning
  std::source_location where;  // the call site of the refcount operation
  // The object the counter belongs to, when a layer above knows it: for a task's
  // `usage` or `rcu_users` the task (id, pid, comm, kernel) and which counter.
  // Empty for a counter of the user's own.
  diagnostic_object object{};
  std::string_view counter{};  // "usage", "rcu_users", or empty
};

using refcount_warning_sink = void (*)(const refcount_warning&);

// Installs `sink` (nullptr: the default, which prints to stderr); returns the previous one.
TASKLIFE_API refcount_warning_sink set_refcount_warning_sink(refcount_warning_sink sink) noexcept;
// Re-arms the once-per-kind flags and zeroes the per-kind counts.
TASKLIFE_API void refcount_reset_warnings() noexcept;
// Occurrences of `type` since start or the last reset, warned or not.
TASKLIFE_API std::uint64_t refcount_warnings_seen(refcount_saturation_type type) noexcept;
// The kernel's message for `type`.
TASKLIFE_API std::string_view refcount_warning_message(refcount_saturation_type type) noexcept;

class refcount_t {
 public:
  constexpr refcount_t() noexcept = default;
  // REFCOUNT_INIT(n).
  constexpr explicit refcount_t(int n) noexcept : refs_(n) {}
  refcount_t(const refcount_t&) = delete;
  refcount_t& operator=(const refcount_t&) = delete;

 private:
  friend struct detail::refcount_access;
  std::atomic<int> refs_{0};
};
static_assert(sizeof(refcount_t) == 4, "refcount_t is a 32-bit counter, as in the kernel");

namespace detail {

// The one door to the counter's atomic, for the functions below.
struct refcount_access {
  static std::atomic<int>& refs(refcount_t* r) noexcept { return r->refs_; }
  static const std::atomic<int>& refs(const refcount_t* r) noexcept { return r->refs_; }
};

// The kernel builds with -fno-strict-overflow; these make its wrapping arithmetic
// defined in C++ (unsigned arithmetic, then the modular conversion C++20 defines).
constexpr int wrapping_add(int a, int b) noexcept {
  return static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned>(b));
}
constexpr int wrapping_sub(int a, int b) noexcept {
  return static_cast<int>(static_cast<unsigned>(a) - static_cast<unsigned>(b));
}

// Names the object a counter belongs to, for the warning (refcount_warning::object).
// Installed by the task layer (src/kernel.cpp); called only on the warning path.
using refcount_owner_resolver = void (*)(const refcount_t* r, diagnostic_object& object,
                                         std::string_view& counter) noexcept;
TASKLIFE_API void set_refcount_owner_resolver(refcount_owner_resolver resolver) noexcept;

// lib/refcount.c's refcount_warn_saturate: writes REFCOUNT_SATURATED, then warns once.
[[gnu::cold]] TASKLIFE_API void refcount_warn_saturate(refcount_t* r, refcount_saturation_type t,
                                                       std::source_location where) noexcept;

// The decrement's order: release, plus acquire on the path to zero. Under TSan
// the acquire half moves into the RMW because TSan ignores fences.
inline constexpr std::memory_order decrement_order =
    tsan_build ? std::memory_order_acq_rel : std::memory_order_release;

}  // namespace detail

// refcount_set: relaxed, like atomic_set. Initialisation happens before the object
// is published (by RCU or a lock), and that publication orders it.
inline void refcount_set(refcount_t* r, int n) noexcept {
  detail::refcount_access::refs(r).store(n, std::memory_order_relaxed);
}

// refcount_set_release: for objects recycled under SLAB_TYPESAFE_BY_RCU; pairs with
// the acquire of refcount_inc_not_zero_acquire, so a reader that acquires the new
// count also sees the object's re-initialisation.
inline void refcount_set_release(refcount_t* r, int n) noexcept {
  detail::refcount_access::refs(r).store(n, std::memory_order_release);
}

// refcount_read: relaxed, like atomic_read; a snapshot for diagnostics and for
// decisions made under a lock. Returned as unsigned int, as in the kernel.
inline unsigned int refcount_read(const refcount_t* r) noexcept {
  return static_cast<unsigned int>(
      detail::refcount_access::refs(r).load(std::memory_order_relaxed));
}

// refcount_add: relaxed RMW. The caller already holds a reference, so the object
// cannot be freed concurrently and the increment publishes nothing; atomicity
// alone keeps counts from being lost. From 0: ADD_UAF; overflow or from a
// saturated (negative) value: ADD_OVF. Either way the counter ends saturated.
inline void refcount_add(int i, refcount_t* r,
                         std::source_location where = std::source_location::current()) noexcept {
  const int old = detail::refcount_access::refs(r).fetch_add(i, std::memory_order_relaxed);
  if (old == 0) [[unlikely]] {
    detail::refcount_warn_saturate(r, REFCOUNT_ADD_UAF, where);
  } else if (old < 0 || detail::wrapping_add(old, i) < 0) [[unlikely]] {
    detail::refcount_warn_saturate(r, REFCOUNT_ADD_OVF, where);
  }
}

inline void refcount_inc(refcount_t* r,
                         std::source_location where = std::source_location::current()) noexcept {
  refcount_add(1, r, where);
}

namespace detail {
template <std::memory_order SuccessOrder>
inline bool refcount_add_not_zero_impl(int i, refcount_t* r, std::source_location where) noexcept {
  std::atomic<int>& refs = refcount_access::refs(r);
  int old = refs.load(std::memory_order_relaxed);
  do {
    if (old == 0) {
      break;
    }
  } while (!refs.compare_exchange_weak(old, wrapping_add(old, i), SuccessOrder,
                                       std::memory_order_relaxed));
  if (old < 0 || wrapping_add(old, i) < 0) [[unlikely]] {
    refcount_warn_saturate(r, REFCOUNT_ADD_NOT_ZERO_OVF, where);
  }
  return old != 0;
}
}  // namespace detail

// refcount_add_not_zero: relaxed CAS loop that refuses 0 (the value stays 0). A
// success is ordered before the caller's later stores into the object by the
// control dependency on the CAS result (the kernel's argument; in C++ terms the
// object itself must be published to the caller with acquire or RCU, which is the
// caller's precondition). Overflow/saturated: ADD_NOT_ZERO_OVF, saturates, returns true.
[[nodiscard]] inline bool refcount_add_not_zero(
    int i, refcount_t* r, std::source_location where = std::source_location::current()) noexcept {
  return detail::refcount_add_not_zero_impl<std::memory_order_relaxed>(i, r, where);
}

[[nodiscard]] inline bool refcount_inc_not_zero(
    refcount_t* r, std::source_location where = std::source_location::current()) noexcept {
  return detail::refcount_add_not_zero_impl<std::memory_order_relaxed>(1, r, where);
}

// refcount_add_not_zero_limited_acquire: the kernel's __refcount_add_not_zero_limited_acquire.
// Acquire CAS on success (pairs with refcount_set_release: the object's
// re-initialisation is visible). Refuses (false, no change, no warning) when the
// count is 0 or when adding i would pass `limit` — which, computed with the
// kernel's wrapping arithmetic, includes a saturated (negative) count.
[[nodiscard]] inline bool refcount_add_not_zero_limited_acquire(int i, refcount_t* r,
                                                                int limit) noexcept {
  std::atomic<int>& refs = detail::refcount_access::refs(r);
  int old = refs.load(std::memory_order_relaxed);
  do {
    if (old == 0) {
      return false;
    }
    if (i > detail::wrapping_sub(limit, old)) {
      return false;
    }
  } while (!refs.compare_exchange_weak(old, detail::wrapping_add(old, i), std::memory_order_acquire,
                                       std::memory_order_relaxed));
  return true;
}

[[nodiscard]] inline bool refcount_inc_not_zero_limited_acquire(refcount_t* r, int limit) noexcept {
  return refcount_add_not_zero_limited_acquire(1, r, limit);
}

// The unlimited _acquire variants are the limited ones at INT_MAX, as in the
// kernel: at REFCOUNT_MAX or saturated they refuse instead of saturating.
[[nodiscard]] inline bool refcount_add_not_zero_acquire(int i, refcount_t* r) noexcept {
  return refcount_add_not_zero_limited_acquire(i, r, INT_MAX);
}

[[nodiscard]] inline bool refcount_inc_not_zero_acquire(refcount_t* r) noexcept {
  return refcount_add_not_zero_limited_acquire(1, r, INT_MAX);
}

// refcount_sub_and_test: release RMW, so everything this holder did to the object
// happens before the decrement (pairs with the acquire below, taken by whichever
// holder brings the count to 0). On the path to 0 an acquire fence makes every
// other holder's release visible before the caller frees. Underflow or a
// saturated value: SUB_UAF, saturates, returns false — the object leaks.
[[nodiscard]] inline bool refcount_sub_and_test(
    int i, refcount_t* r, std::source_location where = std::source_location::current()) noexcept {
  const int old = detail::refcount_access::refs(r).fetch_sub(i, detail::decrement_order);
  // old > 0: sub_and_test(0) on a dead counter must not report a second "last"
  // reference (Petr Pavlu, 2024: "Report UAF for refcount_sub_and_test(0) when
  // counter==0").
  if (old > 0 && old == i) {
    if constexpr (!detail::tsan_build) {
      std::atomic_thread_fence(std::memory_order_acquire);  // pairs with the release above
    }
    return true;
  }
  if (old <= 0 || detail::wrapping_sub(old, i) < 0) [[unlikely]] {
    detail::refcount_warn_saturate(r, REFCOUNT_SUB_UAF, where);
  }
  return false;
}

[[nodiscard]] inline bool refcount_dec_and_test(
    refcount_t* r, std::source_location where = std::source_location::current()) noexcept {
  return refcount_sub_and_test(1, r, where);
}

// refcount_dec: release RMW for a decrement that must never be the last one (the
// caller frees nothing). Hitting 0, or starting at 0 or below: DEC_LEAK, saturates.
inline void refcount_dec(refcount_t* r,
                         std::source_location where = std::source_location::current()) noexcept {
  const int old = detail::refcount_access::refs(r).fetch_sub(1, detail::decrement_order);
  if (old <= 1) [[unlikely]] {
    detail::refcount_warn_saturate(r, REFCOUNT_DEC_LEAK, where);
  }
}

// refcount_dec_if_one: release CAS 1 -> 0; true if it made the transition.
[[nodiscard]] TASKLIFE_API bool refcount_dec_if_one(refcount_t* r) noexcept;

// refcount_dec_not_one: decrements unless the value is 1 (false) or saturated (true,
// unchanged). A decrement that would wrap (from 0) warns "underflow; use-after-free."
// without saturating, and returns true, as the kernel's does. Release CAS loop.
[[nodiscard]] TASKLIFE_API bool refcount_dec_not_one(
    refcount_t* r, std::source_location where = std::source_location::current()) noexcept;

// refcount_dec_and_mutex_lock / refcount_dec_and_lock: decrement, and if the count
// reached 0 return true with `lock` held (the caller unlocks). Fast path via
// refcount_dec_not_one; only the possible last reference takes the lock.
[[nodiscard]] TASKLIFE_API bool refcount_dec_and_mutex_lock(
    refcount_t* r, std::mutex* lock, std::source_location where = std::source_location::current());
[[nodiscard]] TASKLIFE_API bool refcount_dec_and_lock(
    refcount_t* r, std::mutex* lock, std::source_location where = std::source_location::current());

}  // namespace tasklife
