// Test support: the fixture of the stress tests that load one kernel from several
// threads. Its parameter is the thread count and the final put's mode; its kernel
// (config(), from the parameter) ends in the kernel_test invariants: every task
// freed exactly once, after exactly one grace period, no leak, no violation, no
// refcount warning.
#pragma once

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/testing.hpp>

#include "stress_config.hpp"

namespace tasklife::test {

struct stress_param {
  int threads;
  final_put_mode final_put;  // kernel/fork.c's final put before and since v6.17
};

// The run's base seed (stress_seed) is printed with every failure of the test.
class stress_test : public testkit::kernel_test,
                    public ::testing::WithParamInterface<stress_param> {
 protected:
  void SetUp() override {
    kernel_test::SetUp();
    seed_ = stress_seed();
    seed_trace_.emplace(__FILE__, __LINE__, "TASKLIFE_STRESS_SEED=" + hex(seed_));
  }
  void TearDown() override {
    kernel_test::TearDown();
    seed_trace_.reset();
  }
  // Real threads churning tasks want real grace periods and callbacks that run on
  // their own (liburcu's worker); on the deterministic backend nothing would be
  // freed before the teardown.
  bool native_rcu() const override { return true; }
  int threads() const { return GetParam().threads; }
  final_put_mode final_put() const { return GetParam().final_put; }
  std::uint64_t seed() const { return seed_; }
  // The seed of worker `i`, derived from the base seed.
  std::uint64_t worker_seed(int i) const {
    return splitmix64(seed_ + static_cast<std::uint64_t>(i));
  }
  static std::string hex(std::uint64_t v) {
    std::ostringstream os;
    os << "0x" << std::hex << v;
    return os.str();
  }

 private:
  std::uint64_t seed_ = 0;
  std::optional<::testing::ScopedTrace> seed_trace_;
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
