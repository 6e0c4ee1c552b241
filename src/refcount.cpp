// refcount_t's out-of-line half: lib/refcount.c's warn-and-saturate, the rarely
// used decrements, and the warning sink.
#include <array>
#include <atomic>
#include <cstdio>

#include <fmt/format.h>

#include <tasklife/refcount.hpp>

#include "observer.hpp"

namespace tasklife {
namespace {

constexpr std::array<std::string_view, refcount_saturation_type_count> kMessages = {
    "refcount_t: saturated; leaking memory.",        // REFCOUNT_ADD_NOT_ZERO_OVF
    "refcount_t: saturated; leaking memory.",        // REFCOUNT_ADD_OVF
    "refcount_t: addition on 0; use-after-free.",    // REFCOUNT_ADD_UAF
    "refcount_t: underflow; use-after-free.",        // REFCOUNT_SUB_UAF
    "refcount_t: decrement hit 0; leaking memory.",  // REFCOUNT_DEC_LEAK
};

constexpr std::array<std::string_view, refcount_saturation_type_count> kNames = {
    "REFCOUNT_ADD_NOT_ZERO_OVF", "REFCOUNT_ADD_OVF", "REFCOUNT_ADD_UAF", "REFCOUNT_SUB_UAF",
    "REFCOUNT_DEC_LEAK"};

void default_sink(const refcount_warning& w) {
  fmt::print(stderr, "WARNING: {} ({}, refcount {}) at {}:{}\n", w.message,
             kNames[static_cast<std::size_t>(w.type)], static_cast<const void*>(w.ref),
             w.where.file_name(), w.where.line());
}

// Acquire/release: pairs with set_refcount_warning_sink, so the sink's own state
// is visible to whichever thread warns.
std::atomic<refcount_warning_sink> g_sink{&default_sink};

// One WARN_ONCE flag per kind, plus refcount_dec_not_one's own WARN_ONCE site.
// exchange(acq_rel) on a flag decides which thread warns: exactly one per arming.
constexpr std::size_t kDecNotOneSlot = refcount_saturation_type_count;
std::array<std::atomic<bool>, refcount_saturation_type_count + 1> g_warned{};
// Relaxed: statistics.
std::array<std::atomic<std::uint64_t>, refcount_saturation_type_count> g_seen{};

// Acquire/release: pairs with set_refcount_owner_resolver.
std::atomic<detail::refcount_owner_resolver> g_resolver{nullptr};

void warn_once(std::size_t slot, refcount_warning w) noexcept {
  g_seen[static_cast<std::size_t>(w.type)].fetch_add(1, std::memory_order_relaxed);
  if (const detail::refcount_owner_resolver resolve = g_resolver.load(std::memory_order_acquire)) {
    resolve(w.ref, w.object, w.counter);
  }
  if (const detail::thread_observer* o = detail::tls_observer) {
    o->refcount(o->context, w);  // under the explorer: every occurrence, nothing printed
    return;
  }
  if (g_warned[slot].exchange(true, std::memory_order_acq_rel)) {
    return;
  }
  g_sink.load(std::memory_order_acquire)(w);
}

}  // namespace

refcount_warning_sink set_refcount_warning_sink(refcount_warning_sink sink) noexcept {
  if (sink == nullptr) {
    sink = &default_sink;
  }
  return g_sink.exchange(sink, std::memory_order_acq_rel);
}

void refcount_reset_warnings() noexcept {
  for (auto& flag : g_warned) {
    flag.store(false, std::memory_order_release);
  }
  for (auto& seen : g_seen) {
    seen.store(0, std::memory_order_relaxed);
  }
}

std::uint64_t refcount_warnings_seen(refcount_saturation_type type) noexcept {
  return g_seen[static_cast<std::size_t>(type)].load(std::memory_order_relaxed);
}

std::string_view refcount_warning_message(refcount_saturation_type type) noexcept {
  return kMessages[static_cast<std::size_t>(type)];
}

namespace detail {

void set_refcount_owner_resolver(refcount_owner_resolver resolver) noexcept {
  g_resolver.store(resolver, std::memory_order_release);
}

void refcount_warn_saturate(refcount_t* r, refcount_saturation_type t,
                            std::source_location where) noexcept {
  // Saturate first, then warn, as lib/refcount.c does: whatever the sink does,
  // the counter is already parked far from 0 and INT_MAX.
  refcount_set(r, REFCOUNT_SATURATED);
  warn_once(static_cast<std::size_t>(t),
            refcount_warning{t, r, kMessages[static_cast<std::size_t>(t)], true, where});
}

}  // namespace detail

bool refcount_dec_if_one(refcount_t* r) noexcept {
  int expected = 1;
  // Release: the caller's accesses to the object happen before the count reads 0
  // (pairs with whoever later observes 0 with acquire before reusing the object).
  return detail::refcount_access::refs(r).compare_exchange_strong(
      expected, 0, detail::decrement_order, std::memory_order_relaxed);
}

bool refcount_dec_not_one(refcount_t* r, std::source_location where) noexcept {
  std::atomic<int>& refs = detail::refcount_access::refs(r);
  int val = refs.load(std::memory_order_relaxed);
  do {
    if (val == REFCOUNT_SATURATED) {
      return true;
    }
    if (val == 1) {
      return false;
    }
    // The kernel computes in unsigned int: new > val means the decrement wrapped.
    const unsigned uval = static_cast<unsigned>(val);
    const unsigned unew = uval - 1U;
    if (unew > uval) {
      warn_once(kDecNotOneSlot,
                refcount_warning{REFCOUNT_SUB_UAF, r, kMessages[REFCOUNT_SUB_UAF], false, where});
      return true;
    }
    // Release CAS, as refcount_dec: this holder's accesses precede the decrement.
  } while (!refs.compare_exchange_weak(val, detail::wrapping_sub(val, 1), detail::decrement_order,
                                       std::memory_order_relaxed));
  return true;
}

bool refcount_dec_and_mutex_lock(refcount_t* r, std::mutex* lock, std::source_location where) {
  if (refcount_dec_not_one(r, where)) {
    return false;
  }
  lock->lock();
  if (!refcount_dec_and_test(r, where)) {
    lock->unlock();
    return false;
  }
  return true;
}

bool refcount_dec_and_lock(refcount_t* r, std::mutex* lock, std::source_location where) {
  return refcount_dec_and_mutex_lock(r, lock, where);
}

}  // namespace tasklife
