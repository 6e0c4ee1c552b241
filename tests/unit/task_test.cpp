// The task lifecycle against the kernel: initial counts, the two death orders,
// who drops what, the grace period before the free, usage holders, the v6.17
// deferred free, fork failure, use-after-free reports, teardown, tracepoints and
// history. docs/kernel.md §1 (the two counters and who frees when) and §2 (the two
// death orders) are the specification; each test names the invariant it proves
// (docs/semantics.md points back here). Every test ends in the kernel_test
// invariants: every task freed exactly once, nothing leaked, nothing pending.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/fmt.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/threads.hpp"

namespace tasklife {
namespace {

using test::rcu_reader_hold;

class TaskTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "task-test"}; }
  // The test's own configuration, under the fixture's name.
  void Make(kernel_config config) {
    config.name = "task-test";
    remake(std::move(config));
  }
  bool Hashed(task_struct* t) {
    const rcu_thread_registration reg(k().rcu());
    const rcu_read_guard guard(k().rcu());
    return find_task_by_pid_ns(t->pid, &k().init_pid_ns()) == t;
  }
};

// ---- initial counts (copy_process)
// ---------------------------------------------------------------

TEST_F(TaskTest, ForkStartsWithUsageOneAndRcuUsersTwoHashedEverywhere) {
  std::vector<task_struct*> seen;
  const auto probe = k().task_newtask().attach([&](task_struct* t) {
    EXPECT_EQ(usage(t), 1U);
    EXPECT_EQ(rcu_users(t), 2U);
    seen.push_back(t);
  });
  task_struct* init = fork_task("init");
  task_struct* child = fork_task("worker", init, {.new_pid_ns = true});
  EXPECT_EQ(usage(child), 1U) << "one for the rcu users";
  EXPECT_EQ(rcu_users(child), 2U) << "one for the reaper, one for the scheduler";
  EXPECT_EQ(init->pid, 1);
  EXPECT_STREQ(child->comm, "worker");
  EXPECT_EQ(child->real_parent, init);
  EXPECT_EQ(child->tgid, child->pid);
  EXPECT_TRUE(Hashed(child));
  pid_namespace* ns = task_active_pid_ns(child);
  EXPECT_EQ(ns->level(), 1U);
  EXPECT_EQ(task_pid_nr_ns(child, ns), 1) << "pid 1 of its new namespace";
  EXPECT_EQ(task_pid_nr_ns(child, &k().init_pid_ns()), child->pid);
  EXPECT_THAT(seen, ElementsAre(init, child)) << "task_newtask fired once per fork";
  k().task_newtask().detach(probe);
  retire({child, init});
}

// ---- the two death orders (docs/kernel.md §2), step by step ------------------------------------

TEST_F(TaskTest, ZombieOrderUnhashesAtReapAndFreesAfterTheGracePeriod) {
  task_struct* t = fork_task("zombie");
  k().do_exit(t, 7);
  EXPECT_NE(t->flags.load() & PF_EXITING, 0U);
  EXPECT_EQ(t->exit_state.load(), EXIT_ZOMBIE);
  EXPECT_EQ(t->state.load(), TASK_DEAD);
  EXPECT_EQ(t->exit_code, 7);
  EXPECT_EQ(rcu_users(t), 2U);

  k().finish_task_switch(t);  // the scheduler's drop
  EXPECT_EQ(rcu_users(t), 1U);
  EXPECT_TRUE(Hashed(t)) << "a zombie is still findable by pid";

  std::optional<rcu_reader_hold> reader(std::in_place, k().rcu());
  EXPECT_TRUE(k().wait_task_zombie(t));
  EXPECT_FALSE(Hashed(t)) << "release_task unhashes before the reap-side drop";
  EXPECT_EQ(t->exit_state.load(), EXIT_DEAD);
  EXPECT_EQ(rcu_users(t), 0U);
  EXPECT_EQ(k().stats().rcu_users_zero, 1U) << "the grace period is requested";
  // The reader holds the grace period open: no free can have happened (no barrier
  // here: it would wait for the callback, which waits for the reader).
  EXPECT_EQ(k().stats().freed, 0U) << "freed before a grace period had passed";
  EXPECT_EQ(usage(t), 1U);
  reader.reset();
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().gp_elapsed, 1U);
  EXPECT_EQ(k().stats().freed, 1U);
}

TEST_F(TaskTest, AutoreapOrderUnhashesAtExitAndTheFinalSwitchRequestsTheGracePeriod) {
  task_struct* t = fork_task("thread", nullptr, {.autoreap = true});
  k().do_exit(t);
  EXPECT_EQ(t->exit_state.load(), EXIT_DEAD);
  EXPECT_FALSE(Hashed(t)) << "release_task(self) runs while the task still runs";
  EXPECT_EQ(rcu_users(t), 1U) << "only the scheduler's reference is left";
  EXPECT_FALSE(k().wait_task_zombie(t)) << "an autoreaped task is not a zombie";

  std::optional<rcu_reader_hold> reader(std::in_place, k().rcu());
  k().finish_task_switch(t);
  EXPECT_EQ(rcu_users(t), 0U);
  EXPECT_EQ(k().stats().rcu_users_zero, 1U);
  EXPECT_EQ(k().stats().freed, 0U);
  reader.reset();
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
}

// Not retire: the reap comes before the final switch here.
TEST_F(TaskTest, ReapBeforeTheFinalSwitchIsTheSameDeath) {
  task_struct* t = fork_task("fastreap");
  k().do_exit(t);
  EXPECT_TRUE(k().wait_task_zombie(t));  // the parent is faster than the last schedule
  EXPECT_EQ(rcu_users(t), 1U);
  EXPECT_EQ(k().stats().rcu_users_zero, 0U);
  k().finish_task_switch(t);
  EXPECT_EQ(k().stats().rcu_users_zero, 1U);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
}

TEST_F(TaskTest, BothOrdersEndInTheSameFreedState) {
  Make({.record_history = true});
  task_struct* a = fork_task("order-a");
  task_struct* b = fork_task("order-b", nullptr, {.autoreap = true});
  const std::uint64_t id_a = a->priv.id;
  const std::uint64_t id_b = b->priv.id;
  retire(a);  // the zombie order: exit, final switch, reap
  retire(b);  // the autoreap order: exit (released by exit_notify), final switch
  k().rcu().rcu_barrier();

  auto tail = [&](std::uint64_t id) {
    std::vector<std::string> kinds;
    const auto h = k().history(id);
    for (auto it = h.end() - 4; it != h.end(); ++it) {
      kinds.emplace_back(to_string(it->kind));
    }
    return kinds;
  };
  const std::vector<std::string> end = {"gp_requested", "gp_elapsed", "put", "free"};
  EXPECT_EQ(tail(id_a), end);
  EXPECT_EQ(tail(id_b), end);
  const kernel_stats s = k().stats();
  EXPECT_EQ(s.forked, 2U);
  EXPECT_EQ(s.rcu_users_zero, 2U);
  EXPECT_EQ(s.gp_elapsed, 2U);
  EXPECT_EQ(s.freed, 2U);
  EXPECT_EQ(k().init_pid_ns().nr_hashed(), 0U);
  EXPECT_EQ(k().init_pid_ns().nr_allocated(), 0U);
}

// ---- rcu_users reaches 0 once; its callback drops one usage (docs/kernel.md §1) ----------------

// ---- thread groups (kernel/fork.c copy_process CLONE_THREAD; kernel/exit.c
// exit_notify, delay_group_leader, wait_task_zombie, release_task) ---------------

// copy_process with CLONE_THREAD: p->real_parent = current->real_parent. The
// thread's parent is the leader's parent, also for a thread forked by a thread,
// and it follows the leader when the leader is reparented.
TEST_F(TaskTest, AThreadsRealParentIsItsLeadersParent) {
  task_struct* init = fork_task("init");
  task_struct* parent = fork_task("parent", init);
  task_struct* leader = fork_task("leader", parent);
  task_struct* t1 = fork_task("t1", leader, {.thread = true});
  task_struct* t2 = fork_task("t2", t1, {.thread = true});
  for (task_struct* t : {t1, t2}) {
    EXPECT_EQ(t->real_parent, parent) << t->comm << ": the leader's parent, not the leader";
    EXPECT_EQ(t->group_leader, leader);
    EXPECT_EQ(t->tgid, leader->pid);
  }
  retire(parent);  // forget_original_parent: the leader and its threads go to init
  EXPECT_EQ(leader->real_parent, init);
  EXPECT_EQ(t1->real_parent, init) << "for_each_thread(p, t): t->real_parent = reaper";
  EXPECT_EQ(t2->real_parent, init);
  retire({t2, t1, leader, init});
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 5U);
}

// wait_consider_task skips a zombie leader while delay_group_leader(p): it stays
// hashed and keeps its reaper's reference until its last thread is released.
TEST_F(TaskTest, DelayGroupLeaderKeepsAZombieLeaderUnreapedUntilItsGroupIsEmpty) {
  task_struct* init = fork_task("init");
  task_struct* leader = fork_task("leader", init);
  task_struct* thread = fork_task("thread", leader, {.thread = true});
  k().do_exit(leader);
  k().finish_task_switch(leader);
  EXPECT_EQ(leader->exit_state.load(), EXIT_ZOMBIE);
  EXPECT_FALSE(k().wait_task_zombie(leader)) << "delay_group_leader: not reapable yet";
  EXPECT_EQ(leader->exit_state.load(), EXIT_ZOMBIE) << "not claimed either";
  EXPECT_TRUE(Hashed(leader));
  EXPECT_EQ(rcu_users(leader), 1U) << "the reaper's reference";
  retire(thread);  // autoreaped: exit_notify releases it
  EXPECT_FALSE(Hashed(thread));
  EXPECT_TRUE(Hashed(leader)) << "a waiting parent reaps it; nobody has yet";
  EXPECT_TRUE(k().wait_task_zombie(leader)) << "the group is empty: reapable";
  EXPECT_FALSE(Hashed(leader));
  EXPECT_EQ(rcu_users(leader), 0U);
  retire(init);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 3U);
}

// exit_notify: autoreap = thread_group_empty(tsk) && do_notify_parent(). An
// autoreaped leader with live threads is an EXIT_ZOMBIE, still hashed; the last
// thread's release_task finds it a zombie with an empty group, zaps it (EXIT_DEAD)
// and releases it too ("goto repeat").
TEST_F(TaskTest, AnAutoreapedLeaderWithLiveThreadsIsReleasedByItsLastThreadsReleaseTask) {
  task_struct* init = fork_task("init");
  task_struct* leader = fork_task("leader", init, {.autoreap = true});
  task_struct* t1 = fork_task("t1", leader, {.thread = true});
  task_struct* t2 = fork_task("t2", leader, {.thread = true});
  EXPECT_TRUE(k().retire(leader));
  EXPECT_EQ(leader->exit_state.load(), EXIT_ZOMBIE) << "not EXIT_DEAD while threads live";
  EXPECT_TRUE(Hashed(leader));
  EXPECT_EQ(rcu_users(leader), 1U) << "its final switch is done; the reaper's is left";
  retire(t1);
  EXPECT_EQ(leader->exit_state.load(), EXIT_ZOMBIE) << "t2 still lives";
  EXPECT_TRUE(Hashed(leader));
  std::optional<rcu_reader_hold> reader(std::in_place, k().rcu());
  retire(t2);
  EXPECT_EQ(leader->exit_state.load(), EXIT_DEAD) << "zap_leader";
  EXPECT_FALSE(Hashed(leader));
  EXPECT_EQ(rcu_users(leader), 0U);
  EXPECT_EQ(k().stats().freed, 0U) << "the reader holds the grace period";
  reader.reset();
  retire(init);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 4U);
}

// The group's two death orders end alike: threads first (the leader is reaped at
// once), or leader first (retire finds its reap delayed; the parent waits and is
// woken by the last thread's release_task to reap it).
TEST_F(TaskTest, BothDeathOrdersOfAThreadGroupFreeEveryTaskOnce) {
  task_struct* init = fork_task("init");
  task_struct* a = fork_task("a", init);
  task_struct* a1 = fork_task("a1", a, {.thread = true});
  task_struct* a2 = fork_task("a2", a, {.thread = true});
  retire({a2, a1, a});  // threads first
  EXPECT_EQ(a->exit_state.load(), EXIT_DEAD);
  EXPECT_FALSE(Hashed(a));

  task_struct* b = fork_task("b", init);
  task_struct* b1 = fork_task("b1", b, {.thread = true});
  task_struct* b2 = fork_task("b2", b, {.thread = true});
  EXPECT_TRUE(k().retire(b));  // leader first
  EXPECT_EQ(b->exit_state.load(), EXIT_ZOMBIE);
  EXPECT_TRUE(Hashed(b));
  retire(b1);
  EXPECT_TRUE(Hashed(b));
  retire(b2);
  EXPECT_EQ(b->exit_state.load(), EXIT_DEAD) << "the woken parent reaped it";
  EXPECT_FALSE(Hashed(b));
  EXPECT_EQ(rcu_users(b), 0U);
  retire(init);
  k().rcu().rcu_barrier();
  const kernel_stats st = k().stats();
  EXPECT_EQ(st.freed, 7U);
  EXPECT_EQ(st.rcu_users_zero, 7U) << "rcu_users reached 0 once per task";
}

TEST_F(TaskTest, RcuUsersZeroQueuesOneCallbackThatDropsExactlyOneUsage) {
  Make({.record_history = true});
  task_struct* t = fork_task("counted");
  get_task_struct(t);  // a usage holder, so the callback's drop is observable
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_EQ(usage(t), 1U) << "delayed_put_task_struct dropped exactly one usage (2 -> 1)";
  EXPECT_EQ(k().rcu().stats().callbacks_completed, 1U) << "exactly one callback ran";
  const auto h = k().history(t);
  EXPECT_EQ(
      std::count_if(h.begin(), h.end(),
                    [](const task_event& e) { return e.kind == task_event_kind::gp_requested; }),
      1);
  put_task_struct(t);
  EXPECT_EQ(k().stats().freed, 1U);
}

TEST_F(TaskTest, AUsageHolderKeepsTheTaskWithoutAFurtherGracePeriod) {
  task_struct* t = fork_task("held");
  get_task_struct(t);  // e.g. /proc, a timer: plain usage
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().gp_elapsed, 1U);
  EXPECT_EQ(k().stats().freed, 0U) << "usage holder: the memory outlives the grace period";
  EXPECT_STREQ(t->comm, "held");
  EXPECT_EQ(rcu_users(t), 0U);
  const std::uint64_t callbacks = k().rcu().stats().callbacks_queued;
  put_task_struct(t);  // <= v6.16: frees at once, inside this call
  EXPECT_EQ(k().stats().freed, 1U);
  EXPECT_EQ(k().rcu().stats().callbacks_queued, callbacks) << "no further grace period";
}

TEST_F(TaskTest, DeferredFinalPutWaitsForAnotherGracePeriod) {
  Make({.final_put = final_put_mode::deferred});
  task_struct* t = fork_task("v6.17");
  get_task_struct(t);
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 0U);
  {
    const rcu_reader_hold reader(k().rcu());
    put_task_struct(t);  // v6.17+: call_rcu(__put_task_struct_rcu_cb)
    EXPECT_EQ(usage(t), 0U);
    EXPECT_EQ(k().stats().freed, 0U) << "the final put defers the teardown by a grace period";
    {
      const rcu_thread_registration reg(k().rcu());
      const rcu_read_guard guard(k().rcu());
      EXPECT_EQ(tryget_task_struct(t), nullptr) << "usage is 0: tryget must refuse";
    }
  }
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
}

TEST_F(TaskTest, DeferredModeChainsTwoGracePeriodsAndTeardownDrainsThem) {
  Make({.final_put = final_put_mode::deferred});
  task_struct* t = fork_task("chain");
  retire(t);
  // No barrier here: shutdown (in TearDown) must wait for delayed_put_task_struct
  // and the __put_task_struct_rcu_cb it queues, and report no leak.
}

TEST_F(TaskTest, PutTaskStructManyFreesDirectly) {
  Make({.final_put = final_put_mode::deferred});
  task_struct* t = fork_task("many");
  get_task_struct(t);
  get_task_struct(t);
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_EQ(usage(t), 2U);
  put_task_struct_many(t, 2);  // never deferred, in every version
  EXPECT_EQ(k().stats().freed, 1U);
}

TEST_F(TaskTest, TrygetSucceedsWhileUsageIsLive) {
  task_struct* t = fork_task("tryget");
  EXPECT_EQ(tryget_task_struct(t), t);
  EXPECT_EQ(usage(t), 2U);
  put_task_struct(t);
  retire(t);
}

// ---- fork failure -------------------------------------------------------------------------

TEST_F(TaskTest, ForkFailureFreesWithoutTouchingTheCounters) {
  std::vector<task_struct*> announced;
  const auto probe = k().task_newtask().attach([&](task_struct* t) { announced.push_back(t); });
  const fork_result early =
      k().fork(nullptr, {.comm = "early", .fail = fork_failure::before_pid_alloc});
  const fork_result late =
      k().fork(nullptr, {.comm = "late", .fail = fork_failure::after_pid_alloc});
  EXPECT_FALSE(early);
  EXPECT_FALSE(late);
  EXPECT_EQ(early.error, -ENOMEM);
  EXPECT_EQ(late.error, -ENOMEM);
  EXPECT_TRUE(announced.empty()) << "a failed fork is never announced";
  EXPECT_EQ(k().init_pid_ns().nr_allocated(), 0U) << "the late failure gave its numbers back";
  const kernel_stats s = k().stats();
  EXPECT_EQ(s.fork_failures, 2U);
  EXPECT_EQ(s.forked, 0U);
  EXPECT_EQ(s.rcu_users_zero, 0U) << "the counters were never used";
  k().rcu().rcu_barrier();  // CONFIG_MEMCG: delayed_free_task frees after a grace period
  k().task_newtask().detach(probe);
  task_struct* next = fork_task("next");
  EXPECT_EQ(next->pid, 2) << "pid 1 was taken and returned by the late failure";
  retire(next);
}

TEST_F(TaskTest, ForkFailureWithoutMemcgFreesAtOnce) {
  Make({.memcg = false});
  const fork_result r = k().fork(nullptr, {.fail = fork_failure::before_pid_alloc});
  EXPECT_FALSE(r);
  EXPECT_EQ(k().rcu().stats().callbacks_queued, 0U);
}

// ---- misuse --------------------------------------------------------------------------------

TEST_F(TaskTest, UseAfterFreeIsReportedWithTaskPidAndFreeingEvent) {
  if constexpr (!debug_checks_enabled) {
    // Skipped only in a build configured with TASKLIFE_CHECKS below full (no preset
    // does that for tests): without quarantine a freed task's memory is gone.
    GTEST_SKIP() << "poisoning and quarantine exist only with TASKLIFE_CHECKS=full";
  }
  task_struct* t = fork_task("victim");
  const pid_t pid = t->pid;
  retire(t);
  k().rcu().rcu_barrier();
  ASSERT_EQ(k().stats().freed, 1U);
  EXPECT_CONTRACT_VIOLATION(get_task_struct(t), "use-after-free: get_task_struct() on task");
  EXPECT_CONTRACT_VIOLATION(put_task_struct_rcu_user(t),
                            "use-after-free: put_task_struct_rcu_user() on task");
  EXPECT_CONTRACT_VIOLATION(k().do_exit(t), "use-after-free: do_exit() on task");
  EXPECT_THAT(capture().messages(),
              Contains(AllOf(HasSubstr("use-after-free: get_task_struct() on task 'victim'"),
                             HasSubstr("pid " + std::to_string(pid)),
                             HasSubstr("freed by __put_task_struct"))));
  EXPECT_EQ(k().stats().quarantined, 1U);
}

TEST_F(TaskTest, LifecycleMisuseIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("misused");
  EXPECT_CONTRACT_VIOLATION(k().finish_task_switch(t), "which is not TASK_DEAD")
      << "not TASK_DEAD yet";
  k().do_exit(t);
  EXPECT_CONTRACT_VIOLATION(k().do_exit(t), "already exiting") << "exiting twice";
  k().finish_task_switch(t);
  EXPECT_CONTRACT_VIOLATION(k().finish_task_switch(t), "a second final finish_task_switch()")
      << "a second final switch";
  EXPECT_TRUE(k().wait_task_zombie(t));
  EXPECT_FALSE(k().wait_task_zombie(t)) << "only one waiter reaps";
  EXPECT_CONTRACT_VIOLATION(get_task_struct(nullptr), "get_task_struct() called with a NULL task");
}

TEST_F(TaskTest, FreeingALiveTaskWarnsLikeTheKernel) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("overput");
  // A put of the rcu users' own usage reference is an over-release (checked
  // builds): refused at the put, the counters untouched.
  EXPECT_CONTRACT_VIOLATION(put_task_struct(t), "over-release: put_task_struct() on task");
  EXPECT_EQ(usage(t), 1U);
  // __put_task_struct on a live task: the kernel's WARN_ON, and no free.
  EXPECT_CONTRACT_VIOLATION(__put_task_struct(t), "__put_task_struct() on task 'overput'");
  EXPECT_EQ(k().stats().freed, 0U);
  retire(t);  // the task is still consistent: it dies normally
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
}

// ---- teardown -------------------------------------------------------------------------------

TEST_F(TaskTest, TeardownReportsEveryLeakWithItsCounters) {
  task_struct* running = fork_task("running");
  task_struct* held = fork_task("held");
  get_task_struct(held);
  retire(held);
  (void)running;
  const auto leaks = k().shutdown();
  ASSERT_EQ(leaks.size(), 2U);
  for (const leaked_task& l : leaks) {
    if (l.comm == "running") {
      EXPECT_EQ(l.usage, 1U);
      EXPECT_EQ(l.rcu_users, 2U);
      EXPECT_EQ(l.exit_state, 0);
    } else {
      EXPECT_EQ(l.comm, "held");
      EXPECT_EQ(l.usage, 1U) << "the grace period ran (teardown drains): only the holder is left";
      EXPECT_EQ(l.rcu_users, 0U);
      EXPECT_EQ(l.exit_state, EXIT_DEAD);
    }
  }
  EXPECT_THAT(capture().messages(),
              Contains(HasSubstr("leak: kernel 'task-test' torn down with task 'held'")));
  EXPECT_TRUE(k().shutdown().empty()) << "idempotent";
}

TEST_F(TaskTest, KernelsAreIndependent) {
  kernel other({.name = "other"});
  task_struct* a = fork_task("a");
  task_struct* b = other.fork(nullptr, {.comm = "b"}).task;
  EXPECT_EQ(a->pid, 1);
  EXPECT_EQ(b->pid, 1) << "each kernel numbers its own tasks";
  EXPECT_EQ(&task_kernel(b), &other);
  EXPECT_FALSE(k().is_allocated(b));
  EXPECT_TRUE(other.is_allocated(b));
  EXPECT_TRUE(other.retire(b));
  EXPECT_TRUE(other.shutdown().empty());
  EXPECT_EQ(other.stats().freed, 1U);
  EXPECT_EQ(k().stats().freed, 0U);
  retire(a);
}

TEST_F(TaskTest, AReapedTaskHasNoNumberAndNoNamespace) {
  task_struct* t = fork_task("detached");
  get_task_struct(t);  // keep it allocated past the reap
  pid_namespace* ns = task_active_pid_ns(t);
  ASSERT_NE(ns, nullptr);
  EXPECT_EQ(task_pid_nr_ns(t, ns), t->pid);
  retire(t);
  EXPECT_EQ(task_active_pid_ns(t), nullptr) << "detach_pid cleared thread_pid";
  EXPECT_EQ(task_pid_nr_ns(t, ns), 0);
  put_task_struct(t);
}

TEST_F(TaskTest, OrphansGoToTheInitOfTheirParentsNamespace) {
  task_struct* init = fork_task("init");
  task_struct* parent = fork_task("parent", init);
  task_struct* container = fork_task("container", parent, {.new_pid_ns = true});
  ASSERT_EQ(task_active_pid_ns(container)->child_reaper(), container);
  retire(parent);
  EXPECT_EQ(container->real_parent, init)
      << "find_new_reaper: the exiting parent's namespace init, never the child itself";
  retire({container, init});
}

// ---- current, tracepoints, history -----------------------------------------------------------

TEST_F(TaskTest, RunAsSetsCurrentRegistersWithRcuAndNests) {
  task_struct* a = fork_task("a");
  task_struct* b = fork_task("b", a);
  EXPECT_EQ(get_current(), nullptr);
  {
    const current_task_scope as_a = k().run_as(a);
    EXPECT_EQ(get_current(), a);
    EXPECT_TRUE(k().rcu().thread_registered());
    {
      const current_task_scope as_b = k().run_as(b);
      EXPECT_EQ(get_current(), b);
      EXPECT_EQ(task_pid_vnr(a), a->pid);
    }
    EXPECT_EQ(get_current(), a);
    const rcu_read_guard guard(k().rcu());
    EXPECT_EQ(find_task_by_vpid(b->pid), b);
  }
  EXPECT_EQ(get_current(), nullptr);
  EXPECT_FALSE(k().rcu().thread_registered());
  retire({b, a});
}

TEST_F(TaskTest, TracepointsFireAtTheKernelsPoints) {
  std::vector<std::string> fired;
  const auto exit_probe = k().sched_process_exit().attach([&](task_struct* t) {
    EXPECT_NE(t->flags.load() & PF_EXITING, 0U);
    EXPECT_EQ(t->exit_state.load(), 0) << "fires before exit_notify";
    fired.emplace_back("exit");
  });
  std::atomic<int> free_fired{0};
  const auto free_probe = k().sched_process_free().attach([&](task_struct* t) {
    EXPECT_EQ(rcu_users(t), 0U) << "sched_process_free fires at rcu_users == 0 + GP";
    EXPECT_EQ(usage(t), 1U) << "... before the final usage drop";
    free_fired.fetch_add(1);
  });
  task_struct* t = fork_task("traced");
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_THAT(fired, ElementsAre("exit"));
  EXPECT_EQ(free_fired.load(), 1);
  EXPECT_TRUE(k().sched_process_exit().detach(exit_probe));
  EXPECT_FALSE(k().sched_process_exit().detach(exit_probe));
  EXPECT_TRUE(k().sched_process_free().detach(free_probe));
  EXPECT_FALSE(k().sched_process_free().enabled());
}

TEST_F(TaskTest, HistoryRecordsEveryStepWithItsCounters) {
  task_struct* t = fork_task("story", nullptr, {.trace = true});
  task_struct* quiet = fork_task("quiet");
  get_task_struct(t);
  put_task_struct(t);
  retire({t, quiet});
  k().rcu().rcu_barrier();
  struct step {
    std::string kind;
    unsigned usage;
    unsigned rcu_users;
    bool operator==(const step&) const = default;
  };
  std::vector<step> steps;
  for (const task_event& e : k().history(t)) {
    steps.push_back({std::string(to_string(e.kind)), e.usage, e.rcu_users});
  }
  const std::vector<step> expected = {
      {"fork", 1, 2},   {"get", 2, 2},          {"put", 1, 2},          {"exit", 1, 2},
      {"zombie", 1, 2}, {"task_dead", 1, 2},    {"final_switch", 1, 1}, {"reap", 1, 1},
      {"unhash", 1, 1}, {"rcu_user_put", 1, 0}, {"gp_requested", 1, 0}, {"gp_elapsed", 1, 0},
      {"put", 0, 0},    {"free", 0, 0},
  };
  ASSERT_EQ(steps.size(), expected.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i], expected[i]) << "step " << i << ": " << steps[i].kind;
  }
  EXPECT_EQ(k().events().size(), expected.size()) << "the untraced task recorded nothing";
  const std::string line = fmt::format("{}", k().history(t).front());
  EXPECT_THAT(line, HasSubstr("fork"));
  EXPECT_THAT(line, HasSubstr("usage=1"));
  EXPECT_THAT(line, HasSubstr("rcu_users=2"));
}

}  // namespace
}  // namespace tasklife

namespace tasklife {
namespace {

// task_event::thread names the recording OS thread: one number per thread, the
// same for every event it records, never a simulated thread's outside the explorer.
TEST_F(TaskTest, EventsNameTheOsThreadThatRecordedThem) {
  task_struct* t = fork_task("traced");
  k().trace_task(t);
  get_task_struct(t);
  std::uint32_t other = 0;
  std::thread([&] {
    other = event_thread_id();
    put_task_struct(t);
  }).join();
  const std::uint32_t mine = event_thread_id();
  EXPECT_NE(mine, other);
  EXPECT_FALSE(is_simulated_thread(mine));
  EXPECT_FALSE(is_simulated_thread(other));
  std::vector<std::uint32_t> get_threads, put_threads;
  for (const task_event& e : k().history(t)) {
    (e.kind == task_event_kind::get ? get_threads : put_threads).push_back(e.thread);
  }
  EXPECT_THAT(get_threads, ElementsAre(mine));
  EXPECT_THAT(put_threads, ElementsAre(other));
  retire({t});
}

}  // namespace
}  // namespace tasklife
