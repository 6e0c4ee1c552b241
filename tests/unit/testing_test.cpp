// The kit itself (tasklife/testing.hpp): what EXPECT_CONTRACT_VIOLATION accepts and
// refuses and where it fails, and that kernel_test's end-of-test invariants catch
// what they promise to catch (checked through remake, whose failures are
// intercepted here), with a body task and with a parameter.
#include <climits>
#include <source_location>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
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

class KitTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "kit"}; }
};

// ---- EXPECT_CONTRACT_VIOLATION ------------------------------------------------------------

TEST_F(KitTest, ExpectContractViolationAcceptsAThrownViolation) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  EXPECT_CONTRACT_VIOLATION(get_task_struct(nullptr), "get_task_struct() called with a NULL task");
  // TearDown does not report the matched violation again: the test passes.
}

TEST_F(KitTest, ExpectContractViolationAcceptsOneOnlyRecordedInANoexceptContext) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
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
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  EXPECT_NONFATAL_FAILURE(EXPECT_CONTRACT_VIOLATION(get_task_struct(nullptr), "something else"),
                          "it reported only:\n    [null_argument] get_task_struct() called "
                          "with a NULL task");
  EXPECT_THAT(capture().unmatched_violations(),
              ElementsAre(IsViolation(contract_kind::null_argument)));
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
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  {
    const rcu_thread_registration reg(k().rcu());
    k().rcu().rcu_read_unlock();  // recorded, nobody declared it
  }
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              ElementsAre(HasSubstr("unexpected contract violation: unbalanced_unlock in "
                                    "rcu/rcu_read_unlock")));
}

TEST_F(KitTest, AViolationReportedWhileTheKernelIsDestroyedFailsTheTest) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  std::thread([&] {
    k().rcu().register_thread(std::source_location::current());  // never unregistered
  }).join();
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              Contains(AllOf(HasSubstr("unexpected contract violation: teardown_order"),
                             HasSubstr("RCU domain 'kit/rcu'"))));
}

TEST_F(KitTest, ADeclaredViolationThatNeverHappensFailsTheTest) {
  expect_violation("never reported");
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  EXPECT_THAT(Messages(results),
              ElementsAre(HasSubstr("expected a violation of any kind whose message contains "
                                    "\"never reported\"")));
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
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  expect_violation("called with a NULL task");
  EXPECT_THROW(get_task_struct(nullptr), testkit::contract_error);
  remake({.name = "second", .profile = semantics_profile::rcu_safe});
  EXPECT_EQ(k().name(), "second");
  EXPECT_EQ(k().config().profile, semantics_profile::rcu_safe);
  EXPECT_THAT(capture().violations(), IsEmpty()) << "what was captured belonged to the old kernel";
  retire(fork_task("new"));
}

TEST_F(KitTest, TeardownFailuresPointAtTheTestNotAtTheKit) {
  (void)fork_task("forgotten");
  const unsigned line = __LINE__ + 1;
  const auto results = Intercepted([&] { remake({.name = "kit"}); });
  ASSERT_FALSE(results.empty());
  for (const ::testing::TestPartResult& r : results) {
    EXPECT_THAT(r.file_name(), EndsWith("testing_test.cpp"));
    EXPECT_EQ(r.line_number(), static_cast<int>(line));
  }
}

// ---- structured violations: kind, operation, object, sites ---------------------------------

TEST_F(KitTest, AUseAfterFreeNamesItsKindTaskAndTheSiteThatFreedIt) {
  if constexpr (!debug_checks_enabled) {
    GTEST_SKIP() << "use-after-free reports need TASKLIFE_CHECKS=full";
  }
  task_struct* t = fork_task("victim");
  const std::uint64_t id = task_id(t);
  const pid_t pid = t->pid;
  retire(t);
  k().rcu().rcu_barrier();  // the grace period ends and its callback frees the task
  ASSERT_THAT(t, IsFreedIn(k()));
  const testkit::violation_spec uaf = about(contract_kind::use_after_free, t);
  EXPECT_CONTRACT_VIOLATION(get_task_struct(t), uaf);
  const std::vector<testkit::captured_violation> seen = capture().violations();
  ASSERT_EQ(seen.size(), 1U);
  const testkit::captured_violation& v = seen.front();
  EXPECT_EQ(v.kind, contract_kind::use_after_free);
  EXPECT_EQ(v.operation, "get_task_struct");
  EXPECT_EQ(v.object.task_id, id);
  EXPECT_EQ(v.object.pid, pid);
  EXPECT_EQ(v.object.comm, "victim");
  EXPECT_EQ(v.object.kernel, "kit");
  ASSERT_TRUE(v.earlier.has_value()) << "the free's own site";
  EXPECT_THAT(v.earlier->file_name(), EndsWith(".cpp"));
}

TEST_F(KitTest, ADoubleReleaseNamesBothSitesWhenHoldersAreTracked) {
  remake({.name = "kit", .track_holders = true});
  task_struct* t = fork_task("twice");
  get_task_struct(t);
  const unsigned put_line = __LINE__ + 1;
  put_task_struct(t);
  EXPECT_CONTRACT_VIOLATION(put_task_struct(t), about(contract_kind::double_release, t));
  const std::vector<testkit::captured_violation> seen = capture().violations();
  ASSERT_EQ(seen.size(), 1U);
  ASSERT_TRUE(seen.front().earlier.has_value());
  EXPECT_EQ(seen.front().earlier->line(), put_line) << "where the reference was released first";
  retire(t);
}

TEST_F(KitTest, ARecordingCaptureObservesThatTheOperationWasSkipped) {
  task_struct* t = fork_task("alive");
  {
    const contract_capture record(capture_mode::record);
    k().finish_task_switch(t);  // not TASK_DEAD: refused, and the handler returns
    EXPECT_THAT(record.violations(),
                ElementsAre(IsViolationAbout(contract_kind::invalid_state, t)));
    EXPECT_THAT(t, HasCounters(1, 2)) << "skipped: the scheduler's rcu_users was not dropped";
  }
  EXPECT_THAT(capture().violations(), IsEmpty()) << "the innermost capture took it";
  retire(t);
}

TEST_F(KitTest, CapturesNestAndTheInnermostReceives) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const contract_capture outer(capture_mode::record);
  {
    const contract_capture inner(capture_mode::record);
    get_task_struct(nullptr);
    EXPECT_EQ(inner.count(contract_kind::null_argument), 1U);
    EXPECT_EQ(outer.count(contract_kind::null_argument), 0U);
  }
  get_task_struct(nullptr);
  EXPECT_EQ(outer.count(contract_kind::null_argument), 1U);
  EXPECT_THAT(capture().violations(), IsEmpty());
}

TEST_F(KitTest, ALeakAtTeardownIsALeakAboutTheTask) {
  const contract_capture record(capture_mode::record);
  std::uint64_t id = 0;
  {
    kernel leaky({.name = "leaky", .rcu_backend_factory = deterministic_rcu_factory()});
    const fork_result r = leaky.fork(nullptr, {.comm = "kept"});
    ASSERT_TRUE(r);
    id = task_id(r.task);
  }  // destroyed with the task never exited
  const std::vector<testkit::captured_violation> seen = record.violations();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen.front().kind, contract_kind::leak);
  EXPECT_EQ(seen.front().object.task_id, id);
  EXPECT_EQ(seen.front().object.comm, "kept");
  EXPECT_EQ(seen.front().object.kernel, "leaky");
}

TEST_F(KitTest, ARefcountWarningNamesTheTaskAndTheCounter) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("hot");
  refcount_add(INT_MAX, &t->usage);  // overflow: saturated, warned once
  const auto warnings = capture().refcount_warnings();
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_EQ(warnings.front().warning.type, REFCOUNT_ADD_OVF);
  EXPECT_EQ(warnings.front().warning.counter, "usage");
  EXPECT_EQ(warnings.front().warning.object.task_id, task_id(t));
  EXPECT_EQ(warnings.front().warning.object.comm, "hot");
  expect_refcount_warning(REFCOUNT_ADD_OVF);
  refcount_set(&t->usage, 1);  // undo the test's own damage, so the task dies normally
  retire(t);
}

TEST_F(KitTest, AFakeTaskIsNotATaskAndAnotherKernelsTaskIsForeign) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  kernel other({.name = "other", .rcu_backend_factory = deterministic_rcu_factory()});
  task_struct* theirs = other.fork(nullptr, {.comm = "theirs"}).task;
  task_struct* caller = fork_task("caller");
  {
    const current_task_scope scope(caller);
    alignas(task_struct) unsigned char storage[sizeof(task_struct)] = {};
    auto* fake = reinterpret_cast<task_struct*>(storage);
    EXPECT_CONTRACT_VIOLATION((void)bpf_task_acquire(fake), contract_kind::not_a_task);
    EXPECT_CONTRACT_VIOLATION((void)bpf_task_acquire(theirs),
                              about(contract_kind::foreign_object, theirs));
  }
  retire(caller);
  other.retire(theirs);
  other.rcu().rcu_barrier();
}

// ---- matchers and printers --------------------------------------------------------------------

TEST_F(KitTest, TaskMatchersFollowATaskThroughItsDeath) {
  task_struct* t = fork_task("mortal");
  EXPECT_THAT(t, HasCounters(1, 2));
  EXPECT_THAT(t, HasUsage(1));
  EXPECT_THAT(t, HasRcuUsers(2));
  EXPECT_THAT(t, IsAllocatedIn(k()));
  EXPECT_THAT(t, IsHashedIn(k()));
  EXPECT_THAT(t, ::testing::Not(IsExiting()));
  k().do_exit(t);
  EXPECT_THAT(t, IsExiting());
  EXPECT_THAT(t, HasExitState(EXIT_ZOMBIE));
  EXPECT_THAT(t, IsHashedIn(k())) << "a zombie stays hashed until its parent reaps it";
  k().finish_task_switch(t);
  EXPECT_THAT(t, HasRcuUsers(1));
  ASSERT_TRUE(k().wait_task_zombie(t));
  EXPECT_THAT(t, ::testing::Not(IsHashedIn(k())));
  EXPECT_THAT(t, HasRcuUsers(0));
  EXPECT_THAT(t, IsAllocatedIn(k())) << "until the grace period ends";
  k().rcu().rcu_barrier();
  EXPECT_THAT(t, ::testing::Not(IsAllocatedIn(k())));
  if constexpr (debug_checks_enabled) {
    EXPECT_THAT(t, IsFreedIn(k()));
  }
}

TEST_F(KitTest, EventMatchersSeeTheDeathInOrder) {
  task_struct* t = fork_task("traced");
  k().trace_task(t);
  retire(t);
  k().rcu().rcu_barrier();
  const std::vector<task_event> events = k().events();
  EXPECT_THAT(events, HasEventsInOrder({task_event_kind::exit, task_event_kind::zombie,
                                        task_event_kind::final_switch, task_event_kind::reap,
                                        task_event_kind::gp_requested, task_event_kind::gp_elapsed,
                                        task_event_kind::free}));
  EXPECT_THAT(
      events,
      ::testing::Not(HasEventsInOrder({task_event_kind::free, task_event_kind::gp_requested})));
  EXPECT_THAT(events, Contains(IsEventOf(task_event_kind::reap, t)));
  ASSERT_FALSE(events.empty());
  EXPECT_THAT(::testing::PrintToString(events.front()), HasSubstr("exit"))
      << "a task_event prints as text, not as raw bytes";
}

TEST_F(KitTest, ViolationsAndObjectsPrintAsText) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const contract_capture record(capture_mode::record);
  get_task_struct(nullptr);
  const std::vector<testkit::captured_violation> seen = record.violations();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_THAT(::testing::PrintToString(seen.front()),
              HasSubstr("null_argument in task/get_task_struct about no object"));
  EXPECT_EQ(::testing::PrintToString(contract_kind::double_release), "double_release");
}

// ---- retire, and attached programs -----------------------------------------------------------

class KitRetireTest : public testkit::kernel_test,
                      public ::testing::WithParamInterface<std::tuple<bool, bool>> {
 protected:
  bool native_rcu() const override { return std::get<0>(GetParam()); }
};

TEST_P(KitRetireTest, RetireEndsEveryKindOfTaskCleanly) {
  const bool thread = std::get<1>(GetParam());
  task_struct* leader = fork_task("leader");
  for (int round = 0; round < 50; ++round) {
    task_struct* t = fork_task("child", leader, {.thread = thread, .autoreap = !thread});
    retire(t);  // autoreaped: the grace period its final switch starts may free it at once
  }
  retire(leader);
}

INSTANTIATE_TEST_SUITE_P(Backends, KitRetireTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param) ? "Liburcu"
                                                                            : "Deterministic") +
                                  (std::get<1>(param_info.param) ? "Thread" : "AutoreapedChild");
                         });

TEST_F(KitTest, AnAttachedProgramDetachesWhenItsLinkEnds) {
  int runs = 0;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    ++runs;
    return 0;
  });
  {
    const bpf_link link = p.attach(k().task_newtask());
    EXPECT_TRUE(k().task_newtask().enabled());
    task_struct* a = fork_task("a");
    retire(a);
  }
  EXPECT_FALSE(k().task_newtask().enabled()) << "the link's end detached the program";
  task_struct* b = fork_task("b");
  retire(b);
  EXPECT_EQ(runs, 1);
}

// ---- a body task, and a parameter -------------------------------------------------------

class KitBodyTaskTest : public testkit::kernel_test {
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

class KitParamTest : public testkit::kernel_test,
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
