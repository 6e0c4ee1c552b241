// tasklife/sched_point.hpp — the points where the explorer may switch threads.
//
// What it is
//   Every lifetime-relevant operation of the library announces itself here just
//   before it acts: a counter operation on a task's usage or rcu_users, an RCU
//   read lock or unlock, call_rcu, synchronize_rcu, a pid lookup, hash or unhash,
//   a kptr slot read or exchange, a map update, delete or lookup, a lifecycle
//   transition, a kfunc that may return NULL, and a user's explore::yield(). On a
//   thread the explorer runs (explore.hpp), the announcement is a scheduling
//   point: the explorer may run another simulated thread, end a grace period or
//   run an RCU callback before the operation goes on. Anywhere else it is one
//   thread-local load and a branch that is never taken; the kfuncs' inline fast
//   paths (kfunc.hpp) do not announce at all and are never taken under the
//   explorer.
//
//   Each announcement names the operation and the object it touches (a task, a
//   slot, a map, an RCU domain): two operations on different objects commute, which
//   the explorer's reduction uses to skip orders that cannot differ.
//
// Members
//   sched_op, sched_ops (name of each), to_string(sched_op)
//   detail::sched_point(op, object)   the announcement
//   detail::sched_wait(op, object, ready, arg)   an announcement that waits for ready(arg)
//   detail::null_path(what)           the explorer's NULL-path decision for a result
//   detail::tls_sim                   the simulated thread running here, or nullptr
//
// Lifetime
//   The simulated thread belongs to the explorer's execution; tls_sim is set only
//   while one runs on this OS thread.
//
// Memory ordering
//   None: the explorer runs one simulated thread at a time on one OS thread, and a
//   switch is a function call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <tasklife/export.hpp>

namespace tasklife {

// One row per operation kind: its name; whether it only reads its object (two
// reads of one object commute as well); and whether it may reach beyond its
// object (a put that reaches 0 queues a callback, in the v5.4 .. v6.3 union
// writes another task's rcu_users, frees; a lifecycle step touches the family and
// the pid tables): such a step commutes with nothing.
#define TASKLIFE_SCHED_OPS(X)     \
  X(counter_get, false, false)    \
  X(counter_put, false, true)     \
  X(rcu_read_lock, true, false)   \
  X(rcu_read_unlock, true, false) \
  X(call_rcu, false, true)        \
  X(synchronize_rcu, false, true) \
  X(pid_lookup, true, false)      \
  X(pid_hash, false, true)        \
  X(pid_unhash, false, true)      \
  X(slot_read, true, false)       \
  X(slot_xchg, false, true)       \
  X(map_lookup, true, false)      \
  X(map_update, false, true)      \
  X(map_delete, false, true)      \
  X(lifecycle, false, true)       \
  X(kfunc, false, true)           \
  X(yield, false, false)

enum class sched_op : std::uint8_t {
#define TASKLIFE_SCHED_OP_ENUM(name, reads, wide) name,
  TASKLIFE_SCHED_OPS(TASKLIFE_SCHED_OP_ENUM)
#undef TASKLIFE_SCHED_OP_ENUM
};

struct sched_op_info {
  sched_op op;
  std::string_view name;
  bool reads_only;
  bool reaches_beyond;  // commutes with nothing
};

inline constexpr sched_op_info sched_ops[] = {
#define TASKLIFE_SCHED_OP_INFO(name, reads, wide) {sched_op::name, #name, reads, wide},
    TASKLIFE_SCHED_OPS(TASKLIFE_SCHED_OP_INFO)
#undef TASKLIFE_SCHED_OP_INFO
};

constexpr const sched_op_info& info(sched_op op) noexcept {
  return sched_ops[static_cast<std::size_t>(op)];
}
constexpr std::string_view to_string(sched_op op) noexcept {
  return info(op).name;
}

namespace detail {

class sim_thread;
// The simulated thread running on this OS thread (explore.hpp), or nullptr.
TASKLIFE_API extern constinit thread_local sim_thread* tls_sim;

// The explorer's side of an announcement (src/explore/explore.cpp).
TASKLIFE_API void sched_point_slow(sched_op op, const void* object, std::string_view what);

// Announces `op` on `object`; `what` is static text for the timeline ("" if
// the op says it all).
inline void sched_point(sched_op op, const void* object, std::string_view what = {}) {
  if (tls_sim != nullptr) [[unlikely]] {
    sched_point_slow(op, object, what);
  }
}

// The explorer's side of a wait (src/explore/explore.cpp).
using sched_ready_fn = bool (*)(const void* arg);
TASKLIFE_API void sched_wait_slow(sched_op op, const void* object, std::string_view what,
                                  sched_ready_fn ready, const void* arg);

// On a simulated thread: announces `op` on `object` and blocks the thread (as a
// simulated thread, never the OS thread) until ready(arg) holds; the explorer
// evaluates ready(arg) on its own context after every step, and switching away
// from a thread that cannot go on is no preemption. Returns false at once
// anywhere else: the caller then waits its own way (a mutex, a condition).
inline bool sched_wait(sched_op op, const void* object, std::string_view what, sched_ready_fn ready,
                       const void* arg) {
  if (tls_sim != nullptr) [[unlikely]] {
    sched_wait_slow(op, object, what, ready, arg);
    return true;
  }
  return false;
}

// A result the verifier treats as possibly NULL is about to be produced: under
// the explorer with null paths on, true on the path where it is NULL (the caller
// then produces NULL and takes no reference). Elsewhere always false.
TASKLIFE_API bool null_path_slow(std::string_view what);
inline bool null_path(std::string_view what) {
  return tls_sim != nullptr && null_path_slow(what);
}

}  // namespace detail
}  // namespace tasklife
