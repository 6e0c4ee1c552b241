// tasklife/testing.hpp — GoogleTest helpers (target tasklife::testkit).
//
// What it is
//   What a test harness built on tasklife needs so that a test fails on any
//   lifetime bug it did not ask for, and can assert the ones it did ask for by
//   kind and object rather than by wording. Namespace `tasklife::testkit` (it
//   does not collide with GoogleTest's ::testing under `using namespace
//   tasklife`; the former name `tasklife::testkit` is available for one release
//   by defining TASKLIFE_TESTING_LEGACY_NAMESPACE).
//     - contract_capture: while alive, contract violations are recorded with
//       their kind, operation, object and sites (captured_violation). In the
//       default mode (capture_mode::throw_on_violation) each is also thrown as
//       contract_error (recorded only, from noexcept code), so a test stops at
//       the misuse; in capture_mode::record the handler returns, so tasklife
//       skips the offending operation and the test can observe that it did.
//       Captures nest: the innermost one alive receives what is reported.
//       Refcount warnings are recorded instead of printed.
//     - TASKLIFE_EXPECT_CONTRACT_VIOLATION(statement, spec) (short name
//       EXPECT_CONTRACT_VIOLATION): runs the statement and fails at the caller's
//       file:line unless a violation matching `spec` was reported while it ran,
//       thrown or only recorded. `spec` is a contract_kind, a kind and the task it
//       is about (about(kind, t)), or a message substring. A violation matched
//       this way is expected: kernel_test does not report it again;
//     - kernel_test: a fixture that gives each test a fresh kernel and, at the end,
//       runs the end-of-test invariants: every forked task freed exactly once (or
//       torn down as a leak the test inspected), no task leaked, nothing left
//       pending, every pid number given back, no contract violation or refcount
//       warning the test did not declare (expect_violation,
//       expect_refcount_warning, EXPECT_CONTRACT_VIOLATION), and every declared
//       one happened. Its failures are reported at the test's own file:line. It
//       is the base of parameterised fixtures too (add
//       ::testing::WithParamInterface<P>; config() may read GetParam()); remake()
//       runs the invariants on the kernel so far and starts another one (a sweep
//       over configurations in one test); a fixture whose test body runs as a
//       task names it in body_task_comm();
//     - gMock matchers: for a program run's violations (HasViolation,
//       HasViolationKind), for captured contract violations (IsViolation,
//       IsViolationAbout), for a task's counters and state (HasUsage,
//       HasRcuUsers, HasCounters, HasExitState, IsExiting, IsAllocatedIn,
//       IsFreedIn, IsHashedIn), for events (IsEvent, IsEventOf, HasEventsInOrder);
//       and printers (PrintTo) for every public type a test prints.
//
// Members
//   contract_error, capture_mode, captured_violation, violation_spec, about,
//   contract_capture (mode, violations, messages, unmatched_violations, count,
//   refcount_warnings, clear), TASKLIFE_EXPECT_CONTRACT_VIOLATION
//   (EXPECT_CONTRACT_VIOLATION; TASKLIFE_TESTING_NO_SHORT_NAMES keeps the short
//   name out), TASKLIFE_REQUIRE_CHECKS(level) (skips a test of a check the
//   tier compiles out), kernel_test (config, native_rcu, rcu_control, body_task_comm, k,
//   body_task, leave_body_task, remake, expect_violation,
//   expect_refcount_warning, fork_task, retire, capture), usage, rcu_users, the
//   matchers above, describe_task, the explorer helpers
//   (expect_explores_cleanly, expect_explore_finds, describe_failure,
//   ExploresCleanly), PrintTo for task_struct, task_event, task_event_kind,
//   contract_violation, captured_violation, contract_kind, diagnostic_object,
//   refcount_warning, violation, violation_kind, semantics_profile
//
// Lifetime
//   Captures nest in strict LIFO order (a capture destroyed out of order is a
//   test failure); the outermost installs the process-wide handler and sink and
//   restores the previous ones when destroyed. EXPECT_CONTRACT_VIOLATION needs
//   one alive (kernel_test has one). kernel_test owns its kernel: SetUp makes it
//   from config(), remake(c) and TearDown end it. Ending a kernel leaves the body
//   task's current_task_scope, retires the body task, waits for RCU
//   (rcu_barrier), shuts the kernel down and checks its counters, destroys it,
//   then checks the violations and warnings (those its destruction reported
//   included) and forgets them and the declarations. Programs, maps,
//   current_task_scopes and RCU registrations a test creates must be gone before
//   that (declare them in the test body, or reset them before remake).
//
// Memory ordering
//   The captures and what they record are guarded by one mutex: any thread may
//   report, including liburcu's call_rcu worker. EXPECT_CONTRACT_VIOLATION counts
//   what the innermost capture records between the statement's start and its
//   end, from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/explore.hpp>
#include <tasklife/tasklife.hpp>

namespace tasklife::testkit {

// Thrown by a capture in throw_on_violation mode; carries the violation.
class contract_error : public std::runtime_error {
 public:
  explicit contract_error(const contract_violation& v);
  contract_kind kind() const noexcept { return kind_; }
  const diagnostic_object& object() const noexcept { return object_; }

 private:
  contract_kind kind_;
  diagnostic_object object_;
};

enum class capture_mode {
  throw_on_violation,  // record, then throw contract_error (the default)
  record,              // record and return: tasklife skips the offending operation
};

// A contract violation as a capture keeps it: owning copies of what the handler saw.
struct captured_violation {
  contract_kind kind = contract_kind::invalid_argument;
  std::string component;
  std::string operation;
  diagnostic_object object;
  std::string message;
  std::source_location where;
  std::optional<std::source_location> earlier;  // the other site, if the mistake has two
  bool matched = false;  // an EXPECT_CONTRACT_VIOLATION or expect_violation claimed it
};

// What an expected violation must look like: a kind, optionally the task it is
// about (its id and kernel), optionally a substring of its message.
struct violation_spec {
  std::optional<contract_kind> kind;
  std::uint64_t task_id = 0;  // 0: any object
  std::string kernel;         // "": any kernel
  std::string substring;      // "": any message

  violation_spec(contract_kind k) : kind(k) {}                // NOLINT(google-explicit-constructor)
  violation_spec(std::string_view text) : substring(text) {}  // NOLINT(google-explicit-constructor)
  violation_spec(const char* text) : substring(text) {}       // NOLINT(google-explicit-constructor)
  violation_spec(const std::string& text)
      : substring(text) {}  // NOLINT(google-explicit-constructor)

  bool matches(const captured_violation& v) const;
  std::string describe() const;
};

// A violation of `kind` about task `t`. Reads t's id and kernel now: call it while
// t's memory is valid (live, or freed and in quarantine).
violation_spec about(contract_kind kind, const task_struct* t);

class contract_capture {
 public:
  explicit contract_capture(capture_mode mode = capture_mode::throw_on_violation);
  ~contract_capture();
  contract_capture(const contract_capture&) = delete;
  contract_capture& operator=(const contract_capture&) = delete;

  capture_mode mode() const noexcept { return mode_; }
  // Every violation recorded since the capture began (or was cleared), in order.
  std::vector<captured_violation> violations() const;
  // Their messages only.
  std::vector<std::string> messages() const;
  // The violations no expectation claimed.
  std::vector<captured_violation> unmatched_violations() const;
  // How many of `kind` were recorded.
  std::size_t count(contract_kind kind) const;
  // A refcount warning as the sink saw it, with the counter's value at that moment
  // (the kernel saturates before it warns, so this is REFCOUNT_SATURATED).
  struct captured_warning {
    refcount_warning warning;
    unsigned value_at_warning;
  };
  std::vector<captured_warning> refcount_warnings() const;
  void clear();

  struct state;  // the record (src/testing/testing.cpp)

 private:
  const capture_mode mode_;
  std::unique_ptr<state> state_;
  contract_capture* outer_ = nullptr;  // the capture this one nests in
};

// "task 'comm' pid N (id K): usage=U rcu_users=R state=... exit_state=... flags=...".
std::string describe_task(const task_struct& t);

// The two counters of a task, as refcount_read reads them.
inline unsigned usage(const task_struct* t) {
  return refcount_read(&t->usage);
}
inline unsigned rcu_users(const task_struct* t) {
  return refcount_read(&t->rcu_users);
}

class kernel_test : public ::testing::Test {
 protected:
  // Override to configure the kernel (called in SetUp; remake takes its own).
  virtual kernel_config config() const { return kernel_config{.name = "test"}; }
  // The kernel runs on the deterministic RCU backend (deterministic_rcu.hpp)
  // unless config() names a backend or this returns true: then it runs on liburcu
  // (real grace periods, callbacks on liburcu's worker, ~10 ms per rcu_barrier).
  // Stress tests that churn tasks on real threads want liburcu: on the
  // deterministic backend nothing is freed until someone runs the callbacks.
  virtual bool native_rcu() const { return false; }
  // The kernel's deterministic backend, or nullptr when it runs on liburcu.
  deterministic_rcu* rcu_control() { return as_deterministic(k().rcu()); }
  // Override to run the test body as a task: SetUp and remake fork a task of this
  // name (in the root namespace) and enter a current_task_scope for it, as kfuncs
  // need current. nullptr (the default): the body runs as no task.
  virtual const char* body_task_comm() const { return nullptr; }

  void SetUp() override;
  void TearDown() override;

  kernel& k() { return *kernel_; }
  const kernel& k() const { return *kernel_; }
  // The task the body runs as (nullptr without body_task_comm()). It stays alive
  // until the kernel ends, which retires it.
  task_struct* body_task() const noexcept { return body_task_; }
  // Leaves the body task's scope early: the rest of the body runs as no task.
  void leave_body_task();

  // Ends the current kernel as TearDown would (every end-of-test invariant is
  // checked on it, failures name it and point at `where`), then makes a new one
  // from `config`, with a new body task if the fixture has one. Declarations
  // (expect_violation, expect_refcount_warning) and what was captured belong to
  // the old kernel.
  void remake(kernel_config config, std::source_location where = std::source_location::current());

  // Declares that the test provokes a violation matching `spec` (a kind, about(kind,
  // t), or a message substring): it must happen before the kernel ends. Or a
  // refcount warning of `type`. EXPECT_CONTRACT_VIOLATION ties a violation to its
  // statement instead.
  void expect_violation(violation_spec spec);
  void expect_refcount_warning(refcount_saturation_type type);

  // Conveniences, failing the test at the caller's line when they fail: fork, and
  // the whole death of a task (kernel::retire: exit, final switch, and the
  // parent's reap unless the task was autoreaped). After retire the task has been
  // reaped and may be freed by the next grace period: do not touch it unless
  // something else holds it.
  task_struct* fork_task(const char* comm, task_struct* parent = nullptr, clone_args args = {},
                         std::source_location where = std::source_location::current());
  void retire(task_struct* t, std::source_location where = std::source_location::current());
  // Retires each task in order.
  void retire(std::initializer_list<task_struct*> tasks,
              std::source_location where = std::source_location::current());

  contract_capture& capture() { return capture_; }

 private:
  void start_kernel(kernel_config config);
  void end_kernel(const char* file, int line);

  contract_capture capture_;  // before the kernel: it outlives it
  std::optional<kernel> kernel_;
  task_struct* body_task_ = nullptr;
  std::optional<current_task_scope> body_scope_;
  std::vector<violation_spec> expected_violations_;
  std::vector<refcount_saturation_type> expected_warnings_;
};

// ---- matchers -------------------------------------------------------------------------------

// Over a prog_run_result (the run-time verifier's findings).
MATCHER_P(HasViolationKind, kind, "has a violation of kind " + std::string(to_string(kind))) {
  for (const violation& v : arg.violations) {
    if (v.kind == kind) {
      return true;
    }
  }
  return false;
}

MATCHER_P2(HasViolation, kind, message,
           "has a violation of kind " + std::string(to_string(kind)) + " saying \"" +
               std::string(message) + "\"") {
  for (const violation& v : arg.violations) {
    if (v.kind == kind && v.message.find(message) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// Over a captured_violation.
MATCHER_P(IsViolation, kind, "is a contract violation of kind " + std::string(to_string(kind))) {
  return arg.kind == kind;
}
MATCHER_P2(IsViolationAbout, kind, task,
           "is a contract violation of kind " + std::string(to_string(kind)) +
               " about the given task") {
  return about(kind, task).matches(arg);
}

// Over a task (const task_struct* or task_struct*).
MATCHER_P(HasUsage, n, "has usage " + ::testing::PrintToString(n)) {
  const unsigned got = refcount_read(&arg->usage);
  *result_listener << "usage is " << static_cast<int>(got);
  return got == static_cast<unsigned>(n);
}
MATCHER_P(HasRcuUsers, n, "has rcu_users " + ::testing::PrintToString(n)) {
  const unsigned got = refcount_read(&arg->rcu_users);
  *result_listener << "rcu_users is " << static_cast<int>(got);
  return got == static_cast<unsigned>(n);
}
MATCHER_P2(HasCounters, u, r,
           "has usage " + ::testing::PrintToString(u) + " and rcu_users " +
               ::testing::PrintToString(r)) {
  const unsigned gu = refcount_read(&arg->usage);
  const unsigned gr = refcount_read(&arg->rcu_users);
  *result_listener << "usage is " << static_cast<int>(gu) << ", rcu_users is "
                   << static_cast<int>(gr);
  return gu == static_cast<unsigned>(u) && gr == static_cast<unsigned>(r);
}
MATCHER_P(HasExitState, s, "has exit_state " + ::testing::PrintToString(s)) {
  const int got = arg->exit_state.load(std::memory_order_acquire);
  *result_listener << "exit_state is " << got;
  return got == s;
}
MATCHER(IsExiting, "is exiting (PF_EXITING)") {
  return (arg->flags.load(std::memory_order_acquire) & PF_EXITING) != 0;
}
// Questions to the kernel; never dereference the task. Use: EXPECT_THAT(t, IsFreedIn(k())).
namespace detail {
MATCHER_P(IsAllocatedInMatcher, kern, "is allocated by kernel '" + kern->name() + "'") {
  return kern->is_allocated(arg);
}
MATCHER_P(IsFreedInMatcher, kern, "was freed by kernel '" + kern->name() + "'") {
  return kern->is_freed(arg);
}
MATCHER_P(IsHashedInMatcher, kern, "is hashed in kernel '" + kern->name() + "'") {
  return kern->is_hashed(arg);
}
MATCHER_P(HasEventsInOrderMatcher, kinds, "has events of these kinds in this order") {
  std::size_t next = 0;
  for (const task_event& e : arg) {
    if (next < kinds.size() && e.kind == kinds[next]) {
      ++next;
    }
  }
  if (next < kinds.size()) {
    *result_listener << "no " << to_string(kinds[next]) << " event after the first " << next;
  }
  return next == kinds.size();
}
}  // namespace detail
inline auto IsAllocatedIn(const kernel& k) {
  return detail::IsAllocatedInMatcher(&k);
}
inline auto IsFreedIn(const kernel& k) {
  return detail::IsFreedInMatcher(&k);
}
inline auto IsHashedIn(const kernel& k) {
  return detail::IsHashedInMatcher(&k);
}

// Over a task_event.
MATCHER_P(IsEvent, kind, "is a " + std::string(to_string(kind)) + " event") {
  return arg.kind == kind;
}
MATCHER_P2(IsEventOf, kind, task,
           "is a " + std::string(to_string(kind)) + " event of the given task") {
  return arg.kind == kind && arg.task_id == task_id(task);
}
// Over a std::vector<task_event>: the kinds occur in this order (other events may
// come between them).
inline auto HasEventsInOrder(std::initializer_list<task_event_kind> kinds) {
  return detail::HasEventsInOrderMatcher(std::vector<task_event_kind>(kinds));
}

namespace detail {
// The machinery of TASKLIFE_EXPECT_CONTRACT_VIOLATION: remembers where the
// innermost capture's record stood when the statement started; satisfied() then
// marks as matched every violation recorded since that matches the spec.
class violation_probe {
 public:
  violation_probe(const char* statement, violation_spec spec);
  explicit operator bool() const noexcept { return true; }  // for the macro's `if`
  void threw(const char* what);  // something other than contract_error escaped
  bool satisfied();
  const char* failure() const noexcept { return failure_.c_str(); }

 private:
  const char* statement_;
  violation_spec spec_;
  // Where the record stood: the capture, its size, and how often it had been
  // cleared (a clear during the statement means all that is recorded came after it
  // began).
  const contract_capture* capture_ = nullptr;
  std::size_t start_ = 0;
  std::uint64_t clears_ = 0;
  std::string threw_;
  std::string failure_;
};
}  // namespace detail

// ---- the explorer in a test ---------------------------------------------------------------

// Explores `model` (explore.hpp) and fails the test, at the caller's line, unless
// no execution fails and the space within the options' bound was exhausted: the
// failure's kind and message, its minimised timeline and a line to paste that
// replays it. Returns the report for further checks.
explore::report expect_explores_cleanly(
    const explore::model& model, const explore::options& options = {},
    std::source_location where = std::source_location::current());

// Explores `model` and fails the test unless some execution fails with `kind`
// (its minimised failure is printed when the kind differs). Returns the report.
explore::report expect_explore_finds(const explore::model& model, explore::failure_kind kind,
                                     const explore::options& options = {},
                                     std::source_location where = std::source_location::current());

// "model replay: tasklife::explore::replay(model, "tl1-...")" and the timeline.
std::string describe_failure(const explore::failure& f);

// A report with no failure whose space was exhausted.
MATCHER(ExploresCleanly, "finds no failure and exhausts its space") {
  if (arg.failure) {
    *result_listener << "fails: " << describe_failure(*arg.failure);
    return false;
  }
  if (!arg.exhausted) {
    *result_listener << "does not exhaust its space: " << arg.summary();
    return false;
  }
  return true;
}

// Printers GoogleTest finds by ADL (captured_violation lives here).
void PrintTo(const captured_violation& v, std::ostream* os);

}  // namespace tasklife::testkit

#if defined(TASKLIFE_TESTING_LEGACY_NAMESPACE)
// The kit's name before 0.1.0; it collides with GoogleTest's ::testing under
// `using namespace tasklife`. Kept for one release.
namespace tasklife {
namespace testing = testkit;
}  // namespace tasklife
#endif

// Runs `statement`; a non-fatal failure at the caller's file:line unless a contract
// violation matching `spec` (a contract_kind, about(kind, task), or a message
// substring) was reported while it ran (thrown as contract_error, which the macro
// catches, or only recorded because it came from a noexcept context or the
// capture records). More may be streamed in: `<< "why"`.
#define TASKLIFE_EXPECT_CONTRACT_VIOLATION(statement, spec)                               \
  GTEST_AMBIGUOUS_ELSE_BLOCKER_                                                           \
  if (::tasklife::testkit::detail::violation_probe tasklife_probe_{#statement, (spec)}) { \
    try {                                                                                 \
      statement;                                                                          \
    } catch (const ::tasklife::testkit::contract_error&) {                                \
    } catch (const std::exception& tasklife_e_) {                                         \
      tasklife_probe_.threw(tasklife_e_.what());                                          \
    } catch (...) {                                                                       \
      tasklife_probe_.threw("an exception of unknown type");                              \
    }                                                                                     \
    if (!tasklife_probe_.satisfied()) {                                                   \
      goto GTEST_CONCAT_TOKEN_(tasklife_label_violation_, __LINE__);                      \
    }                                                                                     \
  } else                                                                                  \
    GTEST_CONCAT_TOKEN_(tasklife_label_violation_, __LINE__)                              \
        : GTEST_NONFATAL_FAILURE_(tasklife_probe_.failure())

#if !defined(EXPECT_CONTRACT_VIOLATION) && !defined(TASKLIFE_TESTING_NO_SHORT_NAMES)
#define EXPECT_CONTRACT_VIOLATION(statement, spec) \
  TASKLIFE_EXPECT_CONTRACT_VIOLATION(statement, spec)
#endif

// Skips the test (GoogleTest's GTEST_SKIP; write it first in the body) unless the tier
// this code is compiled for has the checks of `level` (check_level::contracts or
// check_level::full): for a test of a diagnostic that a lower tier compiles out, where
// the misuse the test provokes would be undefined behaviour or a hang.
#define TASKLIFE_REQUIRE_CHECKS(level)                                                      \
  GTEST_AMBIGUOUS_ELSE_BLOCKER_                                                             \
  if constexpr (::tasklife::checks < (level))                                               \
  GTEST_SKIP() << "needs TASKLIFE_CHECKS="                                                  \
               << ((level) == ::tasklife::check_level::full ? "full" : "contracts or full") \
               << "; this build's tier is " TASKLIFE_TIER_NAME

namespace tasklife {
// Printers GoogleTest finds by ADL.
void PrintTo(const task_struct& t, std::ostream* os);
void PrintTo(const task_event& e, std::ostream* os);
void PrintTo(task_event_kind k, std::ostream* os);
void PrintTo(const contract_violation& v, std::ostream* os);
void PrintTo(contract_kind k, std::ostream* os);
void PrintTo(const diagnostic_object& o, std::ostream* os);
void PrintTo(const refcount_warning& w, std::ostream* os);
void PrintTo(const violation& v, std::ostream* os);
void PrintTo(violation_kind k, std::ostream* os);
void PrintTo(semantics_profile p, std::ostream* os);
namespace explore {
void PrintTo(const report& r, std::ostream* os);  // its summary
void PrintTo(failure_kind k, std::ostream* os);
}  // namespace explore
}  // namespace tasklife
