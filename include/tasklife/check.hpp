// tasklife/check.hpp — contract checks and where their violations go.
//
// What it is
//   tasklife has two tiers of checks, chosen when the library is built
//   (CMake `TASKLIFE_CHECKS`; the generated tasklife/config.hpp of the library
//   carries it into every translation unit that uses the library, so headers and
//   sources always agree, and mixing tiers fails to link):
//     - `contracts` (cheap, on in checked builds): misuse of the API that would
//       otherwise hang, corrupt state or silently lose protection — an unbalanced
//       rcu_read_unlock, synchronize_rcu inside a read-side critical section, a
//       read lock on an unregistered thread, ...
//     - `full` (contracts plus expensive checks): poisoning and quarantine of
//       freed objects, and the use-after-free reports they make possible.
//   A release build (`TASKLIFE_CHECKS=none`) compiles the checks on hot paths out
//   (the read side, refcount and task validation, lookups). The lifecycle
//   operations (fork, exit, final switch, reap, teardown) keep their cheap misuse
//   checks in every tier: they are not hot, and a wrong answer there would corrupt
//   the simulation itself. Per-task event history is not a check: it is switched
//   on at run time (history.hpp) in every tier.
//
//   A violated contract is reported to the process-wide contract handler as a
//   contract_violation: its kind (what went wrong, one enum value per kind of
//   misuse), the operation refused, the object it is about (task id, pid, comm,
//   kernel; diagnostic_object), both sites of a two-site mistake, and a message
//   for humans. A harness matches the kind and the object, never the message's
//   words. The default handler prints the violation to stderr and aborts. Tests
//   install a capture (tasklife::testkit::contract_capture, testing.hpp) that
//   records it and throws or returns, so a violation can be asserted without a
//   death test.
//
// Members
//   check_level, checks         the configured tier (compile-time constant)
//   contract_kind               what went wrong, one value per kind of misuse
//                               (TASKLIFE_CONTRACT_KINDS); to_string, explain
//   diagnostic_object           the object a diagnostic is about: task id, pid,
//                               comm, kernel name, address
//   contract_violation          what a handler receives: kind, component,
//                               operation, object, message, this site and, where
//                               there is one, the earlier site (taken, freed, ...)
//   contract_handler            void(const contract_violation&)
//   set_contract_handler(h)     installs h (nullptr restores the default), returns the previous one
//   contract_violations_seen()  how many violations were reported since start
//
// Lifetime
//   The handler is process-wide and may be called from any thread, including
//   liburcu's call_rcu worker. A handler that returns (instead of throwing or
//   aborting) makes tasklife skip the offending operation where it can: the
//   unbalanced unlock is not passed on, synchronize_rcu does not block, ...
//   Violations detected in a context that cannot throw (a destructor, a thread
//   exiting, the read side) still call the handler, which may record them; if it
//   throws, the exception is caught there, the violation is printed to stderr,
//   and execution continues as if the handler had returned.
//
// Memory ordering
//   The handler pointer is an atomic read with acquire and written with release
//   (pairs with set_contract_handler), so a handler's own state, initialised
//   before it is installed, is visible to the thread that calls it.
#pragma once

#include <cstdint>
#include <source_location>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <utility>

#include <tasklife/config.hpp>
#include <tasklife/export.hpp>

// TASKLIFE_CHECK_LEVEL (0 none, 1 contracts, 2 full) and TASKLIFE_VERIFIER (the
// run-time verifier of prog.hpp compiled in: 1, or out: 0) come from the generated
// tasklife/config.hpp of the library's tier, never from a default: the headers and
// the library always agree, and code compiled for another tier fails to link.
#if !defined(TASKLIFE_CHECK_LEVEL) || !defined(TASKLIFE_VERIFIER)
#error "tasklife/config.hpp did not define the tier: use the include path of your tier"
#endif

namespace tasklife {

enum class check_level : int { none = 0, contracts = 1, full = 2 };

// The tier this build was configured with.
inline constexpr check_level checks = static_cast<check_level>(TASKLIFE_CHECK_LEVEL);
inline constexpr bool contract_checks_enabled = checks >= check_level::contracts;
inline constexpr bool debug_checks_enabled = checks >= check_level::full;

// Every kind of misuse a contract check reports: name, then what it means. A
// harness matches on the kind and the object, never on the message's words.
#define TASKLIFE_CONTRACT_KINDS(X)                                                           \
  X(null_argument, "a required pointer was NULL (a task, a slot, an RCU head or callback)")  \
  X(not_a_task,                                                                              \
    "a pointer that is no task_struct this library allocated (a fake or stray "              \
    "pointer, or one whose memory was already reused)")                                      \
  X(foreign_object,                                                                          \
    "an object of another kernel or map (a task of kernel B given to kernel "                \
    "A, a slot outside any live map value)")                                                 \
  X(use_after_free, "a task used after __put_task_struct freed it")                          \
  X(double_release, "a reference released a second time")                                    \
  X(over_release, "a counter released below the references still held on it")                \
  X(leak, "a reference or object never released: found at teardown")                         \
  X(invalid_state,                                                                           \
    "an operation on an object in the wrong state (exit of an exiting task, "                \
    "final switch of a live one, free with counters left)")                                  \
  X(invalid_argument, "a value out of its range (pid_max, a count, a profile, map size)")    \
  X(limit_exceeded, "a limit the kernel enforces (pid namespace depth, map entries)")        \
  X(not_in_profile, "a kfunc or destructor the configured kernel version does not have")     \
  X(no_current, "an operation that needs a current task on a thread that runs as none")      \
  X(missing_rcu_lock, "an RCU-protected lookup outside rcu_read_lock()")                     \
  X(unregistered_reader, "an RCU read-side lock on a thread not registered with the domain") \
  X(unbalanced_unlock, "rcu_read_unlock() without a matching rcu_read_lock()")               \
  X(wait_in_read_section,                                                                    \
    "a wait for readers from inside a read-side critical section or a "                      \
    "callback (it would wait for itself)")                                                   \
  X(wait_forever, "a wait that no step could ever end")                                      \
  X(exit_in_read_section,                                                                    \
    "a thread that ends inside a read-side critical section or still "                       \
    "registered")                                                                            \
  X(teardown_order,                                                                          \
    "an owner destroyed while something still uses it (threads running as "                  \
    "its tasks, registrations, pending callbacks)")                                          \
  X(callback_failed, "an RCU callback or hook that threw")                                   \
  X(already_queued, "an RCU head queued again before its callback ran (call_rcu twice)")     \
  X(unreleased_reference, "a typed reference dropped without release or xchg")               \
  X(moved_from, "a typed reference used after it was moved from or released")                \
  X(unchecked_null, "a result that may be NULL used before it was checked")

enum class contract_kind : std::uint8_t {
#define TASKLIFE_CONTRACT_KIND_ENUM(name, text) name,
  TASKLIFE_CONTRACT_KINDS(TASKLIFE_CONTRACT_KIND_ENUM)
#undef TASKLIFE_CONTRACT_KIND_ENUM
      count_
};

// The kind's name as spelled in the enum ("use_after_free").
TASKLIFE_API std::string_view to_string(contract_kind kind) noexcept;
// What the kind means, one sentence.
TASKLIFE_API std::string_view explain(contract_kind kind) noexcept;

// The object a diagnostic is about. A task is named by its id (task_id(), unique
// within its kernel and never reused), its pid in the root namespace and its comm;
// `kernel` is the owning kernel's name. Fields that do not apply stay empty/0:
// a fake task has only its address, an RCU misuse names its domain in `kernel`.
struct diagnostic_object {
  std::uint64_t task_id = 0;      // 0: not about a task the library knows
  pid_t pid = 0;                  // root-namespace pid
  std::string comm;               // the task's comm
  std::string kernel;             // the kernel (or RCU domain) it belongs to
  std::string map;                // the map, for a map's misuse
  const void* address = nullptr;  // the object's address (task, slot, head, ...)

  bool is_task() const noexcept { return task_id != 0; }
};

struct contract_violation {
  contract_kind kind = contract_kind::invalid_argument;
  std::string_view component;  // "rcu", "task", "kernel", "kfunc", "map", "typed", ...
  std::string_view operation;  // the call that was refused ("put_task_struct", ...)
  diagnostic_object object;    // what it is about
  std::string message;         // complete sentence naming the object, for humans
  std::source_location where;  // the caller's call site where known
  // The other site of a two-site mistake, when there is one: where the task was
  // freed (use_after_free), where the reference was taken (leak, unreleased
  // reference), where a registration was made (teardown_order).
  std::source_location earlier{};
  bool has_earlier = false;
};

using contract_handler = void (*)(const contract_violation&);

// Installs `handler` (nullptr: the default, print and abort); returns the previous one.
TASKLIFE_API contract_handler set_contract_handler(contract_handler handler) noexcept;

// Number of violations reported so far in this process (all components).
TASKLIFE_API std::uint64_t contract_violations_seen() noexcept;

namespace detail {

// ThreadSanitizer builds change a few implementation choices (fences become RMW
// orders, grace-period edges get annotated); everything else is identical.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool tsan_build = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool tsan_build = true;
#else
inline constexpr bool tsan_build = false;
#endif
#else
inline constexpr bool tsan_build = false;
#endif

// Reports a violation to the installed handler. Returns only if the handler does.
[[gnu::cold]] TASKLIFE_API void report_contract_violation(const contract_violation& v);
// The same from a noexcept context (destructors, thread exit).
[[gnu::cold]] TASKLIFE_API void report_contract_violation_noexcept(
    const contract_violation& v) noexcept;

// The common case: kind, component, operation, object, message, site.
[[gnu::cold]] inline void report_contract_violation(contract_kind kind, std::string_view component,
                                                    std::string_view operation,
                                                    diagnostic_object object, std::string message,
                                                    std::source_location where) {
  report_contract_violation(
      contract_violation{kind, component, operation, std::move(object), std::move(message), where});
}
[[gnu::cold]] inline void report_contract_violation_noexcept(
    contract_kind kind, std::string_view component, std::string_view operation,
    diagnostic_object object, std::string message, std::source_location where) noexcept {
  try {
    report_contract_violation_noexcept(contract_violation{
        kind, component, operation, std::move(object), std::move(message), where});
  } catch (...) {  // building the record ran out of memory: nothing left to report with
  }
}
}  // namespace detail

}  // namespace tasklife
