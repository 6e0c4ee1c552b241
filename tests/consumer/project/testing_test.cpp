// The GoogleTest kit from the consumer's side: the fixture's end-of-test invariants
// (every task freed exactly once, nothing leaked) hold for a task's whole life, and
// the tier's checks are what the tier says.
#include <gtest/gtest.h>

#include <tasklife/testing.hpp>

namespace {

class ConsumerKernelTest : public tasklife::testkit::kernel_test {};

TEST_F(ConsumerKernelTest, ForkedTaskIsFreedOnceAfterItsDeath) {
  tasklife::task_struct* t = fork_task("worker");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(tasklife::testkit::usage(t), 1U);
  EXPECT_EQ(tasklife::testkit::rcu_users(t), 2U);
  tasklife::get_task_struct(t);
  tasklife::put_task_struct(t);
  retire(t);
  // TearDown checks that the task was freed exactly once and that nothing leaked.
}

TEST(ConsumerTier, ChecksAreTheTiersOwn) {
  EXPECT_STREQ(TASKLIFE_TIER_NAME, tasklife::checks == tasklife::check_level::full   ? "full"
                                   : tasklife::checks == tasklife::check_level::none ? "none"
                                                                                     : "contracts");
}

}  // namespace
