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
//   A violated contract is reported to the process-wide contract handler with a
//   message that names the object involved. The default handler prints the
//   message to stderr and aborts. Tests install a handler that throws
//   (tasklife::testing::contract_capture, testing.hpp), so a violation can be
//   asserted without a death test.
//
// Members
//   check_level, checks         the configured tier (compile-time constant)
//   contract_violation          what a handler receives
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

struct contract_violation {
  std::string_view component;  // "rcu", "refcount", "task", ...
  std::string message;         // complete sentence naming the object
  std::source_location where;  // the caller's call site where known
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
[[gnu::cold]] TASKLIFE_API void report_contract_violation(std::string_view component,
                                                          std::string message,
                                                          std::source_location where);
// The same from a noexcept context (destructors, thread exit).
[[gnu::cold]] TASKLIFE_API void report_contract_violation_noexcept(
    std::string_view component, std::string message, std::source_location where) noexcept;
}  // namespace detail

}  // namespace tasklife
