// The task iterator (bpf_iter_task_new / _next / _destroy, kfunc.hpp), raw and
// typed: the programs of the kernel's iters_task.c and iters_task_failure.c, the
// iterator state rules of iters_state_safety.c applied to iter_task, and what a
// walk yields while tasks die around it. Each test ends with the kit's invariant:
// every task freed once, nothing leaked, no undeclared contract violation.
#include <cstdint>
#include <optional>
#include <set>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/testing.hpp>
#include <tasklife/typed.hpp>

namespace tasklife {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

// The v6.7+ profiles: `current` (v6.8+) and `newest` (2026).
class IterTaskTest : public testkit::kernel_test,
                     public ::testing::WithParamInterface<semantics_profile> {
 protected:
  kernel_config config() const override { return {.name = "iter", .profile = GetParam()}; }
  bool newest() const { return GetParam() == semantics_profile::newest; }

  // The system the walks see: init, a process with two threads, a zombie.
  void SetUp() override {
    kernel_test::SetUp();
    init_ = fork_task("init");
    proc_ = fork_task("proc", init_);
    thread1_ = fork_task("thread1", proc_, {.thread = true});
    thread2_ = fork_task("thread2", proc_, {.thread = true});
    other_ = fork_task("other", init_);
  }
  void RetireAll() { retire({thread1_, thread2_, proc_, other_, init_}); }

  task_struct* init_ = nullptr;
  task_struct* proc_ = nullptr;
  task_struct* thread1_ = nullptr;
  task_struct* thread2_ = nullptr;
  task_struct* other_ = nullptr;
};

std::string ProfileName(const ::testing::TestParamInfo<semantics_profile>& info) {
  return std::string(to_string(info.param));
}

// Walks `flags` from `task` in the caller's RCU section, collecting what it yields.
std::vector<task_struct*> Walk(task_struct* task, unsigned int flags) {
  std::vector<task_struct*> seen;
  bpf_iter_task it;
  (void)bpf_iter_task_new(&it, task, flags);
  while (task_struct* pos = bpf_iter_task_next(&it)) {
    seen.push_back(pos);
  }
  bpf_iter_task_destroy(&it);
  return seen;
}

// iters_task.c, iter_task_for_each_sleep: a sleepable program takes the RCU lock
// and counts the target's process (ALL_PROCS), its threads (PROC_THREADS from
// current) and every thread whose tgid is the target's (ALL_THREADS).
TEST_P(IterTaskTest, IterTaskForEachSleep) {
  int procs_cnt = 0;
  int proc_threads_cnt = 0;
  int threads_cnt = 0;
  const pid_t target_pid = proc_->tgid;
  bpf_prog p(k(), prog_type::syscall, "syscall", [&](task_struct*) {
    task_struct* cur_task = bpf_get_current_task_btf();
    bpf_rcu_read_lock();
    for (task_struct* pos : Walk(nullptr, BPF_TASK_ITER_ALL_PROCS)) {
      procs_cnt += pos->pid == target_pid ? 1 : 0;
    }
    proc_threads_cnt = static_cast<int>(Walk(cur_task, BPF_TASK_ITER_PROC_THREADS).size());
    for (task_struct* pos : Walk(nullptr, BPF_TASK_ITER_ALL_THREADS)) {
      threads_cnt += pos->tgid == target_pid ? 1 : 0;
    }
    bpf_rcu_read_unlock();
    return 0;
  });
  const prog_run_result r = p.run(thread1_);
  EXPECT_TRUE(r.ok()) << ::testing::PrintToString(r.violations);
  EXPECT_EQ(procs_cnt, 1);
  EXPECT_EQ(proc_threads_cnt, 3) << "the leader and its two threads";
  EXPECT_EQ(threads_cnt, 3);
  RetireAll();
}

// The flavors' sets, and PROC_THREADS starting from a thread: it comes first, and
// the walk goes round its group to the leader.
TEST_P(IterTaskTest, EachFlavorYieldsItsTasksOnce) {
  const current_task_scope as(init_);
  const rcu_read_guard guard(k().rcu());
  EXPECT_THAT(Walk(nullptr, BPF_TASK_ITER_ALL_PROCS), UnorderedElementsAre(init_, proc_, other_));
  EXPECT_THAT(Walk(nullptr, BPF_TASK_ITER_ALL_THREADS),
              UnorderedElementsAre(init_, proc_, thread1_, thread2_, other_));
  const std::vector<task_struct*> group = Walk(thread2_, BPF_TASK_ITER_PROC_THREADS);
  ASSERT_FALSE(group.empty());
  EXPECT_EQ(group.front(), thread2_) << "kit->pos = task: the start is yielded first";
  EXPECT_THAT(group, UnorderedElementsAre(proc_, thread1_, thread2_));
  EXPECT_THAT(Walk(other_, BPF_TASK_ITER_PROC_THREADS), UnorderedElementsAre(other_));
  // bpf_iter_task_new's -EINVAL: PROC_THREADS without a task, an unknown flavor.
  bpf_iter_task it;
  EXPECT_EQ(bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_PROC_THREADS), -EINVAL);
  EXPECT_EQ(bpf_iter_task_next(&it), nullptr) << "initialized, and empty";
  bpf_iter_task_destroy(&it);
  EXPECT_EQ(bpf_iter_task_new(&it, nullptr, 7), -EINVAL);
  EXPECT_EQ(bpf_iter_task_next(&it), nullptr);
  bpf_iter_task_destroy(&it);
  RetireAll();
}

// What a walk yields while tasks die: a zombie (exited, not reaped) is yielded and
// can be acquired; a reaped task is not yielded (release_task took it off the
// list); a task reaped after the walk yielded it is still valid memory inside the
// section, and bpf_task_acquire (KF_RCU) returns NULL for it.
TEST_P(IterTaskTest, YieldsDyingTasksAndAcquireTellsWhichAreGone) {
  k().do_exit(other_);
  k().finish_task_switch(other_);  // other_: a zombie, rcu_users 1 (its reaper's)
  task_struct* reaped = fork_task("reaped", init_);
  retire(reaped);  // reaped, its free waits for a grace period
  std::vector<std::uint64_t> seen_ids;
  task_struct* zombie_ref = nullptr;
  task_struct* late_ref = proc_;  // overwritten below
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task it;
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    while (task_struct* pos = bpf_iter_task_next(&it)) {
      seen_ids.push_back(task_id(pos));
      if (pos == other_) {
        EXPECT_EQ(pos->exit_state.load(), EXIT_ZOMBIE) << "yielded though exited";
        zombie_ref = bpf_task_acquire(pos);
        if (zombie_ref != nullptr) {
          bpf_task_release(zombie_ref);
        }
      }
      if (pos == proc_) {
        // The parent reaps it now, on this CPU, while the walk holds RCU.
        k().do_exit(thread1_);
        k().finish_task_switch(thread1_);
        k().do_exit(thread2_);
        k().finish_task_switch(thread2_);
        k().do_exit(proc_);
        k().finish_task_switch(proc_);
        k().wait_task_zombie(proc_);
        EXPECT_EQ(refcount_read(&pos->rcu_users), 0U) << "dying, not freed";
        late_ref = bpf_task_acquire(pos);
        EXPECT_EQ(pos->pid, proc_->pid) << "still valid memory inside the section";
      }
    }
    bpf_iter_task_destroy(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_, init_);
  EXPECT_TRUE(r.ok()) << ::testing::PrintToString(r.violations);
  EXPECT_NE(zombie_ref, nullptr) << "a zombie's rcu_users is still 1";
  EXPECT_EQ(late_ref, nullptr) << "bpf_task_acquire of a task whose rcu_users is 0";
  EXPECT_THAT(seen_ids, Not(::testing::Contains(task_id(reaped))));
  EXPECT_THAT(seen_ids, ::testing::Contains(task_id(other_)));
  k().wait_task_zombie(other_);
  retire(init_);
}

// The verifier types what next returns as an RCU pointer: acquirable (KF_RCU),
// never releasable.
TEST_P(IterTaskTest, ReleaseOfAYieldedTaskIsRefused) {
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task it;
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    if (task_struct* pos = bpf_iter_task_next(&it)) {
      bpf_task_release(pos);
    }
    bpf_iter_task_destroy(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::release_untrusted,
                                       "R1 must be referenced or trusted"));
  EXPECT_EQ(r.violations.size(), 1U);
  RetireAll();
}

// iters_task_failure.c, iter_tasks_without_lock: a sleepable program walks without
// bpf_rcu_read_lock. Newest: "bpf: Enforce RCU protection for KF_RCU_PROTECTED"
// (2025) refuses the new; v6.7 .. that change (dfab99df147b) refused the first next.
// Either way nothing is walked.
TEST_P(IterTaskTest, IterTasksWithoutLock) {
  int seen = 0;
  bpf_prog p(k(), prog_type::syscall, "syscall", [&](task_struct*) {
    bpf_iter_task it;
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    while (bpf_iter_task_next(&it) != nullptr) {
      ++seen;
    }
    bpf_iter_task_destroy(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  if (newest()) {
    EXPECT_THAT(r, testkit::HasViolation(
                       violation_kind::rcu_required,
                       "kernel func bpf_iter_task_new requires RCU critical section protection"));
    EXPECT_EQ(r.violations.size(), 1U) << ::testing::PrintToString(r.violations);
  } else {
    EXPECT_THAT(r, testkit::HasViolation(violation_kind::rcu_required,
                                         "expected an RCU CS when using bpf_iter_task_next"));
    EXPECT_THAT(r, testkit::HasViolation(violation_kind::rcu_required,
                                         "expected an RCU CS when using bpf_iter_task_destroy"));
  }
  EXPECT_THAT(r, Not(testkit::HasViolationKind(violation_kind::unreleased_ref)));
  EXPECT_EQ(seen, 0);
  RetireAll();
}

// iters_task_failure.c, iter_tasks_lock_and_unlock: the section ends inside the
// loop; bpf_rcu_read_unlock makes the iterator's slot PTR_UNTRUSTED, so the next
// next is refused even though the program locked again.
TEST_P(IterTaskTest, IterTasksLockAndUnlock) {
  int seen = 0;
  bpf_prog p(k(), prog_type::syscall, "syscall", [&](task_struct*) {
    bpf_iter_task it;
    bpf_rcu_read_lock();
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    while (bpf_iter_task_next(&it) != nullptr) {
      ++seen;
      bpf_rcu_read_unlock();
      bpf_rcu_read_lock();
    }
    bpf_iter_task_destroy(&it);
    bpf_rcu_read_unlock();
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::rcu_required,
                                       "expected an RCU CS when using bpf_iter_task_next"));
  EXPECT_EQ(seen, 1) << "the walk stops where the section ended";
  RetireAll();
}

// iters_state_safety.c, create_and_forget_to_destroy_fail (for iter_task): an
// iterator is a reference to the verifier; never destroyed, it is unreleased.
TEST_P(IterTaskTest, CreateAndForgetToDestroyFail) {
  bpf_iter_task it;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    (void)bpf_iter_task_next(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  ASSERT_EQ(r.violations.size(), 1U) << ::testing::PrintToString(r.violations);
  EXPECT_EQ(r.violations[0].kind, violation_kind::unreleased_ref);
  EXPECT_THAT(r.violations[0].message,
              ::testing::AllOf(::testing::MatchesRegex("Unreleased reference id=[0-9]+ .*"),
                               HasSubstr("acquired by bpf_iter_task_new")));
  RetireAll();
}

// iters_state_safety.c, destroy_without_creating_fail, next_without_new_fail and
// next_after_destroy_fail (for iter_task): only an initialized iterator may be
// walked or destroyed.
TEST_P(IterTaskTest, DestroyWithoutCreatingFail) {
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task it;
    bpf_iter_task_destroy(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::iter_state,
                                       "expected an initialized iter_task as arg #0"));
  EXPECT_EQ(r.violations.size(), 1U);
  RetireAll();
}

TEST_P(IterTaskTest, NextWithoutNewFail) {
  task_struct* got = init_;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task it;
    got = bpf_iter_task_next(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::iter_state,
                                       "expected an initialized iter_task as arg #0"));
  EXPECT_EQ(got, nullptr);
  RetireAll();
}

TEST_P(IterTaskTest, NextAfterDestroyFail) {
  task_struct* got = init_;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task it;
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    bpf_iter_task_destroy(&it);
    got = bpf_iter_task_next(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::iter_state,
                                       "expected an initialized iter_task as arg #0"));
  EXPECT_EQ(r.violations.size(), 1U);
  EXPECT_EQ(got, nullptr);
  RetireAll();
}

// iters_state_safety.c, double_create_fail (for iter_task).
TEST_P(IterTaskTest, DoubleCreateFail) {
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task it;
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    EXPECT_EQ(bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS), -EINVAL);
    bpf_iter_task_destroy(&it);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::iter_state,
                                       "expected uninitialized iter_task as arg #0"));
  EXPECT_EQ(r.violations.size(), 1U);
  RetireAll();
}

// PROC_THREADS's task is a trusted argument (KF_TRUSTED_ARGS, the 2026 default):
// an RCU pointer (a slot read, a task the walk yielded) is refused.
TEST_P(IterTaskTest, ProcThreadsOfAnRcuPointerIsRefused) {
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    bpf_iter_task outer;
    (void)bpf_iter_task_new(&outer, nullptr, BPF_TASK_ITER_ALL_PROCS);
    if (task_struct* pos = bpf_iter_task_next(&outer)) {
      bpf_iter_task inner;
      EXPECT_EQ(bpf_iter_task_new(&inner, pos, BPF_TASK_ITER_PROC_THREADS), -EINVAL);
    }
    bpf_iter_task_destroy(&outer);
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_THAT(
      r, testkit::HasViolation(violation_kind::untrusted_arg, "R2 must be referenced or trusted"));
  EXPECT_EQ(r.violations.size(), 1U) << "the refused new initialized nothing";
  RetireAll();
}

// Outside a checked program the same misuse reaches the kfuncs' own contract
// checks, and nothing is walked outside RCU.
TEST_P(IterTaskTest, OutsideAProgramMisuseIsAContractViolation) {
  const current_task_scope as(init_);
  bpf_iter_task it;
  EXPECT_CONTRACT_VIOLATION(EXPECT_EQ(bpf_iter_task_next(&it), nullptr),
                            "expected an initialized iter_task as arg #0");
  // Refused outside RCU: the iterator stays uninitialized.
  EXPECT_CONTRACT_VIOLATION((void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS),
                            "requires RCU critical section protection");
  EXPECT_CONTRACT_VIOLATION(bpf_iter_task_destroy(&it),
                            "expected an initialized iter_task as arg #0");
  {
    const rcu_read_guard guard(k().rcu());
    (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
    EXPECT_CONTRACT_VIOLATION((void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS),
                              "expected uninitialized iter_task as arg #0");
    EXPECT_NE(bpf_iter_task_next(&it), nullptr);
  }
  EXPECT_CONTRACT_VIOLATION(EXPECT_EQ(bpf_iter_task_next(&it), nullptr),
                            "expected an RCU CS when using bpf_iter_task_next");
  bpf_iter_task_destroy(&it);
  EXPECT_CONTRACT_VIOLATION(bpf_iter_task_destroy(&it),
                            "expected an initialized iter_task as arg #0");
  RetireAll();
}

// The typed iterator: made under a named guard, destroyed by scope, yielding
// rcu_ptrs that are checked before bpf_task_acquire.
TEST_P(IterTaskTest, TypedIterTaskForEachAcquiresWhatIsAlive) {
  std::set<pid_t> pinned;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
    const rcu_guard guard;
    {
      task_iter it(task_iter_flavor::all_threads, guard);
      while (const rcu_ptr<task_struct> pos = it.next()) {
        if (const checked_rcu_ptr<task_struct> c = pos.check()) {
          if (maybe_ref<task_struct> ref = typed::bpf_task_acquire(c)) {
            owned_ref<task_struct> got = std::move(ref).take();
            pinned.insert(got->pid);
            typed::bpf_task_release(std::move(got));
          }
        }
      }
    }
    int group = 0;
    task_iter threads(trusted_ptr<task_struct>::from_prog_arg(arg), guard);
    while (const rcu_ptr<task_struct> pos = threads.next()) {
      ++group;
    }
    EXPECT_EQ(group, 3);
    return 0;
  });
  const prog_run_result r = p.run(init_, proc_);
  EXPECT_TRUE(r.ok()) << ::testing::PrintToString(r.violations);
  EXPECT_THAT(pinned, UnorderedElementsAre(init_->pid, proc_->pid, thread1_->pid, thread2_->pid,
                                           other_->pid));
  RetireAll();
}

// What the type cannot carry: a guard that ends before its iterator (an optional
// guard reset). The use is reported at run time and yields nothing.
TEST_P(IterTaskTest, TypedIterUsedAfterItsGuardEndedIsReported) {
  const current_task_scope as(init_);
  std::optional<rcu_guard> guard;
  guard.emplace();
  task_iter it(task_iter_flavor::all_procs, *guard);
  EXPECT_TRUE(static_cast<bool>(it.next()));
  guard.reset();
  EXPECT_CONTRACT_VIOLATION(EXPECT_FALSE(static_cast<bool>(it.next())),
                            "used after its rcu_guard ended");
  RetireAll();
  // ~task_iter destroys it outside any section: the destroy holds nothing and
  // needs none outside a program.
}

INSTANTIATE_TEST_SUITE_P(V67Plus, IterTaskTest,
                         ::testing::Values(semantics_profile::current, semantics_profile::newest),
                         ProfileName);

// The table's rows: absent before v6.7, the flags of each kernel after.
TEST(IterTaskProfileTest, KfuncFlagsPerProfile) {
  for (const semantics_profile p : {semantics_profile::rcu_users_inc,
                                    semantics_profile::usage_based, semantics_profile::rcu_safe}) {
    EXPECT_FALSE(kfunc_exists(p, kfunc_id::bpf_iter_task_new)) << to_string(p);
    EXPECT_FALSE(kfunc_exists(p, kfunc_id::bpf_iter_task_next)) << to_string(p);
    EXPECT_FALSE(kfunc_exists(p, kfunc_id::bpf_iter_task_destroy)) << to_string(p);
  }
  EXPECT_EQ(kfunc_flags(semantics_profile::current, kfunc_id::bpf_iter_task_new),
            KF_ITER_NEW | KF_TRUSTED_ARGS | KF_RCU_PROTECTED);
  EXPECT_EQ(kfunc_flags(semantics_profile::newest, kfunc_id::bpf_iter_task_new),
            KF_ITER_NEW | KF_RCU_PROTECTED);
  for (const semantics_profile p : {semantics_profile::current, semantics_profile::newest}) {
    EXPECT_EQ(kfunc_flags(p, kfunc_id::bpf_iter_task_next), KF_ITER_NEXT | KF_RET_NULL);
    EXPECT_EQ(kfunc_flags(p, kfunc_id::bpf_iter_task_destroy), KF_ITER_DESTROY);
    EXPECT_TRUE(kfunc_returns_maybe_null(p, kfunc_id::bpf_iter_task_next));
  }
}

class IterTaskOldProfileTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override {
    return {.name = "v6.4", .profile = semantics_profile::rcu_safe};
  }
};

// Before v6.7 there is no task iterator: calling it names the profile.
TEST_F(IterTaskOldProfileTest, NotInProfilesBeforeV67) {
  task_struct* t = fork_task("t");
  {
    const current_task_scope as(t);
    const rcu_read_guard guard(k().rcu());
    bpf_iter_task it;
    EXPECT_CONTRACT_VIOLATION(
        EXPECT_EQ(bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS), -EINVAL),
        "does not exist in semantics profile 'rcu_safe'");
    EXPECT_CONTRACT_VIOLATION(EXPECT_EQ(bpf_iter_task_next(&it), nullptr),
                              "does not exist in semantics profile 'rcu_safe'");
  }
  retire(t);
}

}  // namespace
}  // namespace tasklife
