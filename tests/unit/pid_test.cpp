// Pid namespaces and lookup by number: nesting and visibility, hashing across the
// lifecycle (zombie, reap, autoreap), the RCU contract of the lookups, cyclic
// allocation and reuse of numbers, and the RCU reader that races a reap
// (docs/kernel.md §2 and §3). Every test ends in the kernel_test invariants:
// every task freed after exactly one grace period, every number given back.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/task.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/threads.hpp"

namespace tasklife {
namespace {

using test::give_others_a_chance;

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

// The test's thread is registered with the kernel's RCU domain (lookups need a
// read-side section).
class PidTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "pid"}; }
  void SetUp() override {
    kernel_test::SetUp();
    registration_.emplace(k().rcu());
  }
  // A kernel with `pid_max` numbers whose cyclic allocation restarts at
  // `reserved_pids` after a wrap (small values wrap quickly).
  void Make(int pid_max, int reserved_pids) {
    registration_.reset();
    remake({.name = "pid", .pid_max = pid_max, .reserved_pids = reserved_pids});
    registration_.emplace(k().rcu());
  }

  // find_task_by_pid_ns inside a read-side critical section. The result is only
  // compared afterwards, never dereferenced outside the section.
  task_struct* lookup(pid_t nr, pid_namespace* ns) {
    const rcu_read_guard guard(k().rcu());
    return find_task_by_pid_ns(nr, ns);
  }

  // Is a task hashed nowhere (not found by its number at any of its levels)?
  bool unhashed_everywhere(const std::vector<upid>& numbers) {
    for (const upid& u : numbers) {
      if (lookup(u.nr, u.ns) != nullptr) {
        return false;
      }
    }
    return true;
  }

  // The tasks a test starts with: init_ (pid 1) and, for a container, cinit_, the
  // init of a new namespace below it (cns_). live_ gathers other tasks. TearDown
  // retires live_, cinit_ and init_, in that order, unless the test did.
  void StartNumbering(int pid_max, int reserved_pids) {
    Make(pid_max, reserved_pids);
    init_ = fork_task("init");
    ASSERT_NE(init_, nullptr);
    ASSERT_EQ(task_pid_nr(init_), 1);
  }
  void StartContainer() {
    init_ = fork_task("init");
    cinit_ = fork_task("cinit", init_, {.new_pid_ns = true});
    ASSERT_TRUE(init_ != nullptr && cinit_ != nullptr);
    cns_ = task_active_pid_ns(cinit_);
  }
  void RetireContainer() {
    retire({cinit_, init_});
    cinit_ = nullptr;
    init_ = nullptr;
  }
  // Forks children of init_ until pids `from`..`to` are taken, each checked to be
  // the next number; appends them to live_.
  void ForkNumbered(const char* comm, pid_t from, pid_t to, const char* why) {
    for (pid_t expected = from; expected <= to; ++expected) {
      task_struct* t = fork_task(comm, init_);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(task_pid_nr(t), expected) << why;
      live_.push_back(t);
    }
  }
  void TearDown() override {
    for (task_struct* t : live_) {
      retire(t);
    }
    for (task_struct* t : {cinit_, init_}) {
      if (t != nullptr) {
        retire(t);
      }
    }
    registration_.reset();
    kernel_test::TearDown();
  }

  void ReaderRacesReap(bool autoreap);

  task_struct* init_ = nullptr;
  task_struct* cinit_ = nullptr;
  pid_namespace* cns_ = nullptr;
  std::vector<task_struct*> live_;

 private:
  std::optional<rcu_thread_registration> registration_;
};

// ---- 1. nesting and visibility ---------------------------------------------------------------

TEST_F(PidTest, NewPidNamespaceMakesTheChildPidOneWithANumberAtEveryLevel) {
  pid_namespace* root = &k().init_pid_ns();
  EXPECT_EQ(root->level(), 0U);
  EXPECT_EQ(root->parent(), nullptr);

  task_struct* init = fork_task("init");
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(task_pid_nr(init), 1);
  EXPECT_EQ(task_active_pid_ns(init), root);
  EXPECT_EQ(root->child_reaper(), init);

  // A container: pid 1 of a new namespace, pid 2 of the root.
  task_struct* cinit = fork_task("cinit", init, {.new_pid_ns = true});
  ASSERT_NE(cinit, nullptr);
  pid_namespace* cns = task_active_pid_ns(cinit);
  ASSERT_NE(cns, nullptr);
  EXPECT_NE(cns, root);
  EXPECT_EQ(cns->level(), 1U);
  EXPECT_EQ(cns->parent(), root);
  EXPECT_EQ(task_pid_nr_ns(cinit, cns), 1);
  EXPECT_EQ(task_pid_nr_ns(cinit, root), 2);
  EXPECT_EQ(task_pid_nr(cinit), 2);
  EXPECT_EQ(cns->child_reaper(), cinit);

  // An ordinary child inside the container inherits its namespace.
  task_struct* worker = fork_task("worker", cinit);
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(task_active_pid_ns(worker), cns);
  EXPECT_EQ(task_pid_nr_ns(worker, cns), 2);
  EXPECT_EQ(task_pid_nr_ns(worker, root), 3);

  // A grandchild namespace: three numbers, one per level.
  task_struct* ginit = fork_task("ginit", worker, {.new_pid_ns = true});
  ASSERT_NE(ginit, nullptr);
  pid_namespace* gns = task_active_pid_ns(ginit);
  EXPECT_EQ(gns->level(), 2U);
  EXPECT_EQ(gns->parent(), cns);
  EXPECT_EQ(task_pid_nr_ns(ginit, gns), 1);
  EXPECT_EQ(task_pid_nr_ns(ginit, cns), 3);
  EXPECT_EQ(task_pid_nr_ns(ginit, root), 4);
  EXPECT_EQ(gns->child_reaper(), ginit);

  // A sibling container of cns, also at level 1.
  task_struct* sinit = fork_task("sinit", init, {.new_pid_ns = true});
  ASSERT_NE(sinit, nullptr);
  pid_namespace* sns = task_active_pid_ns(sinit);
  EXPECT_EQ(sns->level(), 1U);
  EXPECT_EQ(sns->parent(), root);
  EXPECT_NE(sns, cns);
  EXPECT_EQ(task_pid_nr_ns(sinit, sns), 1);
  EXPECT_EQ(task_pid_nr_ns(sinit, root), 5);

  // Visibility: only in the own namespace and its ancestors.
  EXPECT_EQ(task_pid_nr_ns(init, cns), 0) << "the root's init is not visible in a child";
  EXPECT_EQ(task_pid_nr_ns(worker, gns), 0) << "a parent level is not visible below";
  EXPECT_EQ(task_pid_nr_ns(cinit, sns), 0) << "siblings do not see each other";
  EXPECT_EQ(task_pid_nr_ns(ginit, sns), 0);
  EXPECT_EQ(task_pid_nr_ns(sinit, cns), 0);
  EXPECT_EQ(task_pid_nr_ns(sinit, gns), 0);

  // The same numbers through lookups, level by level.
  EXPECT_EQ(lookup(1, root), init);
  EXPECT_EQ(lookup(2, root), cinit);
  EXPECT_EQ(lookup(4, root), ginit);
  EXPECT_EQ(lookup(5, root), sinit);
  EXPECT_EQ(lookup(1, cns), cinit);
  EXPECT_EQ(lookup(2, cns), worker);
  EXPECT_EQ(lookup(3, cns), ginit);
  EXPECT_EQ(lookup(1, gns), ginit);
  EXPECT_EQ(lookup(1, sns), sinit);
  EXPECT_EQ(lookup(2, sns), nullptr) << "sns has only its init";
  EXPECT_EQ(lookup(2, gns), nullptr);
  EXPECT_EQ(root->nr_hashed(), 5U);
  EXPECT_EQ(cns->nr_hashed(), 3U);
  EXPECT_EQ(gns->nr_hashed(), 1U);
  EXPECT_EQ(sns->nr_hashed(), 1U);

  for (task_struct* t : {ginit, worker, sinit, cinit, init}) {
    retire(t);
  }
  EXPECT_EQ(cns->nr_hashed(), 0U);
  EXPECT_EQ(gns->nr_allocated(), 0U);
  EXPECT_EQ(sns->nr_allocated(), 0U);
}

// MAX_PID_NS_LEVEL (32) is the deepest level a namespace may have: 33 numbers.
// One more CLONE_NEWPID fails the fork with -ENOSPC, as the kernel's
// create_pid_namespace does; it is an ordinary runtime failure of clone(), not
// API misuse.
TEST_F(PidTest, NestingBeyondMaxPidNsLevelFailsTheForkWithEnospc) {
  Make(64, 1);
  task_struct* init = fork_task("init");
  ASSERT_NE(init, nullptr);
  std::vector<task_struct*> chain{init};
  for (unsigned level = 1; level <= MAX_PID_NS_LEVEL; ++level) {
    const fork_result r = k().fork(chain.back(), {.comm = "nested", .new_pid_ns = true});
    ASSERT_TRUE(r) << "level " << level;
    chain.push_back(r.task);
  }
  task_struct* deepest = chain.back();
  ASSERT_EQ(task_active_pid_ns(deepest)->level(), MAX_PID_NS_LEVEL);
  // chain[i] is pid 1 at level i, so the deepest is 33 - level at each level.
  for (pid_namespace* ns = task_active_pid_ns(deepest); ns != nullptr; ns = ns->parent()) {
    EXPECT_EQ(task_pid_nr_ns(deepest, ns), static_cast<pid_t>(MAX_PID_NS_LEVEL + 1 - ns->level()));
    EXPECT_EQ(lookup(task_pid_nr_ns(deepest, ns), ns), deepest);
  }

  fork_result too_deep;
  EXPECT_NO_THROW(too_deep = k().fork(deepest, {.comm = "too-deep", .new_pid_ns = true}));
  EXPECT_FALSE(too_deep);
  EXPECT_EQ(too_deep.error, -ENOSPC);
  EXPECT_EQ(k().stats().fork_failures, 1U) << "the task is freed like any failed fork";
  EXPECT_THAT(capture().violations(), IsEmpty()) << "a runtime failure, not API misuse";

  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    retire(*it);
  }
}

// ---- 2. hashed while alive or zombie, unhashed by the reap -------------------------------------

TEST_F(PidTest, ZombieIsFoundAtEveryLevelUntilReaped) {
  pid_namespace* root = &k().init_pid_ns();
  ASSERT_NO_FATAL_FAILURE(StartContainer());
  task_struct* child = fork_task("child", cinit_);
  ASSERT_NE(child, nullptr);
  task_struct* t = child;
  const std::vector<upid> numbers = {{task_pid_nr_ns(t, root), root},
                                     {task_pid_nr_ns(t, cns_), cns_}};
  ASSERT_EQ(numbers[1].nr, 2);

  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(u.nr, u.ns), t);
  }
  k().do_exit(t, 7);
  EXPECT_EQ(t->exit_state.load(), EXIT_ZOMBIE);
  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(u.nr, u.ns), t) << "a zombie is still hashed (level " << u.ns->level() << ")";
  }
  k().finish_task_switch(t);
  EXPECT_EQ(refcount_read(&t->rcu_users), 1U);
  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(u.nr, u.ns), t) << "the final switch does not unhash";
  }
  EXPECT_EQ(root->nr_hashed(), 3U);
  EXPECT_EQ(cns_->nr_hashed(), 2U);

  const std::uint64_t zero_before = k().stats().rcu_users_zero;
  EXPECT_TRUE(k().wait_task_zombie(t));
  EXPECT_TRUE(unhashed_everywhere(numbers)) << "release_task unhashes from every level";
  EXPECT_EQ(root->nr_hashed(), 2U);
  EXPECT_EQ(cns_->nr_hashed(), 1U);
  EXPECT_EQ(root->nr_allocated(), 2U);
  EXPECT_EQ(cns_->nr_allocated(), 1U);
  EXPECT_EQ(k().stats().rcu_users_zero, zero_before + 1);
  EXPECT_FALSE(k().wait_task_zombie(t)) << "a second waiter does not reap again";
}

TEST_F(PidTest, ReapBeforeTheFinalSwitchUnhashesAndTheSwitchThenFrees) {
  pid_namespace* root = &k().init_pid_ns();
  task_struct* init = fork_task("init");
  task_struct* child = fork_task("child", init);
  ASSERT_TRUE(init != nullptr && child != nullptr);
  task_struct* t = child;
  const pid_t nr = task_pid_nr(t);

  k().do_exit(t);
  EXPECT_TRUE(k().wait_task_zombie(t));  // the parent reaps before the scheduler's drop
  EXPECT_EQ(lookup(nr, root), nullptr);
  EXPECT_EQ(refcount_read(&t->rcu_users), 1U) << "the scheduler's reference is still held";
  EXPECT_EQ(k().stats().rcu_users_zero, 0U);
  k().finish_task_switch(t);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);

  retire(init);
}

TEST_F(PidTest, AutoreapUnhashesAtExit) {
  pid_namespace* root = &k().init_pid_ns();
  ASSERT_NO_FATAL_FAILURE(StartContainer());
  task_struct* child = fork_task("detached", cinit_, {.autoreap = true});
  ASSERT_NE(child, nullptr);
  task_struct* t = child;
  const std::vector<upid> numbers = {{task_pid_nr_ns(t, root), root},
                                     {task_pid_nr_ns(t, cns_), cns_}};
  for (const upid& u : numbers) {
    EXPECT_EQ(lookup(u.nr, u.ns), t);
  }

  k().do_exit(t);
  EXPECT_EQ(t->exit_state.load(), EXIT_DEAD);
  EXPECT_TRUE(unhashed_everywhere(numbers)) << "exit_notify's release_task(self) unhashes";
  EXPECT_EQ(cns_->nr_hashed(), 1U);
  EXPECT_EQ(cns_->nr_allocated(), 1U);
  EXPECT_EQ(refcount_read(&t->rcu_users), 1U) << "still running: the scheduler's reference";
  EXPECT_FALSE(k().wait_task_zombie(t)) << "nothing left to reap";
  const std::uint64_t zero_before = k().stats().rcu_users_zero;
  k().finish_task_switch(t);
  EXPECT_EQ(k().stats().rcu_users_zero, zero_before + 1);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
}

// ---- 3. find_task_by_vpid: current's namespace ------------------------------------------------

TEST_F(PidTest, FindTaskByVpidResolvesInCurrentsNamespace) {
  pid_namespace* root = &k().init_pid_ns();
  ASSERT_NO_FATAL_FAILURE(StartContainer());             // 1, and 2 / 1
  task_struct* worker = fork_task("worker", cinit_);     // 3 / 2
  task_struct* outsider = fork_task("outsider", init_);  // 4
  ASSERT_TRUE(worker != nullptr && outsider != nullptr);
  ASSERT_EQ(task_pid_nr(outsider), 4);

  {
    auto scope = k().run_as(worker);
    ASSERT_EQ(get_current(), worker);
    EXPECT_EQ(task_pid_vnr(worker), 2);
    EXPECT_EQ(task_pid_vnr(cinit_), 1);
    EXPECT_EQ(task_pid_vnr(init_), 0) << "the root's init_ is not visible in the container";
    EXPECT_EQ(task_pid_vnr(outsider), 0);
    const rcu_read_guard guard(k().rcu());
    EXPECT_EQ(find_task_by_vpid(1), cinit_) << "vpid 1 is the container's init";
    EXPECT_EQ(find_task_by_vpid(task_pid_vnr(worker)), worker);
    EXPECT_EQ(find_task_by_vpid(4), nullptr) << "a root number that the container cannot see";
    EXPECT_EQ(find_task_by_vpid(3), nullptr) << "the worker's own root number";
    // find_task_by_pid_ns with the root namespace still sees everything.
    EXPECT_EQ(find_task_by_pid_ns(4, root), outsider);
  }
  {
    auto scope = k().run_as(init_);
    EXPECT_EQ(task_pid_vnr(worker), 3);
    EXPECT_EQ(task_pid_vnr(cinit_), 2);
    const rcu_read_guard guard(k().rcu());
    EXPECT_EQ(find_task_by_vpid(1), init_);
    EXPECT_EQ(find_task_by_vpid(2), cinit_);
    EXPECT_EQ(find_task_by_vpid(3), worker);
  }
  EXPECT_EQ(get_current(), nullptr);
  EXPECT_EQ(task_pid_vnr(init_), 0) << "no current: no namespace to see it in";

  live_ = {worker, outsider};
}

// ---- 4. the lookups' contract and invalid numbers ---------------------------------------------

TEST_F(PidTest, LookupWithoutReadLockIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* init = fork_task("init");
  ASSERT_NE(init, nullptr);

  EXPECT_CONTRACT_VIOLATION((void)find_task_by_pid_ns(1, &k().init_pid_ns()),
                            "of kernel 'pid' without rcu_read_lock()");
  {
    auto scope = k().run_as(init);
    EXPECT_CONTRACT_VIOLATION((void)find_task_by_vpid(1), "without rcu_read_lock()");
  }
  {
    const rcu_read_guard guard(k().rcu());
    EXPECT_CONTRACT_VIOLATION((void)find_task_by_vpid(1), "does not run as a task") << "no current";
  }

  retire(init);
}

TEST_F(PidTest, InvalidNumbersFindNothing) {
  pid_namespace* root = &k().init_pid_ns();
  ASSERT_NO_FATAL_FAILURE(StartContainer());

  for (pid_namespace* ns : {root, cns_}) {
    EXPECT_EQ(lookup(0, ns), nullptr);
    EXPECT_EQ(lookup(-1, ns), nullptr);
    EXPECT_EQ(lookup(static_cast<pid_t>(0xcafef00dU), ns), nullptr);
    EXPECT_EQ(lookup(ns->pid_max(), ns), nullptr) << "pid_max is an exclusive end";
    EXPECT_EQ(lookup(ns->pid_max() + 1, ns), nullptr);
    EXPECT_EQ(lookup(PID_MAX_LIMIT, ns), nullptr);
    EXPECT_EQ(lookup(INT32_MAX, ns), nullptr);
    EXPECT_EQ(lookup(INT32_MIN, ns), nullptr);
    EXPECT_EQ(lookup(9999, ns), nullptr) << "valid but unused";
  }
  EXPECT_EQ(lookup(2, cns_), nullptr) << "a fresh namespace has only its init";
  EXPECT_EQ(lookup(1, cns_), cinit_);
  {
    auto scope = k().run_as(cinit_);
    const rcu_read_guard guard(k().rcu());
    EXPECT_EQ(find_task_by_vpid(-1), nullptr);
    EXPECT_EQ(find_task_by_vpid(static_cast<pid_t>(0xcafef00dU)), nullptr);
    EXPECT_EQ(find_task_by_vpid(2), nullptr);
    EXPECT_EQ(find_task_by_vpid(9999), nullptr);
  }
}

// ---- 5. cyclic allocation and reuse ---------------------------------------------------------

// pid_max is an exclusive end (alloc_pid: idr_alloc_cyclic(..., pid_min, pid_max)):
// the tests below take pid_max = 17 for the numbers 1 .. 16.
TEST_F(PidTest, NumbersAreCyclicAndAFreedNumberIsReusedOnlyAfterTheWrap) {
  ASSERT_NO_FATAL_FAILURE(StartNumbering(17, 1));
  pid_namespace* root = &k().init_pid_ns();
  ForkNumbered("first", 2, 6, "numbers are allocated in increasing order");
  // Reap pid 3: its number is free, yet the cursor goes on upward.
  task_struct* three = take(live_, 3);
  ASSERT_NE(three, nullptr);
  retire(three);
  EXPECT_EQ(root->nr_allocated(), 5U);
  ForkNumbered("second", 7, 16, "3 is not reused before the wrap");
  // Past pid_max - 1 the search restarts at 1: the only free number is 3.
  task_struct* wrapped = fork_task("wrapped", init_);
  ASSERT_NE(wrapped, nullptr);
  EXPECT_EQ(task_pid_nr(wrapped), 3);
  EXPECT_EQ(lookup(3, root), wrapped);
  live_.push_back(wrapped);
  EXPECT_EQ(root->nr_allocated(), 16U);
  EXPECT_EQ(root->nr_hashed(), 16U);

  // Every number in use: -EAGAIN, counted as a failed fork, nothing allocated.
  const kernel_stats before = k().stats();
  const fork_result full = k().fork(init_, {.comm = "nope"});
  EXPECT_FALSE(full);
  EXPECT_EQ(full.task, nullptr);
  EXPECT_EQ(full.error, -EAGAIN);
  EXPECT_EQ(k().stats().fork_failures, before.fork_failures + 1);
  EXPECT_EQ(k().stats().forked, before.forked);
  EXPECT_EQ(root->nr_allocated(), 16U);
  EXPECT_EQ(root->nr_hashed(), 16U);
}

TEST_F(PidTest, AStaleNumberNamesTheNewTaskOnceReused) {
  ASSERT_NO_FATAL_FAILURE(StartNumbering(17, 1));
  pid_namespace* root = &k().init_pid_ns();
  ForkNumbered("filler", 2, 16, "the numbers in order, up to pid_max - 1");
  ASSERT_EQ(root->nr_allocated(), 16U);

  // pid 9 is reaped and freed; the only free number is then 9.
  task_struct* old = take(live_, 9);
  ASSERT_NE(old, nullptr);
  const std::uint64_t old_id = old->priv.id;
  retire(old);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);

  task_struct* reuser = fork_task("reuser", init_);
  ASSERT_NE(reuser, nullptr);
  live_.push_back(reuser);
  EXPECT_EQ(task_pid_nr(reuser), 9);
  {
    const rcu_read_guard guard(k().rcu());
    task_struct* found = find_task_by_pid_ns(9, root);
    ASSERT_NE(found, nullptr);
    EXPECT_EQ(found, reuser);
    EXPECT_NE(found->priv.id, old_id) << "the stale number names a different task";
    EXPECT_STREQ(found->comm, "reuser");
  }

  // The reap, not the free, gives the number back (free_pid in release_task):
  // pid 12 is handed out while its previous owner still awaits the final switch.
  task_struct* zombie = take(live_, 12);
  ASSERT_NE(zombie, nullptr);
  k().do_exit(zombie);
  EXPECT_TRUE(k().wait_task_zombie(zombie));
  task_struct* second = fork_task("second", init_);
  ASSERT_NE(second, nullptr);
  live_.push_back(second);
  EXPECT_EQ(task_pid_nr(second), 12);
  EXPECT_EQ(lookup(12, root), second);
  EXPECT_TRUE(k().is_allocated(zombie)) << "the old owner is still allocated";
  EXPECT_EQ(refcount_read(&zombie->rcu_users), 1U);
  EXPECT_EQ(task_pid_nr(zombie), 12);
  k().finish_task_switch(zombie);
  EXPECT_EQ(lookup(12, root), second) << "the old owner's end does not unhash 12";
}

// The kernel's own boundary: with pid_max = 310 the last number is 309, and pid
// 310 is neither handed out nor found (idr_alloc_cyclic's end is exclusive;
// alloc_pid's set_tid check rejects tid >= pid_max).
TEST_F(PidTest, PidMaxItselfIsNeverAPid) {
  ASSERT_NO_FATAL_FAILURE(StartNumbering(310, 300));
  pid_namespace* root = &k().init_pid_ns();
  ForkNumbered("filler", 2, 309, "every number below pid_max, in order");
  const fork_result full = k().fork(init_, {.comm = "nope"});
  EXPECT_FALSE(full) << "310 is not a pid";
  EXPECT_EQ(full.error, -EAGAIN);
  EXPECT_EQ(root->nr_allocated(), 309U);
  EXPECT_EQ(lookup(309, root), live_.back());
  EXPECT_EQ(lookup(310, root), nullptr);
}

// With reserved_pids = 5, once the cursor has passed 5 a wrap restarts at 5:
// the numbers below it are never handed out again, even when free.
TEST_F(PidTest, WrapRestartsAtReservedPids) {
  ASSERT_NO_FATAL_FAILURE(StartNumbering(17, 5));
  pid_namespace* root = &k().init_pid_ns();
  ForkNumbered("filler", 2, 16, "the numbers in order, up to pid_max - 1");
  task_struct* two = take(live_, 2);
  task_struct* seven = take(live_, 7);
  ASSERT_TRUE(two != nullptr && seven != nullptr);
  retire(two);
  retire(seven);

  const fork_result r = k().fork(init_, {.comm = "after-wrap"});
  ASSERT_TRUE(r);
  live_.push_back(r.task);
  EXPECT_EQ(task_pid_nr(r.task), 7) << "the wrap restarts at reserved_pids, not at 1";
  const fork_result none = k().fork(init_, {.comm = "nope"});
  EXPECT_FALSE(none);
  EXPECT_EQ(none.error, -EAGAIN) << "2 is free but below reserved_pids";
  EXPECT_EQ(root->nr_allocated(), 15U);
  EXPECT_EQ(k().stats().fork_failures, 1U);
}

// A nested fork takes a number at every level, deepest first; when an outer level
// is full the inner numbers already taken are given back.
TEST_F(PidTest, ForkFailingAtAnOuterLevelGivesBackTheInnerNumbers) {
  Make(5, 1);  // 1 .. 4
  pid_namespace* root = &k().init_pid_ns();
  ASSERT_NO_FATAL_FAILURE(StartContainer());  // 1, and 2 / 1
  task_struct* a = fork_task("a", init_);     // 3
  task_struct* b = fork_task("b", init_);     // 4
  ASSERT_TRUE(a != nullptr && b != nullptr);
  ASSERT_EQ(root->nr_allocated(), 4U);
  ASSERT_EQ(cns_->nr_allocated(), 1U);

  const fork_result failed = k().fork(cinit_, {.comm = "inner"});
  EXPECT_FALSE(failed);
  EXPECT_EQ(failed.error, -EAGAIN);
  EXPECT_EQ(cns_->nr_allocated(), 1U) << "the container's number was given back";
  EXPECT_EQ(cns_->nr_hashed(), 1U);
  EXPECT_EQ(root->nr_allocated(), 4U);

  retire(b);
  task_struct* inner = fork_task("inner", cinit_);
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(task_pid_nr(inner), 4);
  EXPECT_GT(task_pid_nr_ns(inner, cns_), 1);
  EXPECT_EQ(lookup(task_pid_nr_ns(inner, cns_), cns_), inner);
  EXPECT_EQ(cns_->nr_allocated(), 2U);

  retire({inner, a});
  RetireContainer();
  EXPECT_EQ(cns_->nr_allocated(), 0U);
}

// ---- 6. the RCU reader that races the reap (docs/kernel.md §3) ----------------------------------

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
void PidTest::ReaderRacesReap(bool autoreap) {
  task_struct* init = fork_task("init");
  ASSERT_NE(init, nullptr);
  task_struct* const victim = fork_task("victim", init, {.autoreap = autoreap});
  ASSERT_NE(victim, nullptr);
  const pid_t nr = task_pid_nr(victim);
  const kernel_stats before = k().stats();

  std::atomic<bool> reader_in_section{false};
  std::atomic<int> reader_in_section_at_gp{-1};  // sampled when the victim's GP ended
  const std::uint64_t probe = k().sched_process_free().attach([&](task_struct* t) {
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
    const rcu_thread_registration r(k().rcu());
    {
      const rcu_read_guard guard(k().rcu());
      reader_in_section.store(true, std::memory_order_release);
      task_struct* t = find_task_by_pid_ns(nr, &k().init_pid_ns());
      obs.found = t;
      stage.store(1, std::memory_order_release);
      while (stage.load(std::memory_order_acquire) != 2) {
        std::this_thread::yield();
      }
      give_others_a_chance();  // the reaper now waits in rcu_barrier
      obs.stats = k().stats();
      obs.found_again = find_task_by_pid_ns(nr, &k().init_pid_ns());
      if (t != nullptr) {
        obs.pid = t->pid;
        std::memcpy(obs.comm, t->comm, sizeof obs.comm);
        obs.still_owned = k().is_allocated(t);
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
    // Step by step, not retire: the reap's own result is observed.
    k().do_exit(victim);
    k().finish_task_switch(victim);  // autoreap: rcu_users 1 -> 0 here
    if (!autoreap) {
      reaped = k().wait_task_zombie(victim);  // rcu_users 1 -> 0 here
    }
    after_reap = k().stats();
    stage.store(2, std::memory_order_release);
    k().rcu().rcu_barrier();  // cannot finish before the reader leaves its section
  });
  reader.join();
  reaper.join();
  k().sched_process_free().detach(probe);

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
  EXPECT_EQ(k().stats().freed, before.freed + 1);
  EXPECT_FALSE(k().is_allocated(victim));

  retire(init);
}

TEST_F(PidTest, ReaderKeepsAReapedZombieAliveUntilItsSectionEnds) {
  ReaderRacesReap(/*autoreap=*/false);
}

TEST_F(PidTest, ReaderKeepsAnAutoreapedTaskAliveUntilItsSectionEnds) {
  ReaderRacesReap(/*autoreap=*/true);
}

// ---- 7. the counts ------------------------------------------------------------------------

TEST_F(PidTest, HashedAndAllocatedCountsTrackForksAndReaps) {
  Make(64, 1);
  pid_namespace* root = &k().init_pid_ns();
  EXPECT_EQ(root->nr_hashed(), 0U);
  EXPECT_EQ(root->nr_allocated(), 0U);
  ASSERT_NO_FATAL_FAILURE(StartContainer());

  std::vector<task_struct*> outer;
  std::vector<task_struct*> inner;
  for (int i = 0; i < 6; ++i) {
    const fork_result o = k().fork(init_, {.comm = "outer"});
    const fork_result n = k().fork(cinit_, {.comm = "inner"});
    ASSERT_TRUE(o && n);
    outer.push_back(o.task);
    inner.push_back(n.task);
  }
  EXPECT_EQ(root->nr_hashed(), 14U);
  EXPECT_EQ(root->nr_allocated(), 14U);
  EXPECT_EQ(cns_->nr_hashed(), 7U);
  EXPECT_EQ(cns_->nr_allocated(), 7U);

  // Failed forks leave nothing behind, wherever they fail.
  EXPECT_FALSE(k().fork(cinit_, {.comm = "f1", .fail = fork_failure::before_pid_alloc}));
  EXPECT_FALSE(k().fork(cinit_, {.comm = "f2", .fail = fork_failure::after_pid_alloc}));
  EXPECT_EQ(k().stats().fork_failures, 2U);
  EXPECT_EQ(root->nr_allocated(), 14U);
  EXPECT_EQ(cns_->nr_allocated(), 7U);

  // Zombies keep their numbers and stay hashed.
  for (task_struct* t : inner) {
    k().do_exit(t);
    k().finish_task_switch(t);
  }
  EXPECT_EQ(root->nr_hashed(), 14U);
  EXPECT_EQ(cns_->nr_hashed(), 7U);
  EXPECT_EQ(cns_->nr_allocated(), 7U);
  // The reaps release them at both levels.
  for (task_struct* t : inner) {
    EXPECT_TRUE(k().wait_task_zombie(t));
  }
  EXPECT_EQ(root->nr_hashed(), 8U);
  EXPECT_EQ(root->nr_allocated(), 8U);
  EXPECT_EQ(cns_->nr_hashed(), 1U);
  EXPECT_EQ(cns_->nr_allocated(), 1U);

  for (task_struct* t : outer) {
    retire(t);
  }
  EXPECT_EQ(root->nr_hashed(), 2U);
  EXPECT_EQ(root->nr_allocated(), 2U);
  RetireContainer();
  EXPECT_EQ(cns_->nr_hashed(), 0U);
  EXPECT_EQ(cns_->nr_allocated(), 0U);
}

// Lookups concurrent with forks and reaps that reuse the numbers: a task found
// by a number carries that number and stays allocated for the whole section.
TEST_F(PidTest, ConcurrentLookupsSeeOnlyLiveTasksCarryingTheNumber) {
  constexpr int kPidMax = 16;
  Make(kPidMax, 1);
  pid_namespace* root = &k().init_pid_ns();
  task_struct* init = fork_task("init");
  ASSERT_NE(init, nullptr);

  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> passes{0};  // complete read-side passes over every number
  std::atomic<int> seen{0};
  std::atomic<int> wrong_number{0};
  std::atomic<int> freed_under_reader{0};
  std::thread reader([&] {
    const rcu_thread_registration r(k().rcu());
    while (!done.load(std::memory_order_acquire)) {
      {
        const rcu_read_guard guard(k().rcu());
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
          if (!k().is_allocated(t)) {
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
    const fork_result r = k().fork(init, {.comm = "churn"});
    if (!r) {
      ADD_FAILURE() << "fork " << i << " failed with " << r.error;
      break;
    }
    ++forks;
    window.push_back(r.task);
    if (window.size() > 8) {
      retire(window.front());
      window.pop_front();
    }
    await_a_pass(pass);
  }
  for (task_struct* t : window) {
    retire(t);
  }
  done.store(true, std::memory_order_release);
  reader.join();

  EXPECT_EQ(forks, 400);
  EXPECT_GT(seen.load(), 0);
  EXPECT_EQ(wrong_number.load(), 0);
  EXPECT_EQ(freed_under_reader.load(), 0);
  retire(init);
}

}  // namespace
}  // namespace tasklife
