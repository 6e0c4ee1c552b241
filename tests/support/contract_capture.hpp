// Test support: turns tasklife's contract violations and refcount warnings into
// things a GoogleTest test can assert, instead of aborting the test binary.
#pragma once

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <tasklife/check.hpp>
#include <tasklife/refcount.hpp>

namespace tasklife::test {

// Thrown by the capturing handler; carries the violation's message.
class contract_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// While alive, contract violations are recorded and then thrown as
// contract_error (a violation reported from a noexcept context is recorded and
// not thrown: see check.hpp), and refcount warnings are recorded instead of
// printed. Restores the previous handler and sink, and re-arms refcount's
// once-per-kind flags, on both ends.
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

 private:
  contract_handler previous_handler_;
  refcount_warning_sink previous_sink_;
};

}  // namespace tasklife::test
