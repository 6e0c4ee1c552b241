// A test harness written the way a user of the installed package writes one: only
// <tasklife/testing.hpp>, `using namespace tasklife` at file scope beside
// GoogleTest's ::testing, and every lifetime bug asserted by its kind and the
// object it is about, never by the words of its message. Built in-tree and, by
// the Install.HarnessAgainstInstalledKit test, against an installed tasklife.
// docs/testing.md quotes it.
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/testing.hpp>

using namespace tasklife;  // NOLINT(google-build-using-namespace): the point of this file
using ::testing::ElementsAre;
using testkit::about;
using testkit::capture_mode;
using testkit::captured_violation;
using testkit::contract_capture;
using testkit::HasCounters;
using testkit::IsViolationAbout;

namespace {

// [fixture]
// Every test gets a fresh kernel on the deterministic RCU backend; at the end the
// fixture checks that every task was freed exactly once, nothing leaked, nothing
// is pending, and no violation happened that the test did not declare.
class HarnessTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "harness"}; }
};
// [fixture]

// [use-after-free]
TEST_F(HarnessTest, UseAfterFreeIsReportedByKindAndTask) {
  if constexpr (!debug_checks_enabled) {
    GTEST_SKIP() << "use-after-free reports need the full-check tier";
  }
  task_struct* t = fork_task("victim");
  const std::uint64_t id = task_id(t);
  retire(t);                // exit, final switch, reap: rcu_users reaches 0
  k().rcu().rcu_barrier();  // the grace period ends and the task is freed
  EXPECT_THAT(t, testkit::IsFreedIn(k()));

  // The freed task is still in quarantine: its identity can be read, so about()
  // may name it. The use is reported and refused.
  EXPECT_CONTRACT_VIOLATION(get_task_struct(t), about(contract_kind::use_after_free, t));

  const std::vector<captured_violation> seen = capture().violations();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].object.task_id, id);
  EXPECT_EQ(seen[0].object.comm, "victim");
  EXPECT_EQ(seen[0].operation, "get_task_struct");
  EXPECT_TRUE(seen[0].earlier.has_value()) << "the site that freed it";
}
// [use-after-free]

// [leak]
TEST_F(HarnessTest, LeakIsReportedByKindAndTask) {
  const contract_capture record(capture_mode::record);
  std::uint64_t id = 0;
  {
    kernel scratch({.name = "scratch", .rcu_backend_factory = deterministic_rcu_factory()});
    task_struct* t = scratch.fork(nullptr, {.comm = "forgotten"}).task;
    ASSERT_NE(t, nullptr);
    id = task_id(t);
  }  // torn down with the task never exited: a leak, reported and counted
  const std::vector<captured_violation> seen = record.violations();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].kind, contract_kind::leak);
  EXPECT_EQ(seen[0].object.task_id, id);
  EXPECT_EQ(seen[0].object.kernel, "scratch");
  EXPECT_EQ(seen[0].object.comm, "forgotten");
}
// [leak]

// [double-release]
class TrackedHarnessTest : public testkit::kernel_test {
 protected:
  // Holder tracking remembers who took and who dropped each reference.
  kernel_config config() const override { return {.name = "tracked", .track_holders = true}; }
};

TEST_F(TrackedHarnessTest, DoubleReleaseIsReportedByKindWithBothSites) {
  task_struct* t = fork_task("twice");
  get_task_struct(t);
  put_task_struct(t);
  const unsigned first_put = __LINE__ - 1;
  EXPECT_CONTRACT_VIOLATION(put_task_struct(t), about(contract_kind::double_release, t));
  const std::vector<captured_violation> seen = capture().violations();
  ASSERT_EQ(seen.size(), 1U);
  ASSERT_TRUE(seen[0].earlier.has_value());
  EXPECT_EQ(seen[0].earlier->line(), first_put);
  EXPECT_THAT(t, HasCounters(1, 2)) << "the second put was refused";
  retire(t);
}
// [double-release]

// [skipped]
TEST_F(HarnessTest, ARefusedOperationIsSkipped) {
  task_struct* t = fork_task("running");
  {
    // A recording capture lets the handler return: tasklife then skips the
    // operation, and the test can see that it did.
    const contract_capture record(capture_mode::record);
    k().finish_task_switch(t);  // the final switch of a task that is not dead
    EXPECT_THAT(record.violations(),
                ElementsAre(IsViolationAbout(contract_kind::invalid_state, t)));
  }
  EXPECT_THAT(t, HasCounters(1, 2)) << "the scheduler's rcu_users reference is still there";
  retire(t);
}
// [skipped]

}  // namespace
