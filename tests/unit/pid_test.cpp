// Pid namespaces and lookup by number: nesting and visibility, hashing across the
// lifecycle (zombie, reap, autoreap), the RCU contract of the lookups, cyclic
// allocation and reuse of numbers, and the RCU reader that races a reap
// (sections 2 and 3.10 and 8 of the kernel notes).
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/task.hpp>

#include "../support/contract_capture.hpp"

namespace tasklife {
namespace {

using test::contract_error;
using ::testing::Contains;
using ::testing::HasSubstr;

// Spins (yielding) for a while: gives a broken grace period the chance to end
// early. It never decides a test's outcome on its own.
void give_others_a_chance() {
  for (int i = 0; i < 2000; ++i) {
    std::this_thread::yield();
  }
}

kernel_config small_config(int pid_max, int reserved_pids) {
  kernel_config cfg;
  cfg.name = "pid";
  cfg.pid_max = pid_max;
  cfg.reserved_pids = reserved_pids;
  return cfg;
}

// find_task_by_pid_ns inside a read-side critical section. The result is only
// compared afterwards, never dereferenced outside the section.
task_struct* lookup(kernel& k, pid_t nr, pid_namespace* ns) {
  const rcu_read_guard guard(k.rcu());
  return find_task_by_pid_ns(nr, ns);
}

// Is `t` hashed nowhere (not found by its number at any of its levels)?
bool unhashed_everywhere(kernel& k, const std::vector<upid>& numbers) {
  for (const upid& u : numbers) {
    if (lookup(k, u.nr, u.ns) != nullptr) {
      return false;
    }
  }
  return true;
}

// Removes and returns the task with root pid `nr` from `tasks` (nullptr if absent).
task_struct* take(std::vector<task_struct*>& tasks, pid_t nr) {
  for (auto it = tasks.begin(); it != tasks.end(); ++it) {
    if (task_pid_nr(*it) == nr) {
      task_struct* t = *it;
      tasks.erase(it);
      return t;
    }
  }
  return nullptr;
}

// do_exit, the final switch and, unless exit_notify autoreaped it, the parent's
// reap: after the grace period `t` is freed. `t` is not touched afterwards.
void retire(kernel& k, task_struct* t) {
  k.do_exit(t);
  const bool zombie = t->exit_state.load(std::memory_order_acquire) == EXIT_ZOMBIE;
  k.finish_task_switch(t);  // autoreaped: the last rcu_users; t may go after a GP
  if (zombie) {
    EXPECT_TRUE(k.wait_task_zombie(t));
  }
}

class PidTest : public ::testing::Test {
 protected:
  // Every task forked was freed, after its grace period, and nothing leaked.
  static void expect_all_freed(kernel& k) {
    k.rcu().rcu_barrier();
    const kernel_stats s = k.stats();
    EXPECT_EQ(s.rcu_users_zero, s.forked);
    EXPECT_EQ(s.gp_elapsed, s.forked);
    EXPECT_EQ(s.freed, s.forked);
    EXPECT_TRUE(k.allocated_tasks().empty());
    EXPECT_EQ(k.init_pid_ns().nr_hashed(), 0U);
    EXPECT_EQ(k.init_pid_ns().nr_allocated(), 0U);
    EXPECT_TRUE(k.shutdown().empty());
  }

  test::contract_capture capture_;
};

// ---- 1. nesting and visibility ---------------------------------------------------------------

TEST_F(PidTest, NewPidNamespaceMakesTheChildPidOneWithANumberAtEveryLevel) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  EXPECT_EQ(root->level(), 0U);
  EXPECT_EQ(root->parent(), nullptr);

  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);
  EXPECT_EQ(task_pid_nr(init.task), 1);
  EXPECT_EQ(task_active_pid_ns(init.task), root);
  EXPECT_EQ(root->child_reaper(), init.task);

  // A container: pid 1 of a new namespace, pid 2 of the root.
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});
  ASSERT_TRUE(cinit);
  pid_namespace* cns = task_active_pid_ns(cinit.task);
  ASSERT_NE(cns, nullptr);
  EXPECT_NE(cns, root);
  EXPECT_EQ(cns->level(), 1U);
  EXPECT_EQ(cns->parent(), root);
  EXPECT_EQ(task_pid_nr_ns(cinit.task, cns), 1);
  EXPECT_EQ(task_pid_nr_ns(cinit.task, root), 2);
  EXPECT_EQ(task_pid_nr(cinit.task), 2);
  EXPECT_EQ(cns->child_reaper(), cinit.task);

  // An ordinary child inside the container inherits its namespace.
  const fork_result worker = k.fork(cinit.task, {.comm = "worker"});
  ASSERT_TRUE(worker);
  EXPECT_EQ(task_active_pid_ns(worker.task), cns);
  EXPECT_EQ(task_pid_nr_ns(worker.task, cns), 2);
  EXPECT_EQ(task_pid_nr_ns(worker.task, root), 3);

  // A grandchild namespace: three numbers, one per level.
  const fork_result ginit = k.fork(worker.task, {.comm = "ginit", .new_pid_ns = true});
  ASSERT_TRUE(ginit);
  pid_namespace* gns = task_active_pid_ns(ginit.task);
  EXPECT_EQ(gns->level(), 2U);
  EXPECT_EQ(gns->parent(), cns);
  EXPECT_EQ(task_pid_nr_ns(ginit.task, gns), 1);
  EXPECT_EQ(task_pid_nr_ns(ginit.task, cns), 3);
  EXPECT_EQ(task_pid_nr_ns(ginit.task, root), 4);
  EXPECT_EQ(gns->child_reaper(), ginit.task);

  // A sibling container of cns, also at level 1.
  const fork_result sinit = k.fork(init.task, {.comm = "sinit", .new_pid_ns = true});
  ASSERT_TRUE(sinit);
  pid_namespace* sns = task_active_pid_ns(sinit.task);
  EXPECT_EQ(sns->level(), 1U);
  EXPECT_EQ(sns->parent(), root);
  EXPECT_NE(sns, cns);
  EXPECT_EQ(task_pid_nr_ns(sinit.task, sns), 1);
  EXPECT_EQ(task_pid_nr_ns(sinit.task, root), 5);

  // Visibility: only in the own namespace and its ancestors.
  EXPECT_EQ(task_pid_nr_ns(init.task, cns), 0) << "the root's init is not visible in a child";
  EXPECT_EQ(task_pid_nr_ns(worker.task, gns), 0) << "a parent level is not visible below";
  EXPECT_EQ(task_pid_nr_ns(cinit.task, sns), 0) << "siblings do not see each other";
  EXPECT_EQ(task_pid_nr_ns(ginit.task, sns), 0);
  EXPECT_EQ(task_pid_nr_ns(sinit.task, cns), 0);
  EXPECT_EQ(task_pid_nr_ns(sinit.task, gns), 0);

  // The same numbers through lookups, level by level.
  EXPECT_EQ(lookup(k, 1, root), init.task);
  EXPECT_EQ(lookup(k, 2, root), cinit.task);
  EXPECT_EQ(lookup(k, 4, root), ginit.task);
  EXPECT_EQ(lookup(k, 5, root), sinit.task);
  EXPECT_EQ(lookup(k, 1, cns), cinit.task);
  EXPECT_EQ(lookup(k, 2, cns), worker.task);
  EXPECT_EQ(lookup(k, 3, cns), ginit.task);
  EXPECT_EQ(lookup(k, 1, gns), ginit.task);
  EXPECT_EQ(lookup(k, 1, sns), sinit.task);
  EXPECT_EQ(lookup(k, 2, sns), nullptr) << "sns has only its init";
  EXPECT_EQ(lookup(k, 2, gns), nullptr);
  EXPECT_EQ(root->nr_hashed(), 5U);
  EXPECT_EQ(cns->nr_hashed(), 3U);
  EXPECT_EQ(gns->nr_hashed(), 1U);
  EXPECT_EQ(sns->nr_hashed(), 1U);

  for (task_struct* t : {ginit.task, worker.task, sinit.task, cinit.task, init.task}) {
    retire(k, t);
  }
  EXPECT_EQ(cns->nr_hashed(), 0U);
  EXPECT_EQ(gns->nr_allocated(), 0U);
  EXPECT_EQ(sns->nr_allocated(), 0U);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// MAX_PID_NS_LEVEL (32) is the deepest level a namespace may have: 33 numbers.
// One more CLONE_NEWPID fails the fork with -ENOSPC, as the kernel's
// create_pid_namespace does; it is an ordinary runtime failure of clone(), not
// API misuse.
TEST_F(PidTest, NestingBeyondMaxPidNsLevelFailsTheForkWithEnospc) {
  kernel k(small_config(64, 1));
  const rcu_thread_registration reg(k.rcu());
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);
  std::vector<task_struct*> chain{init.task};
  for (unsigned level = 1; level <= MAX_PID_NS_LEVEL; ++level) {
    const fork_result r = k.fork(chain.back(), {.comm = "nested", .new_pid_ns = true});
    ASSERT_TRUE(r) << "level " << level;
    chain.push_back(r.task);
  }
  task_struct* deepest = chain.back();
  ASSERT_EQ(task_active_pid_ns(deepest)->level(), MAX_PID_NS_LEVEL);
  // chain[i] is pid 1 at level i, so the deepest is 33 - level at each level.
  for (pid_namespace* ns = task_active_pid_ns(deepest); ns != nullptr; ns = ns->parent()) {
    EXPECT_EQ(task_pid_nr_ns(deepest, ns), static_cast<pid_t>(MAX_PID_NS_LEVEL + 1 - ns->level()));
    EXPECT_EQ(lookup(k, task_pid_nr_ns(deepest, ns), ns), deepest);
  }

  fork_result too_deep;
  EXPECT_NO_THROW(too_deep = k.fork(deepest, {.comm = "too-deep", .new_pid_ns = true}));
  EXPECT_FALSE(too_deep);
  EXPECT_EQ(too_deep.error, -ENOSPC);
  EXPECT_EQ(k.stats().fork_failures, 1U) << "the task is freed like any failed fork";
  EXPECT_TRUE(capture_.violations().empty());
  capture_.clear();

  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    retire(k, *it);
  }
  expect_all_freed(k);
}

// ---- 2. hashed while alive or zombie, unhashed by the reap -------------------------------------

TEST_F(PidTest, ZombieIsFoundAtEveryLevelUntilReaped) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});
  ASSERT_TRUE(init && cinit);
  pid_namespace* cns = task_active_pid_ns(cinit.task);
  const fork_result child = k.fork(cinit.task, {.comm = "child"});
  ASSERT_TRUE(child);
  task_struct* t = child.task;
  const std::vector<upid> numbers = {{task_pid_nr_ns(t, root), root},
                                     {task_pid_nr_ns(t, cns), cns}};
  ASSERT_EQ(numbers[1].nr, 2);

  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(k, u.nr, u.ns), t);
  }
  k.do_exit(t, 7);
  EXPECT_EQ(t->exit_state.load(), EXIT_ZOMBIE);
  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(k, u.nr, u.ns), t)
        << "a zombie is still hashed (level " << u.ns->level() << ")";
  }
  k.finish_task_switch(t);
  EXPECT_EQ(refcount_read(&t->rcu_users), 1U);
  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(k, u.nr, u.ns), t) << "the final switch does not unhash";
  }
  EXPECT_EQ(root->nr_hashed(), 3U);
  EXPECT_EQ(cns->nr_hashed(), 2U);

  const std::uint64_t zero_before = k.stats().rcu_users_zero;
  EXPECT_TRUE(k.wait_task_zombie(t));
  EXPECT_TRUE(unhashed_everywhere(k, numbers)) << "release_task unhashes from every level";
  EXPECT_EQ(root->nr_hashed(), 2U);
  EXPECT_EQ(cns->nr_hashed(), 1U);
  EXPECT_EQ(root->nr_allocated(), 2U);
  EXPECT_EQ(cns->nr_allocated(), 1U);
  EXPECT_EQ(k.stats().rcu_users_zero, zero_before + 1);
  EXPECT_FALSE(k.wait_task_zombie(t)) << "a second waiter does not reap again";

  retire(k, cinit.task);
  retire(k, init.task);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

TEST_F(PidTest, ReapBeforeTheFinalSwitchUnhashesAndTheSwitchThenFrees) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  const fork_result child = k.fork(init.task, {.comm = "child"});
  ASSERT_TRUE(init && child);
  task_struct* t = child.task;
  const pid_t nr = task_pid_nr(t);

  k.do_exit(t);
  EXPECT_TRUE(k.wait_task_zombie(t));  // the parent reaps before the scheduler's drop
  EXPECT_EQ(lookup(k, nr, root), nullptr);
  EXPECT_EQ(refcount_read(&t->rcu_users), 1U) << "the scheduler's reference is still held";
  EXPECT_EQ(k.stats().rcu_users_zero, 0U);
  k.finish_task_switch(t);
  k.rcu().rcu_barrier();
  EXPECT_EQ(k.stats().freed, 1U);

  retire(k, init.task);
  expect_all_freed(k);
}

TEST_F(PidTest, AutoreapUnhashesAtExit) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});
  ASSERT_TRUE(init && cinit);
  pid_namespace* cns = task_active_pid_ns(cinit.task);
  const fork_result child = k.fork(cinit.task, {.comm = "detached", .autoreap = true});
  ASSERT_TRUE(child);
  task_struct* t = child.task;
  const std::vector<upid> numbers = {{task_pid_nr_ns(t, root), root},
                                     {task_pid_nr_ns(t, cns), cns}};
  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(k, u.nr, u.ns), t);
  }

  k.do_exit(t);
  EXPECT_EQ(t->exit_state.load(), EXIT_DEAD);
  EXPECT_TRUE(unhashed_everywhere(k, numbers)) << "exit_notify's release_task(self) unhashes";
  EXPECT_EQ(cns->nr_hashed(), 1U);
  EXPECT_EQ(cns->nr_allocated(), 1U);
  EXPECT_EQ(refcount_read(&t->rcu_users), 1U) << "still running: the scheduler's reference";
  EXPECT_FALSE(k.wait_task_zombie(t)) << "nothing left to reap";
  const std::uint64_t zero_before = k.stats().rcu_users_zero;
  k.finish_task_switch(t);
  EXPECT_EQ(k.stats().rcu_users_zero, zero_before + 1);
  k.rcu().rcu_barrier();
  EXPECT_EQ(k.stats().freed, 1U);

  retire(k, cinit.task);
  retire(k, init.task);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// ---- 3. find_task_by_vpid: current's namespace ------------------------------------------------

TEST_F(PidTest, FindTaskByVpidResolvesInCurrentsNamespace) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});                          // 1
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});  // 2 / 1
  ASSERT_TRUE(init && cinit);
  const fork_result worker = k.fork(cinit.task, {.comm = "worker"});     // 3 / 2
  const fork_result outsider = k.fork(init.task, {.comm = "outsider"});  // 4
  ASSERT_TRUE(worker && outsider);
  ASSERT_EQ(task_pid_nr(outsider.task), 4);

  {
    auto scope = k.run_as(worker.task);
    ASSERT_EQ(get_current(), worker.task);
    EXPECT_EQ(task_pid_vnr(worker.task), 2);
    EXPECT_EQ(task_pid_vnr(cinit.task), 1);
    EXPECT_EQ(task_pid_vnr(init.task), 0) << "the root's init is not visible in the container";
    EXPECT_EQ(task_pid_vnr(outsider.task), 0);
    const rcu_read_guard guard(k.rcu());
    EXPECT_EQ(find_task_by_vpid(1), cinit.task) << "vpid 1 is the container's init";
    EXPECT_EQ(find_task_by_vpid(task_pid_vnr(worker.task)), worker.task);
    EXPECT_EQ(find_task_by_vpid(4), nullptr) << "a root number that the container cannot see";
    EXPECT_EQ(find_task_by_vpid(3), nullptr) << "the worker's own root number";
    // find_task_by_pid_ns with the root namespace still sees everything.
    EXPECT_EQ(find_task_by_pid_ns(4, root), outsider.task);
  }
  {
    auto scope = k.run_as(init.task);
    EXPECT_EQ(task_pid_vnr(worker.task), 3);
    EXPECT_EQ(task_pid_vnr(cinit.task), 2);
    const rcu_read_guard guard(k.rcu());
    EXPECT_EQ(find_task_by_vpid(1), init.task);
    EXPECT_EQ(find_task_by_vpid(2), cinit.task);
    EXPECT_EQ(find_task_by_vpid(3), worker.task);
  }
  EXPECT_EQ(get_current(), nullptr);
  EXPECT_EQ(task_pid_vnr(init.task), 0) << "no current: no namespace to see it in";

  for (task_struct* t : {worker.task, outsider.task, cinit.task, init.task}) {
    retire(k, t);
  }
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// ---- 4. the lookups' contract and invalid numbers ---------------------------------------------

TEST_F(PidTest, LookupWithoutReadLockIsReported) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);

  EXPECT_THROW((void)find_task_by_pid_ns(1, &k.init_pid_ns()), contract_error);
  EXPECT_THAT(capture_.violations(), Contains(HasSubstr("without rcu_read_lock()")));
  EXPECT_THAT(capture_.violations(), Contains(HasSubstr("kernel 'kernel'")));
  capture_.clear();
  {
    auto scope = k.run_as(init.task);
    EXPECT_THROW((void)find_task_by_vpid(1), contract_error);
    EXPECT_THAT(capture_.violations(), Contains(HasSubstr("without rcu_read_lock()")));
  }
  capture_.clear();
  {
    const rcu_read_guard guard(k.rcu());
    EXPECT_THROW((void)find_task_by_vpid(1), contract_error) << "no current";
    EXPECT_THAT(capture_.violations(), Contains(HasSubstr("does not run as a task")));
  }
  capture_.clear();

  retire(k, init.task);
  expect_all_freed(k);
}

TEST_F(PidTest, InvalidNumbersFindNothing) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});
  ASSERT_TRUE(init && cinit);
  pid_namespace* cns = task_active_pid_ns(cinit.task);

  for (pid_namespace* ns : {root, cns}) {
    EXPECT_EQ(lookup(k, 0, ns), nullptr);
    EXPECT_EQ(lookup(k, -1, ns), nullptr);
    EXPECT_EQ(lookup(k, static_cast<pid_t>(0xcafef00dU), ns), nullptr);
    EXPECT_EQ(lookup(k, ns->pid_max() + 1, ns), nullptr);
    EXPECT_EQ(lookup(k, PID_MAX_LIMIT, ns), nullptr);
    EXPECT_EQ(lookup(k, INT32_MAX, ns), nullptr);
    EXPECT_EQ(lookup(k, INT32_MIN, ns), nullptr);
    EXPECT_EQ(lookup(k, 9999, ns), nullptr) << "valid but unused";
  }
  EXPECT_EQ(lookup(k, 2, cns), nullptr) << "a fresh namespace has only its init";
  EXPECT_EQ(lookup(k, 1, cns), cinit.task);
  {
    auto scope = k.run_as(cinit.task);
    const rcu_read_guard guard(k.rcu());
    EXPECT_EQ(find_task_by_vpid(-1), nullptr);
    EXPECT_EQ(find_task_by_vpid(static_cast<pid_t>(0xcafef00dU)), nullptr);
    EXPECT_EQ(find_task_by_vpid(2), nullptr);
    EXPECT_EQ(find_task_by_vpid(9999), nullptr);
  }
  EXPECT_TRUE(capture_.violations().empty());

  retire(k, cinit.task);
  retire(k, init.task);
  expect_all_freed(k);
}

// ---- 5. cyclic allocation and reuse ---------------------------------------------------------

TEST_F(PidTest, NumbersAreCyclicAndAFreedNumberIsReusedOnlyAfterTheWrap) {
  kernel k(small_config(16, 1));
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);
  ASSERT_EQ(task_pid_nr(init.task), 1);
  std::vector<task_struct*> live;  // every task but init
  for (pid_t expected = 2; expected <= 6; ++expected) {
    const fork_result r = k.fork(init.task, {.comm = "first"});
    ASSERT_TRUE(r);
    EXPECT_EQ(task_pid_nr(r.task), expected) << "numbers are allocated in increasing order";
    live.push_back(r.task);
  }
  // Reap pid 3: its number is free, yet the cursor goes on upward.
  task_struct* three = take(live, 3);
  ASSERT_NE(three, nullptr);
  retire(k, three);
  EXPECT_EQ(root->nr_allocated(), 5U);
  for (pid_t expected = 7; expected <= 16; ++expected) {
    const fork_result r = k.fork(init.task, {.comm = "second"});
    ASSERT_TRUE(r);
    EXPECT_EQ(task_pid_nr(r.task), expected) << "3 is not reused before the wrap";
    live.push_back(r.task);
  }
  // Past pid_max the search restarts at 1: the only free number is 3.
  const fork_result wrapped = k.fork(init.task, {.comm = "wrapped"});
  ASSERT_TRUE(wrapped);
  EXPECT_EQ(task_pid_nr(wrapped.task), 3);
  EXPECT_EQ(lookup(k, 3, root), wrapped.task);
  live.push_back(wrapped.task);
  EXPECT_EQ(root->nr_allocated(), 16U);
  EXPECT_EQ(root->nr_hashed(), 16U);

  // Every number in use: -EAGAIN, counted as a failed fork, nothing allocated.
  const kernel_stats before = k.stats();
  const fork_result full = k.fork(init.task, {.comm = "nope"});
  EXPECT_FALSE(full);
  EXPECT_EQ(full.task, nullptr);
  EXPECT_EQ(full.error, -EAGAIN);
  EXPECT_EQ(k.stats().fork_failures, before.fork_failures + 1);
  EXPECT_EQ(k.stats().forked, before.forked);
  EXPECT_EQ(root->nr_allocated(), 16U);
  EXPECT_EQ(root->nr_hashed(), 16U);

  for (task_struct* t : live) {
    retire(k, t);
  }
  retire(k, init.task);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

TEST_F(PidTest, AStaleNumberNamesTheNewTaskOnceReused) {
  kernel k(small_config(16, 1));
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);
  std::vector<task_struct*> live;
  while (root->nr_allocated() < 16U) {
    const fork_result r = k.fork(init.task, {.comm = "filler"});
    ASSERT_TRUE(r);
    live.push_back(r.task);
  }

  // pid 9 is reaped and freed; the only free number is then 9.
  task_struct* old = take(live, 9);
  ASSERT_NE(old, nullptr);
  const std::uint64_t old_id = old->priv.id;
  retire(k, old);
  k.rcu().rcu_barrier();
  EXPECT_EQ(k.stats().freed, 1U);

  const fork_result reuser = k.fork(init.task, {.comm = "reuser"});
  ASSERT_TRUE(reuser);
  live.push_back(reuser.task);
  EXPECT_EQ(task_pid_nr(reuser.task), 9);
  {
    const rcu_read_guard guard(k.rcu());
    task_struct* found = find_task_by_pid_ns(9, root);
    ASSERT_NE(found, nullptr);
    EXPECT_EQ(found, reuser.task);
    EXPECT_NE(found->priv.id, old_id) << "the stale number names a different task";
    EXPECT_STREQ(found->comm, "reuser");
  }

  // The reap, not the free, gives the number back (free_pid in release_task):
  // pid 12 is handed out while its previous owner still awaits the final switch.
  task_struct* zombie = take(live, 12);
  ASSERT_NE(zombie, nullptr);
  k.do_exit(zombie);
  EXPECT_TRUE(k.wait_task_zombie(zombie));
  const fork_result second = k.fork(init.task, {.comm = "second"});
  ASSERT_TRUE(second);
  live.push_back(second.task);
  EXPECT_EQ(task_pid_nr(second.task), 12);
  EXPECT_EQ(lookup(k, 12, root), second.task);
  EXPECT_TRUE(k.owns_live_task(zombie)) << "the old owner is still allocated";
  EXPECT_EQ(refcount_read(&zombie->rcu_users), 1U);
  EXPECT_EQ(task_pid_nr(zombie), 12);
  k.finish_task_switch(zombie);
  EXPECT_EQ(lookup(k, 12, root), second.task) << "the old owner's end does not unhash 12";

  for (task_struct* t : live) {
    retire(k, t);
  }
  retire(k, init.task);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// With reserved_pids = 5, once the cursor has passed 5 a wrap restarts at 5:
// the numbers below it are never handed out again, even when free.
TEST_F(PidTest, WrapRestartsAtReservedPids) {
  kernel k(small_config(16, 5));
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);
  std::vector<task_struct*> live;
  for (pid_t expected = 2; expected <= 16; ++expected) {
    const fork_result r = k.fork(init.task, {.comm = "filler"});
    ASSERT_TRUE(r);
    EXPECT_EQ(task_pid_nr(r.task), expected);
    live.push_back(r.task);
  }
  task_struct* two = take(live, 2);
  task_struct* seven = take(live, 7);
  ASSERT_TRUE(two != nullptr && seven != nullptr);
  retire(k, two);
  retire(k, seven);

  const fork_result r = k.fork(init.task, {.comm = "after-wrap"});
  ASSERT_TRUE(r);
  live.push_back(r.task);
  EXPECT_EQ(task_pid_nr(r.task), 7) << "the wrap restarts at reserved_pids, not at 1";
  const fork_result none = k.fork(init.task, {.comm = "nope"});
  EXPECT_FALSE(none);
  EXPECT_EQ(none.error, -EAGAIN) << "2 is free but below reserved_pids";
  EXPECT_EQ(root->nr_allocated(), 15U);
  EXPECT_EQ(k.stats().fork_failures, 1U);

  for (task_struct* t : live) {
    retire(k, t);
  }
  retire(k, init.task);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// A nested fork takes a number at every level, deepest first; when an outer level
// is full the inner numbers already taken are given back.
TEST_F(PidTest, ForkFailingAtAnOuterLevelGivesBackTheInnerNumbers) {
  kernel k(small_config(4, 1));
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});                          // 1
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});  // 2 / 1
  const fork_result a = k.fork(init.task, {.comm = "a"});                              // 3
  const fork_result b = k.fork(init.task, {.comm = "b"});                              // 4
  ASSERT_TRUE(init && cinit && a && b);
  pid_namespace* cns = task_active_pid_ns(cinit.task);
  ASSERT_EQ(root->nr_allocated(), 4U);
  ASSERT_EQ(cns->nr_allocated(), 1U);

  const fork_result failed = k.fork(cinit.task, {.comm = "inner"});
  EXPECT_FALSE(failed);
  EXPECT_EQ(failed.error, -EAGAIN);
  EXPECT_EQ(cns->nr_allocated(), 1U) << "the container's number was given back";
  EXPECT_EQ(cns->nr_hashed(), 1U);
  EXPECT_EQ(root->nr_allocated(), 4U);

  retire(k, b.task);
  const fork_result inner = k.fork(cinit.task, {.comm = "inner"});
  ASSERT_TRUE(inner);
  EXPECT_EQ(task_pid_nr(inner.task), 4);
  EXPECT_GT(task_pid_nr_ns(inner.task, cns), 1);
  EXPECT_EQ(lookup(k, task_pid_nr_ns(inner.task, cns), cns), inner.task);
  EXPECT_EQ(cns->nr_allocated(), 2U);

  for (task_struct* t : {inner.task, a.task, cinit.task, init.task}) {
    retire(k, t);
  }
  EXPECT_EQ(cns->nr_allocated(), 0U);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// ---- 6. the RCU reader that races the reap (section 2.5) ------------------------------------

struct reader_observation {
  task_struct* found = nullptr;
  task_struct* found_again = nullptr;  // after the reap, still inside the section
  pid_t pid = 0;
  char comm[TASK_COMM_LEN] = {};
  bool still_owned = false;  // on the kernel's task list: not freed
  kernel_stats stats{};
  bool acquired = true;  // refcount_inc_not_zero(&t->rcu_users): bpf_task_acquire
  unsigned rcu_users = ~0U;
};

// A reader finds `victim` by its root pid inside a read-side section; another
// thread kills it (do_exit, the final switch, and the reap unless autoreaped),
// which requests its grace period. Until the reader leaves, the task must stay
// allocated and readable, and an acquire must fail because rcu_users is 0.
void reader_races_reap(bool autoreap) {
  kernel k;
  const rcu_thread_registration reg(k.rcu());
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);
  const fork_result v = k.fork(init.task, {.comm = "victim", .autoreap = autoreap});
  ASSERT_TRUE(v);
  task_struct* const victim = v.task;
  const pid_t nr = task_pid_nr(victim);
  const kernel_stats before = k.stats();

  std::atomic<bool> reader_in_section{false};
  std::atomic<int> reader_in_section_at_gp{-1};  // sampled when the victim's GP ended
  const std::uint64_t probe = k.sched_process_free().attach([&](task_struct* t) {
    if (t == victim) {
      reader_in_section_at_gp.store(reader_in_section.load(std::memory_order_acquire) ? 1 : 0,
                                    std::memory_order_release);
    }
  });

  std::atomic<int> stage{0};
  reader_observation obs;
  bool reaped = false;
  kernel_stats after_reap{};
  std::thread reader([&] {
    const rcu_thread_registration r(k.rcu());
    {
      const rcu_read_guard guard(k.rcu());
      reader_in_section.store(true, std::memory_order_release);
      task_struct* t = find_task_by_pid_ns(nr, &k.init_pid_ns());
      obs.found = t;
      stage.store(1, std::memory_order_release);
      while (stage.load(std::memory_order_acquire) != 2) {
        std::this_thread::yield();
      }
      give_others_a_chance();  // the reaper now waits in rcu_barrier
      obs.stats = k.stats();
      obs.found_again = find_task_by_pid_ns(nr, &k.init_pid_ns());
      if (t != nullptr) {
        obs.pid = t->pid;
        std::memcpy(obs.comm, t->comm, sizeof obs.comm);
        obs.still_owned = k.owns_live_task(t);
        obs.acquired = refcount_inc_not_zero(&t->rcu_users);
        obs.rcu_users = refcount_read(&t->rcu_users);
      }
      reader_in_section.store(false, std::memory_order_release);
    }
  });
  std::thread reaper([&] {
    while (stage.load(std::memory_order_acquire) != 1) {
      std::this_thread::yield();
    }
    k.do_exit(victim);
    k.finish_task_switch(victim);  // autoreap: rcu_users 1 -> 0 here
    if (!autoreap) {
      reaped = k.wait_task_zombie(victim);  // rcu_users 1 -> 0 here
    }
    after_reap = k.stats();
    stage.store(2, std::memory_order_release);
    k.rcu().rcu_barrier();  // cannot finish before the reader leaves its section
  });
  reader.join();
  reaper.join();
  k.sched_process_free().detach(probe);

  EXPECT_EQ(reaped, !autoreap);
  EXPECT_EQ(after_reap.rcu_users_zero, before.rcu_users_zero + 1) << "grace period requested";
  EXPECT_EQ(obs.found, victim);
  EXPECT_EQ(obs.found_again, nullptr) << "unhashed before rcu_users reached 0";
  // Inside the section, after the grace period was requested: not freed.
  EXPECT_EQ(obs.stats.rcu_users_zero, before.rcu_users_zero + 1);
  EXPECT_EQ(obs.stats.gp_elapsed, before.gp_elapsed);
  EXPECT_EQ(obs.stats.freed, before.freed);
  EXPECT_TRUE(obs.still_owned);
  EXPECT_EQ(obs.pid, nr);
  EXPECT_STREQ(obs.comm, "victim");
  // bpf_task_acquire's situation: a valid pointer whose rcu_users is 0.
  EXPECT_FALSE(obs.acquired);
  EXPECT_EQ(obs.rcu_users, 0U);
  // The grace period ended only after the reader left; then the task was freed.
  EXPECT_EQ(reader_in_section_at_gp.load(), 0);
  EXPECT_EQ(k.stats().freed, before.freed + 1);
  EXPECT_FALSE(k.owns_live_task(victim));

  retire(k, init.task);
  k.rcu().rcu_barrier();
  const kernel_stats s = k.stats();
  EXPECT_EQ(s.freed, s.forked);
  EXPECT_EQ(s.gp_elapsed, s.forked);
  EXPECT_TRUE(k.shutdown().empty());
}

TEST_F(PidTest, ReaderKeepsAReapedZombieAliveUntilItsSectionEnds) {
  reader_races_reap(/*autoreap=*/false);
  EXPECT_TRUE(capture_.violations().empty());
  EXPECT_TRUE(capture_.refcount_warnings().empty());
}

TEST_F(PidTest, ReaderKeepsAnAutoreapedTaskAliveUntilItsSectionEnds) {
  reader_races_reap(/*autoreap=*/true);
  EXPECT_TRUE(capture_.violations().empty());
  EXPECT_TRUE(capture_.refcount_warnings().empty());
}

// ---- 7. the counts ------------------------------------------------------------------------

TEST_F(PidTest, HashedAndAllocatedCountsTrackForksAndReaps) {
  kernel k(small_config(64, 1));
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  EXPECT_EQ(root->nr_hashed(), 0U);
  EXPECT_EQ(root->nr_allocated(), 0U);
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  const fork_result cinit = k.fork(init.task, {.comm = "cinit", .new_pid_ns = true});
  ASSERT_TRUE(init && cinit);
  pid_namespace* cns = task_active_pid_ns(cinit.task);

  std::vector<task_struct*> outer;
  std::vector<task_struct*> inner;
  for (int i = 0; i < 6; ++i) {
    const fork_result o = k.fork(init.task, {.comm = "outer"});
    const fork_result n = k.fork(cinit.task, {.comm = "inner"});
    ASSERT_TRUE(o && n);
    outer.push_back(o.task);
    inner.push_back(n.task);
  }
  EXPECT_EQ(root->nr_hashed(), 14U);
  EXPECT_EQ(root->nr_allocated(), 14U);
  EXPECT_EQ(cns->nr_hashed(), 7U);
  EXPECT_EQ(cns->nr_allocated(), 7U);

  // Failed forks leave nothing behind, wherever they fail.
  EXPECT_FALSE(k.fork(cinit.task, {.comm = "f1", .fail = fork_failure::before_pid_alloc}));
  EXPECT_FALSE(k.fork(cinit.task, {.comm = "f2", .fail = fork_failure::after_pid_alloc}));
  EXPECT_EQ(k.stats().fork_failures, 2U);
  EXPECT_EQ(root->nr_allocated(), 14U);
  EXPECT_EQ(cns->nr_allocated(), 7U);

  // Zombies keep their numbers and stay hashed.
  for (task_struct* t : inner) {
    k.do_exit(t);
    k.finish_task_switch(t);
  }
  EXPECT_EQ(root->nr_hashed(), 14U);
  EXPECT_EQ(cns->nr_hashed(), 7U);
  EXPECT_EQ(cns->nr_allocated(), 7U);
  // The reaps release them at both levels.
  for (task_struct* t : inner) {
    EXPECT_TRUE(k.wait_task_zombie(t));
  }
  EXPECT_EQ(root->nr_hashed(), 8U);
  EXPECT_EQ(root->nr_allocated(), 8U);
  EXPECT_EQ(cns->nr_hashed(), 1U);
  EXPECT_EQ(cns->nr_allocated(), 1U);

  for (task_struct* t : outer) {
    retire(k, t);
  }
  EXPECT_EQ(root->nr_hashed(), 2U);
  EXPECT_EQ(root->nr_allocated(), 2U);
  retire(k, cinit.task);
  retire(k, init.task);
  EXPECT_EQ(cns->nr_hashed(), 0U);
  EXPECT_EQ(cns->nr_allocated(), 0U);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

// Lookups concurrent with forks and reaps that reuse the numbers: a task found
// by a number carries that number and stays allocated for the whole section.
TEST_F(PidTest, ConcurrentLookupsSeeOnlyLiveTasksCarryingTheNumber) {
  constexpr int kPidMax = 16;
  kernel k(small_config(kPidMax, 1));
  const rcu_thread_registration reg(k.rcu());
  pid_namespace* root = &k.init_pid_ns();
  const fork_result init = k.fork(nullptr, {.comm = "init"});
  ASSERT_TRUE(init);

  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> passes{0};  // complete read-side passes over every number
  std::atomic<int> seen{0};
  std::atomic<int> wrong_number{0};
  std::atomic<int> freed_under_reader{0};
  std::thread reader([&] {
    const rcu_thread_registration r(k.rcu());
    while (!done.load(std::memory_order_acquire)) {
      {
        const rcu_read_guard guard(k.rcu());
        for (pid_t nr = 1; nr <= kPidMax; ++nr) {
          task_struct* t = find_task_by_pid_ns(nr, root);
          if (t == nullptr) {
            continue;
          }
          seen.fetch_add(1, std::memory_order_relaxed);
          // 0: released since the lookup (detach_pid), as the kernel reports it.
          const pid_t now = task_pid_nr_ns(t, root);
          if (t->pid != nr || (now != nr && now != 0)) {
            wrong_number.fetch_add(1, std::memory_order_relaxed);
          }
          if (!k.owns_live_task(t)) {
            freed_under_reader.fetch_add(1, std::memory_order_relaxed);
          }
        }
      }
      passes.fetch_add(1, std::memory_order_release);
    }
  });

  // Lockstep only at the granularity of a step: each fork/reap step starts while
  // the reader is somewhere in a pass, and the next one waits for a new pass.
  auto await_a_pass = [&passes](std::uint64_t after) {
    while (passes.load(std::memory_order_acquire) <= after) {
      std::this_thread::yield();
    }
  };
  std::deque<task_struct*> window;
  int forks = 0;
  for (int i = 0; i < 400; ++i) {
    const std::uint64_t pass = passes.load(std::memory_order_acquire);
    const fork_result r = k.fork(init.task, {.comm = "churn"});
    if (!r) {
      ADD_FAILURE() << "fork " << i << " failed with " << r.error;
      break;
    }
    ++forks;
    window.push_back(r.task);
    if (window.size() > 8) {
      retire(k, window.front());
      window.pop_front();
    }
    await_a_pass(pass);
  }
  for (task_struct* t : window) {
    retire(k, t);
  }
  done.store(true, std::memory_order_release);
  reader.join();

  EXPECT_EQ(forks, 400);
  EXPECT_GT(seen.load(), 0);
  EXPECT_EQ(wrong_number.load(), 0);
  EXPECT_EQ(freed_under_reader.load(), 0);
  retire(k, init.task);
  EXPECT_TRUE(capture_.violations().empty());
  expect_all_freed(k);
}

}  // namespace
}  // namespace tasklife
