// The thread's observer: where contract violations, refcount warnings and
// verifier violations go while the explorer runs an execution on this OS thread
// (src/explore/explore.cpp), instead of the process-wide handler and sink.
//
// What it is
//   A per-OS-thread table of three callbacks and their context. While one is
//   installed, report_contract_violation calls it and returns (the offending
//   operation is skipped, as under any handler that returns), every refcount
//   warning occurrence is passed to it (not only the first of its kind) and not
//   printed, and a program run's recorded violations are passed to it as well.
//   Parallel explorations on other OS threads, and the user's own handler, are
//   not disturbed.
//
// Lifetime
//   Installed and removed by the explorer around each exploration, on its thread.
//
// Memory ordering
//   None: thread-local.
#pragma once

#include <tasklife/check.hpp>

namespace tasklife {
struct refcount_warning;  // refcount.hpp
struct violation;         // prog.hpp
}  // namespace tasklife

namespace tasklife::detail {

struct thread_observer {
  void* context;
  void (*contract)(void* context, const contract_violation& v);
  void (*refcount)(void* context, const refcount_warning& w);
  void (*verifier)(void* context, const violation& v);
};

// Defined in src/check.cpp.
extern constinit thread_local const thread_observer* tls_observer;

}  // namespace tasklife::detail
