// The task kfuncs in every semantics profile (docs/kernel.md §5), and the
// kernel's history reproduced deterministically: the pid-lookup race
// (docs/kernel.md §3) and the rcu_users/callback-head union (docs/kernel.md §4),
// each under the profile that had the bug and under the profiles that fixed it.
// Every test body runs as task "prog", as a BPF program runs in some task.
#include <cerrno>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <tuple>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/values.hpp"

namespace tasklife {
namespace {

using test::task_value;

std::string ProfileName(const ::testing::TestParamInfo<semantics_profile>& param_info) {
  return std::string(to_string(param_info.param));
}

// A kernel of one profile; the test body runs as a BPF program of task "prog".
class KfuncFixture : public testkit::kernel_test {
 protected:
  static kernel_config ConfigFor(semantics_profile profile) {
    return {.name = "kfunc-test", .profile = profile};
  }
  const char* body_task_comm() const override { return "prog"; }
  // Ends this profile's kernel (its invariants checked) and starts one of `profile`.
  void Make(semantics_profile profile) {
    map_.reset();
    remake(ConfigFor(profile));
  }
  void TearDown() override {
    map_.reset();  // before the kernel's end: its destruction frees what the slot holds
    kernel_test::TearDown();
  }
  // The kptr slot of a one-element array map of this kernel (made on first use).
  // Array values live as long as their map: the slot may be used in any read-side
  // section until the kernel ends.
  kptr<task_struct>* Slot() {
    if (!map_) {
      map_.emplace(k(), 1);
    }
    const rcu_read_guard guard(k().rcu());
    return &map_->lookup_elem(0)->task;
  }
  semantics_profile profile() const { return k().config().profile; }
  task_struct* ForkContainer(const char* comm, task_struct* parent) {
    return fork_task(comm, parent, {.new_pid_ns = true});
  }
  // The reference a profile's acquire takes lives on this counter.
  unsigned held(const task_struct* t) const {
    return profile() == semantics_profile::usage_based ? usage(t) : rcu_users(t);
  }

 private:
  std::optional<bpf_array_map<task_value>> map_;
};

class KfuncTest : public KfuncFixture, public ::testing::WithParamInterface<semantics_profile> {
 protected:
  kernel_config config() const override { return ConfigFor(GetParam()); }
};

// ---- the table -------------------------------------------------------------------------------

TEST(KfuncTableTest, ExistenceAndFlagsFollowTheKernelsHistory) {
  using enum semantics_profile;
  using enum kfunc_id;
  EXPECT_EQ(kfunc_flags(rcu_users_inc, bpf_task_acquire), KF_ACQUIRE | KF_TRUSTED_ARGS);
  EXPECT_EQ(kfunc_flags(usage_based, bpf_task_acquire), KF_ACQUIRE | KF_TRUSTED_ARGS);
  EXPECT_EQ(kfunc_flags(rcu_safe, bpf_task_acquire), KF_ACQUIRE | KF_RCU | KF_RET_NULL);
  EXPECT_EQ(kfunc_flags(current, bpf_task_acquire), KF_ACQUIRE | KF_RCU | KF_RET_NULL);
  for (auto p : {rcu_users_inc, usage_based, rcu_safe, current}) {
    EXPECT_EQ(kfunc_flags(p, bpf_task_release), KF_RELEASE);
    EXPECT_EQ(kfunc_flags(p, bpf_task_from_pid), KF_ACQUIRE | KF_RET_NULL);
    EXPECT_TRUE(kfunc_exists(p, bpf_kptr_xchg));
    EXPECT_TRUE(kfunc_exists(p, bpf_rcu_read_lock));
    EXPECT_EQ(kfunc_exists(p, bpf_task_kptr_get), rcu_users_in_union(p)) << to_string(p);
    EXPECT_EQ(kfunc_exists(p, bpf_task_acquire_not_zero), rcu_users_in_union(p));
    EXPECT_EQ(kfunc_exists(p, bpf_task_release_dtor), p == current);
    EXPECT_EQ(kfunc_exists(p, bpf_task_from_vpid), p == current);
  }
  EXPECT_EQ(kfunc_flags(rcu_users_inc, bpf_task_kptr_get), KF_ACQUIRE | KF_KPTR_GET | KF_RET_NULL);
  EXPECT_EQ(kfunc_flags(rcu_users_inc, bpf_task_acquire_not_zero),
            KF_ACQUIRE | KF_RCU | KF_RET_NULL);
  EXPECT_EQ(kfunc_flags(current, bpf_task_from_vpid), KF_ACQUIRE | KF_RET_NULL);
  EXPECT_EQ(kfunc_flags(rcu_safe, bpf_task_kptr_get), 0U) << "gone in v6.4";
}

// ---- every profile ------------------------------------------------------------------------------

TEST_P(KfuncTest, AcquireAndReleaseMoveTheProfilesCounterByOne) {
  task_struct* t = fork_task("target");
  const unsigned before = held(t);
  task_struct* ref = bpf_task_acquire(t);
  ASSERT_EQ(ref, t);
  EXPECT_EQ(held(t), before + 1);
  bpf_task_release(ref);
  EXPECT_EQ(held(t), before) << "released exactly once";
  retire(t);
}

// Not retire: the acquire comes between the exit and the final switch.
TEST_P(KfuncTest, AcquireSucceedsOnAnExitingTaskWhileRcuUsersIsLive) {
  task_struct* t = fork_task("exiting");
  k().do_exit(t);  // PF_EXITING, zombie, rcu_users still 2 (the kernel: "keep it as-is")
  task_struct* ref = bpf_task_acquire(t);
  EXPECT_EQ(ref, t);
  bpf_task_release(ref);
  k().finish_task_switch(t);
  k().wait_task_zombie(t);
}

TEST_P(KfuncTest, FromPidFindsInTheRootNamespaceAndRefusesInvalidPids) {
  task_struct* init = fork_task("init");
  task_struct* cinit = ForkContainer("container", init);
  task_struct* ref = bpf_task_from_pid(cinit->pid);  // its root-namespace number
  ASSERT_EQ(ref, cinit);
  bpf_task_release(ref);
  for (const std::int32_t bad : {-1, 0, static_cast<std::int32_t>(0xcafef00d), 9999}) {
    EXPECT_EQ(bpf_task_from_pid(bad), nullptr) << bad;
  }
  EXPECT_EQ(bpf_task_from_pid(body_task()->pid), body_task());
  bpf_task_release(body_task());
  retire({cinit, init});
}

TEST_P(KfuncTest, XchgMovesReferencesExactlyOnce) {
  task_struct* t = fork_task("stashed");
  kptr<task_struct>* slot = Slot();
  const unsigned before = held(t);
  {
    const rcu_read_guard guard(k().rcu());
    EXPECT_EQ(bpf_kptr_xchg(slot, bpf_task_acquire(t)), nullptr);
    EXPECT_EQ(held(t), before + 1) << "the reference moved into the slot";
    task_struct* out = bpf_kptr_xchg(slot, nullptr);
    EXPECT_EQ(out, t) << "the previous value comes back as the caller's reference";
    EXPECT_EQ(bpf_kptr_xchg(slot, nullptr), nullptr) << "exactly once";
    bpf_task_release(out);
  }
  EXPECT_EQ(held(t), before);
  retire(t);
}

TEST_P(KfuncTest, CurrentAndRcuKfuncs) {
  EXPECT_EQ(bpf_get_current_task_btf(), body_task());
  bpf_rcu_read_lock();
  EXPECT_TRUE(k().rcu().rcu_read_lock_held());
  bpf_rcu_read_unlock();
  EXPECT_FALSE(k().rcu().rcu_read_lock_held());
}

TEST_P(KfuncTest, BadInputGetsADiagnosticNotUndefinedBehaviour) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  EXPECT_CONTRACT_VIOLATION(bpf_task_acquire(nullptr),
                            "bpf_task_acquire(): NULL passed as the task argument");
  kernel other({.name = "other"});
  task_struct* foreign = other.fork(nullptr, {.comm = "foreign"}).task;
  EXPECT_CONTRACT_VIOLATION(bpf_task_acquire(foreign), "is not a task of kernel 'kfunc-test'");
  int not_a_task = 0;
  EXPECT_CONTRACT_VIOLATION(bpf_task_release(reinterpret_cast<task_struct*>(&not_a_task)),
                            "is not a task of kernel 'kfunc-test'");
  // A pid of another kernel is just a number here.
  task_struct* ref = bpf_task_from_pid(foreign->pid);
  EXPECT_TRUE(ref == nullptr || &task_kernel(ref) == &k());
  if (ref != nullptr) {
    bpf_task_release(ref);
  }
  EXPECT_TRUE(other.retire(foreign));
  EXPECT_TRUE(other.shutdown().empty());
}

TEST_P(KfuncTest, KfuncsOutsideAProgramAreReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  leave_body_task();
  EXPECT_CONTRACT_VIOLATION((void)bpf_task_from_pid(1), "called outside a program");
}

TEST_P(KfuncTest, ReleaseOfAFreedTaskIsADetectedUseAfterFree) {
  if constexpr (!debug_checks_enabled) {
    // Skipped only in a build configured with TASKLIFE_CHECKS below full (no preset
    // does that for tests): without quarantine a freed task's memory is gone.
    GTEST_SKIP() << "use-after-free detection needs TASKLIFE_CHECKS=full";
  }
  task_struct* t = fork_task("gone");
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_CONTRACT_VIOLATION(bpf_task_acquire(t), "use-after-free");
  EXPECT_THAT(capture().messages(),
              Contains(AllOf(HasSubstr("use-after-free"), HasSubstr("'gone'"))));
}

INSTANTIATE_TEST_SUITE_P(Profiles, KfuncTest,
                         ::testing::Values(semantics_profile::rcu_users_inc,
                                           semantics_profile::usage_based,
                                           semantics_profile::rcu_safe, semantics_profile::current,
                                           semantics_profile::newest),
                         ProfileName);

// ---- the newest profile: today's kernel -----------------------------------------------------

// Every task kfunc's flags as they stand in 2026 (kernel/bpf/helpers.c after
// 1a5c01d2508a): KF_TRUSTED_ARGS is gone, the rest as in `current`.
TEST(NewestProfileTest, TaskKfuncFlagsAreTodaysAndKfTrustedArgsIsGone) {
  constexpr auto p = semantics_profile::newest;
  EXPECT_EQ(kfunc_flags(p, kfunc_id::bpf_task_acquire), KF_ACQUIRE | KF_RCU | KF_RET_NULL);
  EXPECT_EQ(kfunc_flags(p, kfunc_id::bpf_task_release), KF_RELEASE);
  EXPECT_EQ(kfunc_flags(p, kfunc_id::bpf_task_from_pid), KF_ACQUIRE | KF_RET_NULL);
  EXPECT_EQ(kfunc_flags(p, kfunc_id::bpf_task_from_vpid), KF_ACQUIRE | KF_RET_NULL);
  EXPECT_TRUE(kfunc_exists(p, kfunc_id::bpf_task_release_dtor));
  EXPECT_FALSE(kfunc_exists(p, kfunc_id::bpf_task_kptr_get)) << "removed in f85671c6ef46";
  EXPECT_FALSE(kfunc_exists(p, kfunc_id::bpf_task_acquire_not_zero));
  for (const kfunc_info& k : kfuncs) {
    EXPECT_EQ(kfunc_flags(p, k.id) & KF_TRUSTED_ARGS, 0U) << k.name;
    EXPECT_EQ(kfunc_exists(p, k.id), kfunc_exists(semantics_profile::current, k.id)) << k.name;
  }
  EXPECT_TRUE(info(p).trusted_args_default);
  EXPECT_FALSE(info(semantics_profile::current).trusted_args_default);
}

// 8671bad873eb (v6.17): the newest profile's kernel defers every final put
// through call_rcu unless told otherwise; the older profiles keep the immediate
// free, and an explicit mode wins in every profile.
TEST(NewestProfileTest, DefaultFinalPutIsTheProfilesAndAnExplicitModeWins) {
  for (const profile_info& p : semantics_profiles) {
    const kernel k({.name = "final-put", .profile = p.profile});
    EXPECT_EQ(k.config().final_put, p.profile == semantics_profile::newest
                                        ? final_put_mode::deferred
                                        : final_put_mode::immediate)
        << p.name;
  }
  const kernel old({.name = "explicit",
                    .profile = semantics_profile::newest,
                    .final_put = final_put_mode::immediate});
  EXPECT_EQ(old.config().final_put, final_put_mode::immediate);
}

class NewestProfileKernelTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override {
    return {.name = "newest", .profile = semantics_profile::newest};
  }
};

// The default deferral in action: a usage holder's last put waits one more grace
// period instead of freeing at once.
TEST_F(NewestProfileKernelTest, AUsageHoldersLastPutWaitsForAGracePeriod) {
  task_struct* t = fork_task("held");
  get_task_struct(t);
  retire(t);
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().gp_elapsed, 1U);
  EXPECT_EQ(usage(t), 1U) << "the holder's reference keeps it";
  put_task_struct(t);
  EXPECT_EQ(k().stats().freed, 0U) << "deferred through call_rcu(__put_task_struct_rcu_cb)";
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
}

// ---- profile-specific behaviour ----------------------------------------------------------------

struct race_outcome {
  task_struct* acquired;
  task_struct* found;
};

// Starts in the profile current; a test moves to another one with Make.
class KfuncProfileTest : public KfuncFixture {
 protected:
  kernel_config config() const override { return ConfigFor(semantics_profile::current); }

  // The pid-lookup race (docs/kernel.md §3): the program finds a zombie by pid
  // inside its RCU section; before it acquires, the parent reaps the zombie
  // (unhash, rcu_users 1 -> 0, call_rcu). The schedule is driven by hand: the
  // lookup and the acquire are bpf_task_from_pid's two halves, and the reap runs
  // between them as "another CPU" would (not retire: the reap is split from the
  // exit).
  race_outcome RunPidLookupRace() {
    task_struct* t = fork_task("victim");
    k().do_exit(t);
    k().finish_task_switch(t);  // zombie: hashed, rcu_users == 1
    bpf_rcu_read_lock();
    task_struct* found = find_task_by_pid_ns(t->pid, &k().init_pid_ns());
    EXPECT_EQ(found, t);
    EXPECT_TRUE(k().wait_task_zombie(t));  // the other CPU reaps: rcu_users -> 0, GP requested
    task_struct* acquired = bpf_task_acquire(found);
    bpf_rcu_read_unlock();
    return {acquired, found};
  }
};

TEST_F(KfuncProfileTest, CurrentAcquireOfADyingTaskIsNullAndLeavesTheCounterAlone) {
  ASSERT_EQ(profile(), semantics_profile::current);
  task_struct* t = fork_task("dying");
  bpf_rcu_read_lock();  // keeps the memory while rcu_users reaches 0
  retire(t);
  EXPECT_EQ(rcu_users(t), 0U);
  EXPECT_EQ(bpf_task_acquire(t), nullptr);
  EXPECT_EQ(rcu_users(t), 0U) << "inc_not_zero leaves a dead counter at 0";
  bpf_rcu_read_unlock();
  EXPECT_TRUE(capture().refcount_warnings().empty());
}

TEST_F(KfuncProfileTest, FromVpidResolvesInCurrentsNamespace) {
  ASSERT_EQ(profile(), semantics_profile::current);
  task_struct* init = fork_task("init");
  task_struct* cinit = ForkContainer("cinit", init);
  task_struct* inner = fork_task("inner", cinit);
  {
    const current_task_scope as_inner(inner);  // a program running inside the container
    EXPECT_EQ(task_pid_vnr(inner), 2);
    task_struct* ref = bpf_task_from_vpid(1);
    EXPECT_EQ(ref, cinit) << "vpid 1 is the container's init";
    bpf_task_release(ref);
    EXPECT_EQ(bpf_task_from_vpid(9999), nullptr);
    EXPECT_EQ(bpf_task_from_vpid(3), nullptr) << "nothing else in a fresh namespace";
  }
  retire({inner, cinit, init});
}

TEST_F(KfuncProfileTest, ReleaseDtorExistsOnlyInCurrent) {
  ASSERT_EQ(profile(), semantics_profile::current);
  task_struct* t = fork_task("dtor");
  bpf_task_release_dtor(bpf_task_acquire(t));
  EXPECT_EQ(rcu_users(t), 2U);
  retire(t);

  Make(semantics_profile::rcu_safe);
  task_struct* u = fork_task("nodtor");
  task_struct* ref = bpf_task_acquire(u);
  constexpr std::string_view kGone = "does not exist in semantics profile 'rcu_safe'";
  EXPECT_CONTRACT_VIOLATION(bpf_task_release_dtor(ref), kGone);
  EXPECT_CONTRACT_VIOLATION((void)bpf_task_from_vpid(1), kGone);
  EXPECT_CONTRACT_VIOLATION((void)bpf_task_kptr_get(nullptr), kGone);
  EXPECT_CONTRACT_VIOLATION((void)bpf_task_acquire_not_zero(u), kGone);
  bpf_task_release(ref);
  retire(u);
}

TEST_F(KfuncProfileTest, LegacyKfuncsInRcuUsersInc) {
  Make(semantics_profile::rcu_users_inc);
  const rcu_read_guard guard(k().rcu());
  kptr<task_struct>* slot = Slot();
  EXPECT_EQ(bpf_task_kptr_get(slot), nullptr) << "empty slot";
  task_struct* t = fork_task("legacy");
  bpf_task_release(bpf_kptr_xchg(slot, bpf_task_acquire(t)));  // no old value: release(NULL)
  task_struct* got = bpf_task_kptr_get(slot);
  EXPECT_EQ(got, t);
  EXPECT_EQ(rcu_users(t), 4U) << "2 + the slot's + kptr_get's";
  bpf_task_release(got);
  task_struct* nz = bpf_task_acquire_not_zero(t);
  EXPECT_EQ(nz, t);
  bpf_task_release(nz);
  bpf_task_release(bpf_kptr_xchg(slot, nullptr));
  EXPECT_EQ(rcu_users(t), 2U);
  retire(t);
}

TEST_F(KfuncProfileTest, LegacyKfuncsAreGuttedInUsageBased) {
  Make(semantics_profile::usage_based);
  task_struct* t = fork_task("gutted");
  const rcu_read_guard guard(k().rcu());
  EXPECT_EQ(bpf_kptr_xchg(Slot(), bpf_task_acquire(t)), nullptr);
  EXPECT_EQ(usage(t), 2U) << "usage_based acquires usage";
  EXPECT_EQ(bpf_task_kptr_get(Slot()), nullptr) << "156ed20d22ee: always NULL";
  EXPECT_EQ(bpf_task_acquire_not_zero(t), nullptr);
  bpf_task_release(bpf_kptr_xchg(Slot(), nullptr));
  EXPECT_EQ(usage(t), 1U);
  retire(t);
}

// ---- history, reproduced ------------------------------------------------------------------------

TEST_F(KfuncProfileTest, RcuUsersIncPidLookupRaceWarnsAndLeavesADanglingReference) {
  Make(semantics_profile::rcu_users_inc);
  expect_refcount_warning(REFCOUNT_ADD_UAF);
  const race_outcome r = RunPidLookupRace();
  EXPECT_EQ(r.acquired, r.found) << "the Nov 2022 acquire cannot fail";
  const auto warnings = capture().refcount_warnings();
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_EQ(warnings[0].warning.type, REFCOUNT_ADD_UAF);
  EXPECT_EQ(warnings[0].warning.message, "refcount_t: addition on 0; use-after-free.");
  EXPECT_EQ(warnings[0].warning.ref, &r.found->rcu_users);
  // The grace period requested by the reap runs regardless: the task is freed
  // under the program, which still believes it holds a reference.
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 1U);
  if constexpr (debug_checks_enabled) {
    EXPECT_CONTRACT_VIOLATION(bpf_task_release(r.acquired), "use-after-free");
    EXPECT_THAT(capture().messages(),
                Contains(AllOf(HasSubstr("use-after-free"), HasSubstr("'victim'"))));
  }
}

TEST_F(KfuncProfileTest, RcuSafePidLookupRaceReturnsNullAndLosesNothing) {
  for (auto profile : {semantics_profile::rcu_safe, semantics_profile::current}) {
    Make(profile);
    const race_outcome r = RunPidLookupRace();
    EXPECT_EQ(r.acquired, nullptr) << to_string(profile);
    EXPECT_EQ(rcu_users(r.found), 0U);
    EXPECT_TRUE(capture().refcount_warnings().empty());
    EXPECT_TRUE(capture().violations().empty());
    k().rcu().rcu_barrier();
    EXPECT_EQ(k().stats().freed, 1U) << "freed once, after the grace period";
  }
}

TEST_F(KfuncProfileTest, UsageBasedPidLookupRaceIsSafeThroughUsage) {
  Make(semantics_profile::usage_based);
  const race_outcome r = RunPidLookupRace();
  ASSERT_EQ(r.acquired, r.found);
  EXPECT_EQ(usage(r.acquired), 2U) << "the rcu users' usage is still there inside the section";
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, 0U) << "the program's usage keeps the memory past the grace period";
  EXPECT_EQ(usage(r.acquired), 1U);
  bpf_task_release(r.acquired);
  EXPECT_EQ(k().stats().freed, 1U);
  EXPECT_TRUE(capture().refcount_warnings().empty());
}

// v5.4 .. v6.3: rcu_users shared its storage with the callback head (docs/kernel.md
// §4). Once the dead task's callback is queued and another is queued behind it, its
// rcu_users reads as the low half of the `next` pointer: inc_not_zero "succeeds" on
// a dead task.
TEST_F(KfuncProfileTest, UnionLayoutMakesIncNotZeroSucceedOnADeadTask) {
  for (auto profile : {semantics_profile::rcu_users_inc, semantics_profile::rcu_safe}) {
    Make(profile);
    task_struct* dead = fork_task("dead");
    task_struct* next = fork_task("next");
    bpf_rcu_read_lock();  // no grace period can end: both stay allocated
    retire(dead);         // rcu_users 0, its callback queued
    retire(next);         // queued behind it on the same callback list
    if (profile == semantics_profile::rcu_users_inc) {
      EXPECT_NE(rcu_users(dead), 0U) << "the head's next pointer overwrote rcu_users";
      // What it reads stands for the low half of an address: tasklife writes one
      // below REFCOUNT_MAX, the same in every run, so inc_not_zero succeeds without
      // a warning.
      EXPECT_LT(rcu_users(dead), static_cast<unsigned>(REFCOUNT_MAX));
      task_struct* wrong = bpf_task_acquire_not_zero(dead);
      EXPECT_EQ(wrong, dead) << "inc_not_zero wrongly succeeds on a dead task";
      // The program now holds a reference to a task whose free is already queued.
    } else {
      EXPECT_EQ(rcu_users(dead), 0U) << "22df776a9a86: rcu_users has its own storage";
      EXPECT_EQ(bpf_task_acquire(dead), nullptr);
    }
    bpf_rcu_read_unlock();
    k().rcu().rcu_barrier();
    EXPECT_EQ(k().stats().freed, 2U) << "freed regardless of the bogus reference";
  }
}

}  // namespace
}  // namespace tasklife
