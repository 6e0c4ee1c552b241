// tasklife/testing.hpp — GoogleTest helpers (target tasklife::testing).
//
// What it is
//   What a test harness built on tasklife needs so that a test fails on any
//   lifetime bug it did not ask for:
//     - contract_capture: while alive, contract violations are recorded and thrown
//       as contract_error (recorded only, from noexcept code), and refcount
//       warnings are recorded instead of printed;
//     - kernel_test: a fixture that gives each test a fresh kernel and, at the end,
//       fails the test on any leak, use-after-free or other contract violation and
//       any refcount warning the test did not declare with expect_violation /
//       expect_refcount_warning;
//     - matchers for a program run's violations (HasViolation) and printers that
//       show a task with its counters, state and (if traced) its history.
//
// Members
//   contract_error, contract_capture, kernel_test, HasViolation, HasViolationKind,
//   PrintTo(task_struct), PrintTo(violation), describe_task
//
// Lifetime
//   One contract_capture at a time per process (it installs the process-wide
//   handler and sink, restoring the previous ones when destroyed). kernel_test
//   owns its kernel; programs and maps a test creates must be destroyed before
//   TearDown (declare them in the test body).
//
// Memory ordering
//   The recorded violations are guarded by a mutex: any thread may report.
#pragma once

#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

  std::vector<std::string> violations() const;
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

class kernel_test : public ::testing::Test {
 protected:
  // Override to configure the kernel (called once per test, in SetUp).
  virtual kernel_config config() const { return kernel_config{.name = "test"}; }

  void SetUp() override;
  void TearDown() override;

  kernel& k() { return *kernel_; }

  // Declares that the test provokes a violation whose message contains `substring`
  // (it must happen), or a refcount warning of `type`.
  void expect_violation(std::string substring);
  void expect_refcount_warning(refcount_saturation_type type);

  // Conveniences: fork (failing the test if the fork fails) and the whole death
  // of a task in the zombie order (exit, final switch, reap).
  task_struct* fork_task(const char* comm, task_struct* parent = nullptr, clone_args args = {});
  void retire(task_struct* t);

  contract_capture& capture() { return capture_; }

 private:
  contract_capture capture_;  // before the kernel: it outlives it
  std::optional<kernel> kernel_;
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

}  // namespace tasklife::testing

namespace tasklife {
// Printers GoogleTest finds by ADL.
void PrintTo(const task_struct& t, std::ostream* os);
void PrintTo(const violation& v, std::ostream* os);
void PrintTo(violation_kind k, std::ostream* os);
void PrintTo(semantics_profile p, std::ostream* os);
}  // namespace tasklife
