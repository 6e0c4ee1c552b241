// The kit itself (tasklife/testing.hpp): what EXPECT_CONTRACT_VIOLATION accepts and
// refuses and where it fails, and that kernel_test's end-of-test invariants catch
// what they promise to catch (checked through remake, whose failures are
// intercepted here), with a body task and with a parameter.
#include <source_location>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <tasklife/testing.hpp>

#include "../support/names.hpp"

namespace tasklife {
namespace {

// The failures `f` reports on this thread, intercepted.
template <class F>
std::vector<::testing::TestPartResult> Intercepted(F&& f) {
  ::testing::TestPartResultArray results;
  {
    const ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    f();
  }
  std::vector<::testing::TestPartResult> out;
  for (int i = 0; i < results.size(); ++i) {
    out.push_back(results.GetTestPartResult(i));
  }
  return out;
}

std::vector<std::string> Messages(const std::vector<::testing::TestPartResult>& results) {
  std::vector<std::string> out;
  for (const ::testing::TestPartResult& r : results) {
    out.emplace_back(r.message());
  }
  return out;
}

class KitTest : public testing::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "kit"}; }
};

// ---- EXPECT_CONTRACT_VIOLATION ------------------------------------------------------------

TEST_F(KitTest, ExpectContractViolationAcceptsAThrownViolation) {
  EXPECT_CONTRACT_VIOLATION(get_task_struct(nullptr), "get_task_struct() called with a NULL task");
  // TearDown does not report the matched violation again: the test passes.
}

TEST_F(KitTest, ExpectContractViolationAcceptsOneOnlyRecordedInANoexceptContext) {
  const rcu_thread_registration reg(k().rcu());
  // rcu_read_unlock is noexcept: the handler's exception is caught inside it.
  EXPECT_CONTRACT_VIOLATION(k().rcu().rcu_read_unlock(), "rcu_read_unlock() without a matching");
  EXPECT_THAT(capture().unmatched_violations(), IsEmpty());
}

TEST_F(KitTest, ExpectContractViolationFailsWhenNothingIsReported) {
  task_struct* t = fork_task("t");
  EXPECT_NONFATAL_FAILURE(EXPECT_CONTRACT_VIOLATION(get_task_struct(t), "anything"),
                          "it reported no violation");
  put_task_struct(t);
  retire(t);
}

TEST_F(KitTest, ExpectContractViolationFailsOnAnotherMessageAndLeavesItUnexpected) {
  EXPECT_NONFATAL_FAILURE(EXPECT_CONTRACT_VIOLATION(get_task_struct(nullptr), "something else"),
                          "it reported only:\n    get_task_struct() called with a NULL task");
  EXPECT_THAT(capture().unmatched_violations(),
              ElementsAre(HasSubstr("get_task_struct() called with a NULL task")));
  expect_violation("called with a NULL task");  // else TearDown fails the test
}

TEST_F(KitTest, ExpectContractViolationFailsAtTheCallersLineWithTheStreamedMessage) {
  int line = 0;
  const auto results = Intercepted([&] {
    line = __LINE__ + 1;
    EXPECT_CONTRACT_VIOLATION((void)0, "nothing") << "streamed";
  });
  ASSERT_EQ(results.size(), 1U);
  const ::testing::TestPartResult& r = results[0];
  EXPECT_TRUE(r.nonfatally_failed());
  EXPECT_THAT(r.file_name(), EndsWith("testing_test.cpp"));
  EXPECT_EQ(r.line_number(), line);
  EXPECT_THAT(r.message(), HasSubstr("Expected: (void)0"));
  EXPECT_THAT(r.message(), HasSubstr("streamed"));
}

TEST_F(KitTest, ExpectContractViolationFailsWhenSomethingElseIsThrown) {
  EXPECT_NONFATAL_FAILURE(
      EXPECT_CONTRACT_VIOLATION(throw std::runtime_error("not a contract"), "anything"),
      "it threw not a contract");
}

TEST(KitWithoutCaptureTest, ExpectContractViolationNeedsACapture) {
  EXPECT_NONFATAL_FAILURE(EXPECT_CONTRACT_VIOLATION((void)0, "anything"),
                          "no contract_capture is alive");
}

// ---- the end-of-test invariants, checked by remake ----------------------------------------

TEST_F(KitTest, ALeakedTaskFailsTheTest) {
  (void)fork_task("forgotten");
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results), Contains(HasSubstr("leaked task 'forgotten'")));
  EXPECT_THAT(Messages(results), Contains(HasSubstr("invariants of kernel 'kit'")));
}

TEST_F(KitTest, AnUndeclaredViolationFailsTheTest) {
  {
    const rcu_thread_registration reg(k().rcu());
    k().rcu().rcu_read_unlock();  // recorded, nobody declared it
  }
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              ElementsAre(HasSubstr("unexpected contract violation: rcu_read_unlock()")));
}

TEST_F(KitTest, AViolationReportedWhileTheKernelIsDestroyedFailsTheTest) {
  std::thread([&] {
    k().rcu().register_thread(std::source_location::current());  // never unregistered
  }).join();
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              Contains(HasSubstr("unexpected contract violation: RCU domain 'kit/rcu'")));
}

TEST_F(KitTest, ADeclaredViolationThatNeverHappensFailsTheTest) {
  expect_violation("never reported");
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              ElementsAre(HasSubstr("expected a violation saying \"never reported\"")));
}

TEST_F(KitTest, AnUndeclaredRefcountWarningFailsTheTest) {
  refcount_t dead{0};
  refcount_inc(&dead);  // addition on 0
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results), ElementsAre(HasSubstr("unexpected refcount warning: refcount_t: "
                                                       "addition on 0; use-after-free.")));
}

TEST_F(KitTest, ADeclaredRefcountWarningThatIsNeverRaisedFailsTheTest) {
  expect_refcount_warning(REFCOUNT_SUB_UAF);
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              ElementsAre(HasSubstr("expected a refcount warning \"refcount_t: underflow")));
}

TEST_F(KitTest, AnUnreapedZombieFailsTheTest) {
  task_struct* t = fork_task("zombie");
  k().do_exit(t);
  k().finish_task_switch(t);  // never reaped: still hashed, its number taken
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results), Contains(HasSubstr("leaked task 'zombie'")));
}

TEST_F(KitTest, RetireFailsAtTheCallersLineWhenTheTaskIsAlreadyExiting) {
  task_struct* t = fork_task("twice");
  k().do_exit(t);
  int line = 0;
  const auto results = Intercepted([&] {
    line = __LINE__ + 1;
    retire(t);
  });
  ASSERT_EQ(results.size(), 1U);
  EXPECT_THAT(results[0].message(), HasSubstr("retire: do_exit() on task 'twice'"));
  EXPECT_EQ(results[0].line_number(), line);
  expect_violation("which is already exiting");
  k().finish_task_switch(t);
  EXPECT_TRUE(k().wait_task_zombie(t));
}

TEST_F(KitTest, RemakeStartsAFreshKernelWithFreshDeclarations) {
  expect_violation("called with a NULL task");
  EXPECT_THROW(get_task_struct(nullptr), testing::contract_error);
  remake({.name = "second", .profile = semantics_profile::rcu_safe});
  EXPECT_EQ(k().name(), "second");
  EXPECT_EQ(k().config().profile, semantics_profile::rcu_safe);
  EXPECT_THAT(capture().violations(), IsEmpty()) << "what was captured belonged to the old kernel";
  retire(fork_task("new"));
}

// ---- a body task, and a parameter -------------------------------------------------------

class KitBodyTaskTest : public testing::kernel_test {
 protected:
  const char* body_task_comm() const override { return "prog"; }
};

TEST_F(KitBodyTaskTest, TheBodyRunsAsItsTaskUntilItLeaves) {
  ASSERT_NE(body_task(), nullptr);
  EXPECT_STREQ(body_task()->comm, "prog");
  EXPECT_EQ(get_current(), body_task());
  EXPECT_EQ(bpf_get_current_task_btf(), body_task());
  remake({.name = "again"});
  ASSERT_NE(body_task(), nullptr) << "a new kernel, a new body task";
  EXPECT_EQ(&task_kernel(body_task()), &k());
  EXPECT_EQ(k().stats().forked, 1U) << "only the new body task";
  leave_body_task();
  EXPECT_EQ(get_current(), nullptr);
  // TearDown retires the body task: no leak.
}

class KitParamTest : public testing::kernel_test,
                     public ::testing::WithParamInterface<semantics_profile> {
 protected:
  kernel_config config() const override { return {.name = "kit", .profile = GetParam()}; }
};

TEST_P(KitParamTest, ConfigReadsTheParameter) {
  EXPECT_EQ(k().config().profile, GetParam());
  retire(fork_task("t"));
}

INSTANTIATE_TEST_SUITE_P(Profiles, KitParamTest,
                         ::testing::Values(semantics_profile::rcu_users_inc,
                                           semantics_profile::current),
                         [](const auto& param_info) {
                           return std::string(to_string(param_info.param));
                         });

}  // namespace
}  // namespace tasklife
