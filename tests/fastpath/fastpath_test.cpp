// The kfuncs' inline fast paths (built here with TASKLIFE_CHECKS=none) against the
// semantics the checked tests prove, and the cases that must leave the fast path:
// a traced or holder-tracked task anywhere in the kernel, a program run, no current.
// The test body runs as task "prog" (kfuncs need current) and ends in the
// kernel_test invariants, here on the unchecked library.
#include <algorithm>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <tasklife/tasklife.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/values.hpp"

namespace tasklife {
namespace {

static_assert(!contract_checks_enabled, "this test is about the unchecked build");

using test::task_value;

bool recorded(const kernel& k, const task_struct* t, std::string_view kfunc) {
  const auto h = k.history(t);
  return std::any_of(h.begin(), h.end(), [&](const task_event& e) {
    return e.kind == task_event_kind::kfunc && e.detail == kfunc;
  });
}

class FastPathTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "fastpath"}; }
  const char* body_task_comm() const override { return "prog"; }
};

TEST_F(FastPathTest, AcquireReleaseFromPidAndXchgKeepTheKernelsCounts) {
  task_struct* t = fork_task("target");
  task_struct* ref = bpf_task_acquire(t);
  EXPECT_EQ(ref, t);
  EXPECT_EQ(rcu_users(t), 3U);
  bpf_task_release(ref);
  EXPECT_EQ(rcu_users(t), 2U);
  EXPECT_EQ(bpf_task_from_pid(t->pid), t);
  EXPECT_EQ(bpf_task_from_pid(-1), nullptr);
  EXPECT_EQ(bpf_task_from_pid(0x7fffffff), nullptr);
  {
    bpf_array_map<task_value> map(k(), 1);
    task_value* v = nullptr;
    {
      const rcu_read_guard guard(k().rcu());
      v = map.lookup_elem(0);
    }
    EXPECT_EQ(bpf_kptr_xchg(&v->task, t), nullptr) << "the from_pid reference moves in";
    EXPECT_EQ(bpf_kptr_xchg(&v->task, nullptr), t);
  }
  bpf_task_release(t);
  EXPECT_EQ(rcu_users(t), 2U);
  retire(t);
}

TEST_F(FastPathTest, ADyingTaskIsRefusedAndTheLastReleaseRequestsTheGracePeriod) {
  task_struct* t = fork_task("dying");
  task_struct* ref = bpf_task_acquire(t);
  retire(t);  // rcu_users 3 -> 1: only the program's reference is left
  EXPECT_EQ(k().stats().rcu_users_zero, 0U);
  bpf_task_release(ref);  // the last rcu user
  EXPECT_EQ(k().stats().rcu_users_zero, 1U);
  EXPECT_EQ(bpf_task_acquire(t), nullptr) << "inc_not_zero on a dead rcu_users";
}

TEST_F(FastPathTest, ATracedTaskTakesTheSlowPathAndIsRecorded) {
  task_struct* t = fork_task("traced", nullptr, {.trace = true});
  bpf_task_release(bpf_task_acquire(t));
  bpf_task_release(bpf_task_from_pid(t->pid));
  EXPECT_TRUE(recorded(k(), t, "bpf_task_acquire"));
  EXPECT_TRUE(recorded(k(), t, "bpf_task_from_pid"));
  retire(t);
}

TEST_F(FastPathTest, TracingThroughAnotherKernelStillLeavesTheFastPath) {
  kernel other({.name = "other"});
  task_struct* t = fork_task("t");
  other.trace_task(t);  // asked of the wrong kernel: t's own kernel must still know
  bpf_task_release(bpf_task_acquire(t));
  EXPECT_TRUE(recorded(k(), t, "bpf_task_acquire"));
  retire(t);
  EXPECT_TRUE(other.shutdown().empty());
}

TEST_F(FastPathTest, HolderTrackingLeavesTheFastPath) {
  remake({.name = "fastpath", .track_holders = true});
  task_struct* t = fork_task("held");
  task_struct* ref = bpf_task_acquire(t);
  const auto hs = k().holders(t);
  ASSERT_FALSE(hs.empty());
  EXPECT_EQ(hs.back().label, "bpf_task_acquire");
  bpf_task_release(ref);
  retire(t);
}

TEST_F(FastPathTest, AProgramRunIsCheckedInAnUncheckedBuild) {
  task_struct* t = fork_task("arg");
  bpf_prog leaky(k(), prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    (void)bpf_task_acquire(arg);  // never released
    return 0;
  });
  const prog_run_result r = leaky.run(body_task(), t);
  ASSERT_EQ(r.violations.size(), 1U);
  EXPECT_EQ(r.violations[0].kind, violation_kind::unreleased_ref);
  EXPECT_EQ(rcu_users(t), 2U) << "the runner released what the program leaked";
  retire(t);
}

TEST_F(FastPathTest, KfuncsWithoutCurrentTakeTheSlowPath) {
  leave_body_task();
  task_struct* t = fork_task("t");
  task_struct* ref = bpf_task_acquire(t);  // no current: no kernel to test, no crash
  EXPECT_EQ(rcu_users(t), 3U);
  bpf_task_release(ref);
  retire(t);
}

TEST_F(FastPathTest, ANestedScopeRestoresTheOuterContextExactly) {
  leave_body_task();
  kernel b({.name = "b", .profile = semantics_profile::usage_based});
  task_struct* pa = body_task();
  task_struct* pb = b.fork(nullptr, {.comm = "pb"}).task;
  task_struct* t = fork_task("t");
  {
    const current_task_scope outer(pa);
    {
      const current_task_scope inner(pb);
      EXPECT_EQ(get_current(), pb);
    }
    EXPECT_EQ(get_current(), pa);
    EXPECT_EQ(bpf_task_from_pid(t->pid), t) << "this kernel's table is current again";
    bpf_task_release(t);
  }
  EXPECT_EQ(get_current(), nullptr);
  retire(t);
  EXPECT_TRUE(b.retire(pb));
  b.rcu().rcu_barrier();
  EXPECT_TRUE(b.shutdown().empty());
  EXPECT_EQ(b.stats().forked, b.stats().freed);
}

}  // namespace
}  // namespace tasklife
