// Test support: the fixture of the stress tests that load one kernel from several
// threads. Its parameter is the thread count and the final put's mode; its kernel
// (config(), from the parameter) ends in the kernel_test invariants: every task
// freed exactly once, after exactly one grace period, no leak, no violation, no
// refcount warning.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/testing.hpp>

namespace tasklife::test {

struct stress_param {
  int threads;
  final_put_mode final_put;  // kernel/fork.c's final put before and since v6.17
};

class stress_test : public testing::kernel_test,
                    public ::testing::WithParamInterface<stress_param> {
 protected:
  int threads() const { return GetParam().threads; }
  final_put_mode final_put() const { return GetParam().final_put; }
};

// Both final put modes, each with 2 and 4 threads.
inline auto stress_params() {
  return ::testing::Values(
      stress_param{2, final_put_mode::immediate}, stress_param{4, final_put_mode::immediate},
      stress_param{2, final_put_mode::deferred}, stress_param{4, final_put_mode::deferred});
}

// "ImmediateFinalPut2Threads", "DeferredFinalPut4Threads", ...
inline std::string stress_param_name(const ::testing::TestParamInfo<stress_param>& param_info) {
  const stress_param& p = param_info.param;
  return std::string(p.final_put == final_put_mode::immediate ? "Immediate" : "Deferred") +
         "FinalPut" + std::to_string(p.threads) + "Threads";
}

}  // namespace tasklife::test
