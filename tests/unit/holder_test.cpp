// Holder tracking, the kernel's ref_tracker: who holds each reference, grouped
// leak reports, double releases with both sites. Written on the kernel_test
// fixture of tasklife::testkit, which fails a test on anything it did not declare.
#include <algorithm>
#include <string>

#include <tasklife/testing.hpp>

#include "../support/names.hpp"

namespace tasklife {
namespace {

class HolderTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override {
    return kernel_config{.name = "holders", .track_holders = true};
  }
  static std::size_t count(const std::vector<holder_info>& hs, holder_role role) {
    return static_cast<std::size_t>(std::count_if(
        hs.begin(), hs.end(), [role](const holder_info& h) { return h.role == role; }));
  }
};

TEST_F(HolderTest, EveryReferenceKnowsWhoTookIt) {
  task_struct* t = fork_task("tracked");
  std::vector<holder_info> hs = k().holders(t);
  ASSERT_EQ(hs.size(), 3U) << "the lifecycle's own three: reaper, scheduler, rcu_users group";
  EXPECT_EQ(count(hs, holder_role::reaper), 1U);
  EXPECT_EQ(count(hs, holder_role::scheduler), 1U);
  EXPECT_EQ(count(hs, holder_role::rcu_users_group), 1U);

  const unsigned line = __LINE__ + 1;
  get_task_struct(t);
  hs = k().holders(t);
  ASSERT_EQ(hs.size(), 4U);
  EXPECT_EQ(hs.back().label, "get_task_struct");
  EXPECT_EQ(hs.back().counter, holder_counter::usage);
  EXPECT_EQ(hs.back().taken_at.line(), line);
  EXPECT_THAT(hs.back().taken_at.file_name(), HasSubstr("holder_test.cpp"));
  {
    const current_task_scope as(t);
    task_struct* ref = bpf_task_acquire(t);
    EXPECT_EQ(k().holders(t).back().label, "bpf_task_acquire");
    EXPECT_EQ(k().holders(t).back().counter, holder_counter::rcu_users);
    bpf_task_release(ref);
  }
  put_task_struct(t);
  EXPECT_EQ(k().holders(t).size(), 3U) << "every release took its holder with it";
  retire(t);
}

// The death step by step (not retire): the holders are read between the steps.
TEST_F(HolderTest, TheLifecycleHoldersLeaveWithTheirOwners) {
  task_struct* t = fork_task("dying");
  get_task_struct(t);  // keeps the task allocated, so its holders can be read throughout
  k().do_exit(t);
  k().finish_task_switch(t);
  EXPECT_EQ(count(k().holders(t), holder_role::scheduler), 0U);
  EXPECT_EQ(count(k().holders(t), holder_role::reaper), 1U);
  k().wait_task_zombie(t);
  EXPECT_EQ(count(k().holders(t), holder_role::reaper), 0U);
  k().rcu().rcu_barrier();
  EXPECT_EQ(count(k().holders(t), holder_role::rcu_users_group), 0U)
      << "delayed_put_task_struct dropped the group's usage";
  EXPECT_EQ(k().holders(t).size(), 1U) << "only our get_task_struct is left";
  put_task_struct(t);
}

TEST_F(HolderTest, ADoubleReleasePrintsBothSites) {
  task_struct* t = fork_task("twice");
  const unsigned get_line = __LINE__ + 1;
  get_task_struct(t);
  const unsigned put_line = __LINE__ + 1;
  put_task_struct(t);
  EXPECT_CONTRACT_VIOLATION(put_task_struct(t), "reference already released");
  const std::string report = capture().messages().back();
  EXPECT_THAT(report, HasSubstr("taken by get_task_struct at"));
  EXPECT_THAT(report, HasSubstr(":" + std::to_string(get_line) + " "));
  EXPECT_THAT(report, HasSubstr("released at"));
  EXPECT_THAT(report, HasSubstr(":" + std::to_string(put_line)));
  EXPECT_EQ(refcount_read(&t->usage), 1U) << "the double release was refused";
  retire(t);
}

TEST_F(HolderTest, ALeakReportGroupsHoldersBySite) {
  task_struct* t = fork_task("leaky");
  for (int i = 0; i < 2; ++i) {
    get_task_struct(t);  // the same site twice
  }
  retire(t);
  k().rcu().rcu_barrier();
  const std::vector<leaked_task> leaks = k().shutdown();
  ASSERT_EQ(leaks.size(), 1U);
  EXPECT_EQ(leaks[0].usage, 2U);
  EXPECT_THAT(leaks[0].holders, HasSubstr("usage has 2/2 users at get_task_struct"));
  EXPECT_THAT(leaks[0].holders, HasSubstr("holder_test.cpp"));
  EXPECT_THAT(capture().messages().back(), HasSubstr("usage has 2/2 users at get_task_struct"));
}

// The default configuration: no holder tracking.
class HolderTrackingTest : public testkit::kernel_test {};

TEST_F(HolderTrackingTest, IsOffByDefault) {
  task_struct* t = fork_task("plain");
  get_task_struct(t);
  EXPECT_TRUE(k().holders(t).empty());
  put_task_struct(t);
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_TRUE(k().shutdown().empty());
  EXPECT_EQ(k().stats().freed, 1U);
}

}  // namespace
}  // namespace tasklife
