// The kfuncs' inline fast paths (built here with TASKLIFE_CHECKS=none) against the
// semantics the checked tests prove, and the cases that must leave the fast path:
// a traced or holder-tracked task anywhere in the kernel, a program run, no current.
#include <algorithm>
#include <string_view>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <tasklife/tasklife.hpp>

namespace tasklife {
namespace {

static_assert(!contract_checks_enabled, "this test is about the unchecked build");

unsigned rcu_users(const task_struct* t) {
  return refcount_read(&t->rcu_users);
}

struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

void retire(kernel& k, task_struct* t) {
  k.do_exit(t);
  k.finish_task_switch(t);
  k.wait_task_zombie(t);
}

bool recorded(const kernel& k, const task_struct* t, std::string_view kfunc) {
  const auto h = k.history(t);
  return std::any_of(h.begin(), h.end(), [&](const task_event& e) {
    return e.kind == task_event_kind::kfunc && e.detail == kfunc;
  });
}

void expect_all_freed(kernel& k) {
  k.rcu().rcu_barrier();
  EXPECT_TRUE(k.shutdown().empty());
  EXPECT_EQ(k.stats().forked, k.stats().freed);
}

TEST(FastPathTest, AcquireReleaseFromPidAndXchgKeepTheKernelsCounts) {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "target"}).task;
  {
    const current_task_scope scope(prog);
    task_struct* ref = bpf_task_acquire(t);
    EXPECT_EQ(ref, t);
    EXPECT_EQ(rcu_users(t), 3U);
    bpf_task_release(ref);
    EXPECT_EQ(rcu_users(t), 2U);
    EXPECT_EQ(bpf_task_from_pid(t->pid), t);
    EXPECT_EQ(bpf_task_from_pid(-1), nullptr);
    EXPECT_EQ(bpf_task_from_pid(0x7fffffff), nullptr);
    bpf_array_map<task_value> map(k, 1);
    task_value* v = nullptr;
    {
      const rcu_read_guard guard(k.rcu());
      v = map.lookup_elem(0);
    }
    EXPECT_EQ(bpf_kptr_xchg(&v->task, t), nullptr) << "the from_pid reference moves in";
    EXPECT_EQ(bpf_kptr_xchg(&v->task, nullptr), t);
    bpf_task_release(t);
    EXPECT_EQ(rcu_users(t), 2U);
  }
  retire(k, t);
  retire(k, prog);
  expect_all_freed(k);
}

TEST(FastPathTest, ADyingTaskIsRefusedAndTheLastReleaseRequestsTheGracePeriod) {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "dying"}).task;
  {
    const current_task_scope scope(prog);
    task_struct* ref = bpf_task_acquire(t);
    retire(k, t);  // rcu_users 3 -> 1: only the program's reference is left
    EXPECT_EQ(k.stats().rcu_users_zero, 0U);
    bpf_task_release(ref);  // the last rcu user
    EXPECT_EQ(k.stats().rcu_users_zero, 1U);
    EXPECT_EQ(bpf_task_acquire(t), nullptr) << "inc_not_zero on a dead rcu_users";
  }
  retire(k, prog);
  expect_all_freed(k);
}

TEST(FastPathTest, ATracedTaskTakesTheSlowPathAndIsRecorded) {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "traced", .trace = true}).task;
  {
    const current_task_scope scope(prog);
    bpf_task_release(bpf_task_acquire(t));
    bpf_task_release(bpf_task_from_pid(t->pid));
  }
  EXPECT_TRUE(recorded(k, t, "bpf_task_acquire"));
  EXPECT_TRUE(recorded(k, t, "bpf_task_from_pid"));
  retire(k, t);
  retire(k, prog);
  expect_all_freed(k);
}

TEST(FastPathTest, TracingThroughAnotherKernelStillLeavesTheFastPath) {
  kernel k;
  kernel other({.name = "other"});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
  other.trace_task(t);  // asked of the wrong kernel: t's own kernel must still know
  {
    const current_task_scope scope(prog);
    bpf_task_release(bpf_task_acquire(t));
  }
  EXPECT_TRUE(recorded(k, t, "bpf_task_acquire"));
  retire(k, t);
  retire(k, prog);
  expect_all_freed(k);
  EXPECT_TRUE(other.shutdown().empty());
}

TEST(FastPathTest, HolderTrackingLeavesTheFastPath) {
  kernel k({.track_holders = true});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "held"}).task;
  {
    const current_task_scope scope(prog);
    task_struct* ref = bpf_task_acquire(t);
    const auto hs = k.holders(t);
    ASSERT_FALSE(hs.empty());
    EXPECT_EQ(hs.back().label, "bpf_task_acquire");
    bpf_task_release(ref);
  }
  retire(k, t);
  retire(k, prog);
  expect_all_freed(k);
}

TEST(FastPathTest, AProgramRunIsCheckedInAnUncheckedBuild) {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "arg"}).task;
  bpf_prog leaky(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    (void)bpf_task_acquire(arg);  // never released
    return 0;
  });
  const prog_run_result r = leaky.run(prog, t);
  ASSERT_EQ(r.violations.size(), 1U);
  EXPECT_EQ(r.violations[0].kind, violation_kind::unreleased_ref);
  EXPECT_EQ(rcu_users(t), 2U) << "the runner released what the program leaked";
  retire(k, t);
  retire(k, prog);
  expect_all_freed(k);
}

TEST(FastPathTest, KfuncsWithoutCurrentTakeTheSlowPath) {
  kernel k;
  task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
  task_struct* ref = bpf_task_acquire(t);  // no current: no kernel to test, no crash
  EXPECT_EQ(rcu_users(t), 3U);
  bpf_task_release(ref);
  retire(k, t);
  expect_all_freed(k);
}

TEST(FastPathTest, ANestedScopeRestoresTheOuterContextExactly) {
  kernel a({.name = "a"});
  kernel b({.name = "b", .profile = semantics_profile::usage_based});
  task_struct* pa = a.fork(nullptr, {.comm = "pa"}).task;
  task_struct* pb = b.fork(nullptr, {.comm = "pb"}).task;
  task_struct* t = a.fork(nullptr, {.comm = "t"}).task;
  {
    const current_task_scope outer(pa);
    {
      const current_task_scope inner(pb);
      EXPECT_EQ(get_current(), pb);
    }
    EXPECT_EQ(get_current(), pa);
    EXPECT_EQ(bpf_task_from_pid(t->pid), t) << "kernel a's table is current again";
    bpf_task_release(t);
  }
  EXPECT_EQ(get_current(), nullptr);
  retire(a, t);
  retire(a, pa);
  retire(b, pb);
  expect_all_freed(a);
  expect_all_freed(b);
}

}  // namespace
}  // namespace tasklife
