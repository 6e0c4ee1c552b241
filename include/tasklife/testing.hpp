// tasklife/testing.hpp — GoogleTest helpers (target tasklife::testing).
//
// What it is
//   What a test harness built on tasklife needs so that a test fails on any
//   lifetime bug it did not ask for:
//     - contract_capture: while alive, contract violations are recorded and thrown
//       as contract_error (recorded only, from noexcept code), and refcount
//       warnings are recorded instead of printed;
//     - TASKLIFE_EXPECT_CONTRACT_VIOLATION(statement, substring) (short name
//       EXPECT_CONTRACT_VIOLATION): runs the statement and fails at the caller's
//       file:line unless a violation whose message contains `substring` was
//       reported while it ran, thrown or only recorded; a violation matched this
//       way is expected: kernel_test does not report it again;
//     - kernel_test: a fixture that gives each test a fresh kernel and, at the end,
//       runs the end-of-test invariants: every forked task freed exactly once (or
//       torn down as a leak the test inspected), no task leaked, nothing left
//       pending, every pid number given back, no contract violation or refcount
//       warning the test did not declare (expect_violation,
//       expect_refcount_warning, EXPECT_CONTRACT_VIOLATION), and every declared
//       one happened. It is the base of parameterised fixtures too (add
//       ::testing::WithParamInterface<P>; config() may read GetParam()); remake()
//       runs the invariants on the kernel so far and starts another one (a sweep
//       over configurations in one test); a fixture whose test body runs as a
//       task names it in body_task_comm();
//     - matchers for a program run's violations (HasViolation) and printers that
//       show a task with its counters, state and (if traced) its history.
//
// Members
//   contract_error, contract_capture (violations, unmatched_violations,
//   refcount_warnings, clear), TASKLIFE_EXPECT_CONTRACT_VIOLATION
//   (EXPECT_CONTRACT_VIOLATION; TASKLIFE_TESTING_NO_SHORT_NAMES keeps the short
//   name out), kernel_test (config, body_task_comm, k, body_task,
//   leave_body_task, remake, expect_violation, expect_refcount_warning,
//   fork_task, retire, capture), usage, rcu_users, HasViolation,
//   HasViolationKind, PrintTo(task_struct), PrintTo(violation), describe_task
//
// Lifetime
//   One contract_capture at a time per process (it installs the process-wide
//   handler and sink, restoring the previous ones when destroyed);
//   EXPECT_CONTRACT_VIOLATION needs one alive (kernel_test has one). kernel_test
//   owns its kernel: SetUp makes it from config(), remake(c) and TearDown end it.
//   Ending a kernel leaves the body task's current_task_scope, retires the body
//   task, waits for RCU (rcu_barrier), shuts the kernel down and checks its
//   counters, destroys it, then checks the violations and warnings (those its
//   destruction reported included) and forgets them and the declarations.
//   Programs, maps, current_task_scopes and RCU registrations a test creates
//   must be gone before that (declare them in the test body, or reset them
//   before remake).
//
// Memory ordering
//   The recorded violations and warnings are guarded by a mutex: any thread may
//   report, including liburcu's call_rcu worker. EXPECT_CONTRACT_VIOLATION counts
//   what is recorded between the statement's start and its end, from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
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

namespace tasklife::testing {

// Thrown by the capturing handler; carries the violation's message.
class contract_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class contract_capture {
 public:
  contract_capture();
  ~contract_capture();
  contract_capture(const contract_capture&) = delete;
  contract_capture& operator=(const contract_capture&) = delete;

  // Every violation recorded since the capture began (or was cleared), in order.
  std::vector<std::string> violations() const;
  // The same, less those an EXPECT_CONTRACT_VIOLATION matched.
  std::vector<std::string> unmatched_violations() const;
  // A refcount warning as the sink saw it, with the counter's value at that moment
  // (the kernel saturates before it warns, so this is REFCOUNT_SATURATED).
  struct captured_warning {
    refcount_warning warning;
    unsigned value_at_warning;
  };
  std::vector<captured_warning> refcount_warnings() const;
  void clear();
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
  // checked on it, failures name it), then makes a new one from `config`, with a
  // new body task if the fixture has one. Declarations (expect_violation,
  // expect_refcount_warning) and what was captured belong to the old kernel.
  void remake(kernel_config config);

  // Declares that the test provokes a violation whose message contains `substring`
  // (it must happen), or a refcount warning of `type` (it must be raised).
  // EXPECT_CONTRACT_VIOLATION ties a violation to its statement instead.
  void expect_violation(std::string substring);
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
  void end_kernel();

  contract_capture capture_;  // before the kernel: it outlives it
  std::optional<kernel> kernel_;
  task_struct* body_task_ = nullptr;
  std::optional<current_task_scope> body_scope_;
  std::vector<std::string> expected_violations_;
  std::vector<refcount_saturation_type> expected_warnings_;
};

// gMock matchers over a prog_run_result.
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

namespace detail {
// The machinery of TASKLIFE_EXPECT_CONTRACT_VIOLATION: remembers where the
// capture's record stood when the statement started; satisfied() then marks as
// matched every violation recorded since whose message contains the substring.
class violation_probe {
 public:
  violation_probe(const char* statement, std::string_view substring);
  explicit operator bool() const noexcept { return true; }  // for the macro's `if`
  void threw(const char* what);  // something other than contract_error escaped
  bool satisfied();
  const char* failure() const noexcept { return failure_.c_str(); }

 private:
  const char* statement_;
  std::string substring_;
  // Where the record stood: its size, and how often it had been cleared (a clear
  // during the statement means all that is recorded came after it began).
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

}  // namespace tasklife::testing

// Runs `statement`; a non-fatal failure at the caller's file:line unless a contract
// violation whose message contains `substring` was reported while it ran (thrown
// as contract_error, which the macro catches, or only recorded because it came
// from a noexcept context). More may be streamed in: `<< "why"`.
#define TASKLIFE_EXPECT_CONTRACT_VIOLATION(statement, substring)                               \
  GTEST_AMBIGUOUS_ELSE_BLOCKER_                                                                \
  if (::tasklife::testing::detail::violation_probe tasklife_probe_{#statement, (substring)}) { \
    try {                                                                                      \
      statement;                                                                               \
    } catch (const ::tasklife::testing::contract_error&) {                                     \
    } catch (const std::exception& tasklife_e_) {                                              \
      tasklife_probe_.threw(tasklife_e_.what());                                               \
    } catch (...) {                                                                            \
      tasklife_probe_.threw("an exception of unknown type");                                   \
    }                                                                                          \
    if (!tasklife_probe_.satisfied()) {                                                        \
      goto GTEST_CONCAT_TOKEN_(tasklife_label_violation_, __LINE__);                           \
    }                                                                                          \
  } else                                                                                       \
    GTEST_CONCAT_TOKEN_(tasklife_label_violation_, __LINE__)                                   \
        : GTEST_NONFATAL_FAILURE_(tasklife_probe_.failure())

#if !defined(EXPECT_CONTRACT_VIOLATION) && !defined(TASKLIFE_TESTING_NO_SHORT_NAMES)
#define EXPECT_CONTRACT_VIOLATION(statement, substring) \
  TASKLIFE_EXPECT_CONTRACT_VIOLATION(statement, substring)
#endif

namespace tasklife {
// Printers GoogleTest finds by ADL.
void PrintTo(const task_struct& t, std::ostream* os);
void PrintTo(const violation& v, std::ostream* os);
void PrintTo(violation_kind k, std::ostream* os);
void PrintTo(semantics_profile p, std::ostream* os);
}  // namespace tasklife
