// refcount_t under contention: many threads increment and decrement one counter;
// the final reference is observed by exactly one dec_and_test, and a dead counter
// is never revived by inc_not_zero. Thread counts are parameters; duration comes
// from TASKLIFE_STRESS_SECONDS.
#include <atomic>
#include <barrier>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <tasklife/refcount.hpp>
#include <tasklife/testing.hpp>

#include "../support/stress_config.hpp"

namespace tasklife {
namespace {

class RefcountStressTest : public ::testing::TestWithParam<int> {
 protected:
  testkit::contract_capture capture_;
};

TEST_P(RefcountStressTest, FinalDecAndTestIsTrueExactlyOnce) {
  const int threads = GetParam();
  const auto deadline = std::chrono::steady_clock::now() + test::stress_duration();
  long rounds = 0;
  do {
    refcount_t count{threads};  // one reference per thread
    std::atomic<int> zero_seen{0};
    std::vector<std::thread> workers;
    workers.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) {
          refcount_inc(&count);
          if (refcount_dec_and_test(&count)) {
            zero_seen.fetch_add(1);
          }
        }
        if (refcount_dec_and_test(&count)) {  // drop this thread's own reference
          zero_seen.fetch_add(1);
        }
      });
    }
    for (auto& w : workers) {
      w.join();
    }
    ASSERT_EQ(zero_seen.load(), 1) << "round " << rounds;
    ASSERT_EQ(refcount_read(&count), 0U);
    ++rounds;
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(capture_.refcount_warnings().empty());
  RecordProperty("rounds", static_cast<int>(rounds));
}

TEST_P(RefcountStressTest, IncNotZeroNeverRevivesADeadCounter) {
  const int threads = GetParam();
  const auto deadline = std::chrono::steady_clock::now() + test::stress_duration();
  do {
    refcount_t count{1};
    std::atomic<bool> dead{false};
    std::atomic<int> deaths{0};
    std::atomic<int> revived{0};
    std::barrier start(threads + 1);
    std::vector<std::thread> tryers;
    for (int t = 0; t < threads; ++t) {
      tryers.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 2000; ++i) {
          // Acquire pairs with the release store of `dead` after the final drop.
          const bool was_dead = dead.load(std::memory_order_acquire);
          if (refcount_inc_not_zero(&count)) {
            if (was_dead) {
              revived.fetch_add(1);
            }
            if (refcount_dec_and_test(&count)) {
              deaths.fetch_add(1);
              dead.store(true, std::memory_order_release);
            }
          }
        }
      });
    }
    start.arrive_and_wait();
    if (refcount_dec_and_test(&count)) {
      deaths.fetch_add(1);
      dead.store(true, std::memory_order_release);
    }
    for (auto& t : tryers) {
      t.join();
    }
    ASSERT_EQ(revived.load(), 0);
    ASSERT_EQ(deaths.load(), 1) << "the counter reached 0 exactly once";
    ASSERT_EQ(refcount_read(&count), 0U);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(capture_.refcount_warnings().empty());
}

INSTANTIATE_TEST_SUITE_P(Threads, RefcountStressTest, ::testing::Values(2, 4, 8),
                         ::testing::PrintToStringParamName());

}  // namespace
}  // namespace tasklife
