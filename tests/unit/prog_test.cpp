// BPF-style programs under the run-time verifier (prog.hpp): the kernel's
// task_kfunc_success.c programs run clean, each task_kfunc_failure.c program
// is reported with the verifier's own words at the offending call, and the
// simulated kernel stays consistent after a bad program (the vetoed operation
// does not happen; what the program leaked the runner releases).
#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>

#include "../support/contract_capture.hpp"

namespace tasklife {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// struct __tasks_kfunc_map_value { struct task_struct __kptr * task; } — the map
// value of task_kfunc_common.h, also used as the local object's type.
struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};
using task_map = bpf_hash_map<pid_t, task_value>;

unsigned usage(const task_struct* t) {
  return refcount_read(&t->usage);
}
unsigned rcu_users(const task_struct* t) {
  return refcount_read(&t->rcu_users);
}

// "<this file>:<line>", as the checker formats a call site.
std::string At(unsigned line) {
  return std::string(__FILE__) + ":" + std::to_string(line);
}

std::string Describe(const prog_run_result& r) {
  std::string out;
  for (const violation& v : r.violations) {
    out += std::string(to_string(v.kind)) + " [" + std::string(v.kfunc) + "] " + v.message +
           " (line " + std::to_string(v.where.line()) + ")\n";
  }
  return out;
}

// tasks_kfunc_map_insert (task_kfunc_common.h): an empty value with BPF_NOEXIST,
// look it up, acquire the task, xchg it in; an old task that comes back is released.
long MapInsert(task_map& map, task_struct* p) {
  const pid_t key = p->pid;
  const task_value empty{};
  if (const long status = bpf_map_update_elem(&map, &key, &empty, BPF_NOEXIST); status != 0) {
    return status;
  }
  task_value* v = bpf_map_lookup_elem(&map, &key);
  if (v == nullptr) {
    (void)bpf_map_delete_elem(&map, &key);
    return -ENOENT;
  }
  task_struct* acquired = bpf_task_acquire(p);
  if (acquired == nullptr) {
    return -ENOENT;
  }
  if (task_struct* old = bpf_kptr_xchg(&v->task, acquired); old != nullptr) {
    bpf_task_release(old);
    return -EEXIST;
  }
  return 0;
}

// tasks_kfunc_map_value_lookup.
task_value* MapLookup(task_map& map, const task_struct* p) {
  const pid_t key = p->pid;
  return bpf_map_lookup_elem(&map, &key);
}

class ProgTest : public ::testing::Test {
 protected:
  void SetUp() override { init_ = Fork("init"); }

  void TearDown() override {
    for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it) {
      k_.do_exit(*it);
      k_.finish_task_switch(*it);
      k_.wait_task_zombie(*it);
    }
    k_.rcu().rcu_barrier();
    const auto leaks = k_.shutdown();
    EXPECT_TRUE(leaks.empty()) << leaks.size() << " task(s) leaked";
    EXPECT_EQ(k_.stats().forked, k_.stats().freed) << "every task freed exactly once";
    EXPECT_THAT(capture_.violations(), IsEmpty());
    EXPECT_TRUE(capture_.refcount_warnings().empty());
  }

  task_struct* Fork(const char* comm, task_struct* parent = nullptr, bool new_ns = false) {
    task_struct* t = k_.fork(parent, {.comm = comm, .new_pid_ns = new_ns}).task;
    tasks_.push_back(t);
    return t;
  }

  struct forked_with {
    task_struct* child;
    prog_run_result result;
  };
  // Forks a child of init with `p` attached to task_newtask: the program runs with
  // the new task as its (trusted) argument, as `as` if given (the forking thread
  // runs as that task), else as the new task itself.
  forked_with ForkWith(bpf_prog& p, const char* comm, task_struct* as = nullptr) {
    std::vector<prog_run_result> results;
    const std::uint64_t id =
        p.attach(k_.task_newtask(), [&results](const prog_run_result& r) { results.push_back(r); });
    task_struct* child = nullptr;
    if (as != nullptr) {
      const current_task_scope scope(as);
      child = Fork(comm, init_);
    } else {
      child = Fork(comm, init_);
    }
    EXPECT_TRUE(k_.task_newtask().detach(id));
    EXPECT_EQ(results.size(), 1U) << "the program ran once per fork";
    return {child, results.empty() ? prog_run_result{} : results.front()};
  }

  // Stashes a reference to `t` in `map` the selftest way, from a tracing program.
  void Stash(task_map& map, task_struct* t) {
    bpf_prog insert(k_, prog_type::tracing, "tp_btf/task_newtask",
                    [&map](task_struct* task) { return static_cast<int>(MapInsert(map, task)); });
    const prog_run_result r = insert.run(init_, t);
    EXPECT_TRUE(r.ok()) << Describe(r);
    EXPECT_EQ(r.ret, 0);
  }

  bool RcuHeldOutsidePrograms() {
    const current_task_scope scope(init_);
    return k_.rcu().rcu_read_lock_held();
  }

  test::contract_capture capture_;
  kernel k_{kernel_config{.name = "prog-test", .profile = semantics_profile::current}};
  task_struct* init_ = nullptr;
  std::vector<task_struct*> tasks_;  // retired in reverse order of their forks
};

// ---- task_kfunc_success.c ---------------------------------------------------------------------

TEST_F(ProgTest, AcquireReleaseArgument) {
  unsigned inside = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    task_struct* acquired = bpf_task_acquire(task);
    if (acquired == nullptr) {
      return 1;
    }
    inside = rcu_users(acquired);
    bpf_task_release(acquired);
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(f.result.ret, 0);
  EXPECT_EQ(inside, 3U) << "2 (reaper, scheduler) + the program's reference";
  EXPECT_EQ(rcu_users(f.child), 2U) << "released exactly once";
  EXPECT_EQ(usage(f.child), 1U);
}

TEST_F(ProgTest, AcquireReleaseCurrent) {
  unsigned inside = 0;
  task_struct* seen = nullptr;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    task_struct* current = bpf_get_current_task_btf();
    seen = current;
    task_struct* acquired = bpf_task_acquire(current);
    if (acquired == nullptr) {
      return 1;
    }
    inside = rcu_users(acquired);
    bpf_task_release(acquired);
    return 0;
  });
  const forked_with f = ForkWith(p, "child", /*as=*/init_);
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(f.result.ret, 0);
  EXPECT_EQ(seen, init_) << "current is the forking task, not the tracepoint's argument";
  EXPECT_EQ(inside, 3U);
  EXPECT_EQ(rcu_users(init_), 2U);
  EXPECT_EQ(rcu_users(f.child), 2U);
}

TEST_F(ProgTest, AcquireLeaveInMapIsReleasedByTheMapsDestructor) {
  std::optional<task_map> map;
  map.emplace(k_, 16);
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask",
             [&](task_struct* task) { return MapInsert(*map, task) == 0 ? 0 : 1; });
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result) << "a reference moved into a map is not leaked";
  EXPECT_EQ(f.result.ret, 0);
  EXPECT_EQ(map->count(), 1U);
  EXPECT_EQ(rcu_users(f.child), 3U) << "the map holds the program's reference";
  map.reset();  // bpf_obj_free_fields on every element: the dtor, once
  EXPECT_EQ(rcu_users(f.child), 2U);
}

TEST_F(ProgTest, XchgOutOfTheMapAndRelease) {
  task_map map(k_, 16);
  int err = -1;
  unsigned after_xchg = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    err = 0;
    if (MapInsert(map, task) != 0) {
      err = 1;
      return 0;
    }
    task_value* v = MapLookup(map, task);
    if (v == nullptr) {
      err = 2;
      return 0;
    }
    task_struct* kptr = bpf_kptr_xchg(&v->task, nullptr);
    if (kptr == nullptr) {
      err = 3;
      return 0;
    }
    after_xchg = rcu_users(kptr);
    bpf_task_release(kptr);
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(after_xchg, 3U) << "the slot's reference is now the program's";
  EXPECT_EQ(rcu_users(f.child), 2U);
  EXPECT_EQ(map.count(), 1U) << "the element stays, its slot empty";
}

TEST_F(ProgTest, SlotReadUnderTheImplicitRcuOfANonSleepableProgramMayBeAcquired) {
  task_map map(k_, 16);
  int err = -1;
  unsigned inside = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    err = 0;
    if (MapInsert(map, task) != 0) {
      err = 1;
      return 0;
    }
    task_value* v = MapLookup(map, task);
    if (v == nullptr) {
      err = 2;
      return 0;
    }
    task_struct* kptr = v->task.get();  // no bpf_rcu_read_lock: the program's own RCU
    if (kptr == nullptr) {
      err = 3;
      return 0;
    }
    task_struct* acquired = bpf_task_acquire(kptr);
    if (acquired == nullptr) {
      err = 4;
      return 0;
    }
    inside = rcu_users(acquired);
    bpf_task_release(acquired);
    return 0;
  });
  EXPECT_FALSE(p.sleepable());
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(inside, 4U) << "2 + the map's + the program's";
  EXPECT_EQ(rcu_users(f.child), 3U) << "the map's reference stays";
}

TEST_F(ProgTest, SlotReadUnderExplicitRcuInASleepableSyscallProgramMayBeAcquired) {
  task_struct* target = Fork("target", init_);
  task_map map(k_, 16);
  Stash(map, target);
  ASSERT_EQ(rcu_users(target), 3U);
  const pid_t key = target->pid;
  int err = -1;
  unsigned inside = 0;
  bpf_prog p(k_, prog_type::syscall, "syscall", [&](task_struct*) {
    err = 0;
    bpf_rcu_read_lock();
    task_value* v = bpf_map_lookup_elem(&map, &key);
    task_struct* kptr = v != nullptr ? v->task.get() : nullptr;
    task_struct* acquired = kptr != nullptr ? bpf_task_acquire(kptr) : nullptr;
    bpf_rcu_read_unlock();
    if (acquired == nullptr) {
      err = 1;
      return 0;
    }
    inside = rcu_users(acquired);
    bpf_task_release(acquired);  // a referenced pointer outlives the RCU section
    return 0;
  });
  EXPECT_TRUE(p.sleepable());
  const prog_run_result r = p.run(init_);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(inside, 4U);
  EXPECT_EQ(rcu_users(target), 3U);
  EXPECT_FALSE(RcuHeldOutsidePrograms());
}

TEST_F(ProgTest, FromPidOfTheArgument) {
  bool same = false;
  unsigned inside = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    task_struct* acquired = bpf_task_from_pid(task->pid);
    if (acquired == nullptr) {
      return 1;
    }
    same = acquired == task;
    inside = rcu_users(acquired);
    bpf_task_release(acquired);
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(f.result.ret, 0);
  EXPECT_TRUE(same);
  EXPECT_EQ(inside, 3U);
  EXPECT_EQ(rcu_users(f.child), 2U);
}

TEST_F(ProgTest, FromPidOfCurrent) {
  bool same = false;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    task_struct* current = bpf_get_current_task_btf();
    task_struct* acquired = bpf_task_from_pid(current->pid);
    if (acquired == nullptr) {
      return 1;
    }
    same = acquired == current;
    bpf_task_release(acquired);
    return 0;
  });
  const forked_with f = ForkWith(p, "child", /*as=*/init_);
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(f.result.ret, 0);
  EXPECT_TRUE(same);
  EXPECT_EQ(rcu_users(init_), 2U);
}

TEST_F(ProgTest, FromPidOfInvalidPidsIsNull) {
  int err = -1;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    err = 0;
    task_struct* acquired = bpf_task_from_pid(-1);
    if (acquired != nullptr) {
      err = 1;
      bpf_task_release(acquired);
      return 0;
    }
    acquired = bpf_task_from_pid(static_cast<std::int32_t>(0xcafef00dU));
    if (acquired != nullptr) {
      err = 2;
      bpf_task_release(acquired);
    }
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(err, 0);
}

TEST_F(ProgTest, FromVpidOneIsTheInitOfCurrentsFreshNamespace) {
  task_struct* cinit = Fork("cinit", init_, /*new_ns=*/true);
  int err = -1;
  task_struct* found = nullptr;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    err = 0;
    task_struct* v_task = bpf_task_from_vpid(1);
    if (v_task == nullptr) {
      err = 1;
      return 0;
    }
    found = v_task;
    if (v_task != bpf_get_current_task_btf()) {
      err = 2;
    }
    bpf_task_release(v_task);
    return 0;
  });
  prog_run_result r = p.run(cinit, cinit);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(err, 0) << "the namespace's init is current itself";
  EXPECT_EQ(found, cinit);

  task_struct* inner = Fork("inner", cinit);
  found = nullptr;
  r = p.run(inner, inner);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(err, 2) << "from a second task of the namespace, vpid 1 is not current";
  EXPECT_EQ(found, cinit) << "but its init";
  EXPECT_EQ(rcu_users(cinit), 2U);
}

TEST_F(ProgTest, FromVpidOfInvalidOrAbsentNumbersIsNull) {
  task_struct* cinit = Fork("cinit", init_, /*new_ns=*/true);
  int err = -1;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    err = 0;
    int step = 0;
    for (const std::int32_t vpid : {-1, 2, 9999}) {
      ++step;
      if (task_struct* v_task = bpf_task_from_vpid(vpid); v_task != nullptr) {
        err = step;
        bpf_task_release(v_task);
        return 0;
      }
    }
    return 0;
  });
  const prog_run_result r = p.run(cinit, cinit);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(err, 0) << "only current lives in the fresh namespace";
}

// test_task_from_vpid_current is SEC("syscall") and calls bpf_get_current_task_btf:
// syscall_prog_func_proto falls back to tracing_prog_func_proto, which has it.
TEST_F(ProgTest, SyscallProgramFromVpidCurrentAsTheSelftestWritesIt) {
  task_struct* cinit = Fork("cinit", init_, /*new_ns=*/true);
  int err = -1;
  bpf_prog p(k_, prog_type::syscall, "syscall", [&](task_struct*) {
    err = 0;
    task_struct* v_task = bpf_task_from_vpid(1);
    if (v_task == nullptr) {
      err = 1;
      return 0;
    }
    task_struct* current = bpf_get_current_task_btf();
    if (current != v_task) {
      err = 2;
    }
    bpf_task_release(v_task);
    return 0;
  });
  const prog_run_result r = p.run(cinit);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(err, 0);
  EXPECT_TRUE(kfunc_allowed(prog_type::syscall, kfunc_id::bpf_get_current_task_btf));
}

// test_task_xchg_release's local-object half: a task stashed in a bpf_obj_new
// object is released by bpf_obj_drop, exactly once.
TEST_F(ProgTest, XchgIntoALocalObjectIsReleasedByObjDropExactlyOnce) {
  task_map map(k_, 16);
  int err = -1;
  unsigned refcnt = 0;
  unsigned refcnt_after_drop = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    err = 0;
    if (MapInsert(map, task) != 0) {
      err = 1;
      return 0;
    }
    task_value* v = MapLookup(map, task);
    if (v == nullptr) {
      err = 2;
      return 0;
    }
    task_struct* kptr = bpf_kptr_xchg(&v->task, nullptr);
    if (kptr == nullptr) {
      err = 3;
      return 0;
    }
    auto* local = bpf_obj_new<task_value>();
    kptr = bpf_kptr_xchg(&local->task, kptr);
    if (kptr != nullptr) {
      err = 5;
      bpf_obj_drop(local);
      bpf_task_release(kptr);
      return 0;
    }
    kptr = bpf_kptr_xchg(&local->task, nullptr);
    if (kptr == nullptr) {
      err = 6;
      bpf_obj_drop(local);
      return 0;
    }
    // Stash a copy into the local kptr and check it is released with the object.
    task_struct* acquired = bpf_task_acquire(kptr);
    if (acquired == nullptr) {
      err = 7;
      bpf_obj_drop(local);
      bpf_task_release(kptr);
      return 0;
    }
    refcnt = rcu_users(acquired);
    acquired = bpf_kptr_xchg(&local->task, acquired);
    if (acquired != nullptr) {
      err = 8;
      bpf_obj_drop(local);
      bpf_task_release(kptr);
      bpf_task_release(acquired);
      return 0;
    }
    bpf_obj_drop(local);
    refcnt_after_drop = rcu_users(kptr);
    if (refcnt != refcnt_after_drop + 1) {
      err = 9;
      bpf_task_release(kptr);
      return 0;
    }
    bpf_task_release(kptr);
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  EXPECT_TRUE(f.result.ok()) << Describe(f.result);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(refcnt, 4U) << "2 + kptr + the stashed copy";
  EXPECT_EQ(refcnt_after_drop, 3U) << "bpf_obj_drop released the stashed copy, once";
  EXPECT_EQ(rcu_users(f.child), 2U);
}

// The same destructor path with nothing else in the way: the reference a program
// moved into a local object belongs to the object, and bpf_obj_drop's destructor
// (bpf_task_release_dtor) is the kernel's release, not a program's bpf_task_release.
TEST_F(ProgTest, ObjDropInsideAProgramReleasesTheStashedReference) {
  task_struct* target = Fork("target", init_);
  unsigned stashed = 0;
  unsigned dropped = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    task_struct* ref = bpf_task_from_pid(target->pid);
    if (ref == nullptr) {
      return 1;
    }
    auto* local = bpf_obj_new<task_value>();
    if (task_struct* old = bpf_kptr_xchg(&local->task, ref); old != nullptr) {
      bpf_task_release(old);
    }
    stashed = rcu_users(target);
    bpf_obj_drop(local);
    dropped = rcu_users(target);
    return 0;
  });
  const prog_run_result r = p.run(init_, init_);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(stashed, 3U);
  EXPECT_EQ(dropped, 2U) << "the object's destructor released the stashed reference";
  EXPECT_EQ(rcu_users(target), 2U);
}

// prog.hpp's trust rules: "a syscall program's argument ... [is] trusted".
// A syscall program's context is user memory, not a task: a task pointer handed
// to it is nothing the verifier trusts. It must look tasks up itself (from_pid).
TEST_F(ProgTest, SyscallProgramArgumentIsNotTrusted) {
  task_struct* target = Fork("target", init_);
  bpf_prog p(k_, prog_type::syscall, "syscall", [&](task_struct* task) {
    task_struct* acquired = bpf_task_acquire(task);
    if (acquired != nullptr) {
      bpf_task_release(acquired);
      return 1;
    }
    return 0;
  });
  const prog_run_result r = p.run(init_, target);
  EXPECT_EQ(r.ret, 0) << "the acquire was refused";
  ASSERT_EQ(r.violations.size(), 1U);
  EXPECT_EQ(r.violations[0].kind, violation_kind::untrusted_arg);
  EXPECT_EQ(r.violations[0].message, "R1 must be a rcu pointer");
  EXPECT_EQ(rcu_users(target), 2U);
}

// ---- task_kfunc_failure.c: one program per violation kind ------------------------------------

TEST_F(ProgTest, UnreleasedReference) {
  task_struct* victim = Fork("victim", init_);
  unsigned acquire_line = 0;
  unsigned inside = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    acquire_line = __LINE__ + 1;
    task_struct* acquired = bpf_task_acquire(task);
    if (acquired != nullptr) {
      inside = rcu_users(acquired);
    }
    return 0;  // no release
  });
  const unsigned run_line = __LINE__ + 1;
  const prog_run_result r = p.run(init_, victim);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::unreleased_ref);
  EXPECT_EQ(to_string(v.kind), std::string_view("unreleased_ref"));
  EXPECT_THAT(v.message, StartsWith("Unreleased reference id=1"));
  EXPECT_EQ(v.message,
            "Unreleased reference id=1 (acquired by bpf_task_acquire at " + At(acquire_line) + ")");
  EXPECT_EQ(v.kfunc, "") << "reported at program exit";
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), run_line) << "the exit of the run";
  EXPECT_EQ(inside, 3U);
  EXPECT_EQ(rcu_users(victim), 2U) << "the runner released the leaked reference";
}

// task_kfunc_acquire_null and task_kfunc_from_pid_no_null_check.
TEST_F(ProgTest, NullArgument) {
  task_struct* victim = Fork("victim", init_);
  unsigned acquire_line = 0;
  unsigned release_line = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    acquire_line = __LINE__ + 1;
    task_struct* acquired = bpf_task_acquire(nullptr);
    (void)acquired;
    task_struct* found = bpf_task_from_pid(-1);  // no NULL check
    release_line = __LINE__ + 1;
    bpf_task_release(found);
    return 0;
  });
  const prog_run_result r = p.run(init_, victim);
  ASSERT_EQ(r.violations.size(), 2U) << Describe(r);
  for (const violation& v : r.violations) {
    EXPECT_EQ(v.kind, violation_kind::null_arg);
    EXPECT_EQ(v.message, "Possibly NULL pointer passed to trusted arg0");
    EXPECT_EQ(v.argument, nullptr);
    EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  }
  EXPECT_EQ(r.violations[0].kfunc, "bpf_task_acquire");
  EXPECT_EQ(r.violations[0].where.line(), acquire_line);
  EXPECT_EQ(r.violations[1].kfunc, "bpf_task_release");
  EXPECT_EQ(r.violations[1].where.line(), release_line);
  EXPECT_THAT(capture_.violations(), IsEmpty()) << "vetoed before the kfunc's own contract check";
  EXPECT_EQ(rcu_users(victim), 2U);
}

// task_kfunc_release_unacquired: the tracepoint's argument is trusted, not referenced.
TEST_F(ProgTest, ReleaseUnacquired) {
  task_struct* victim = Fork("victim", init_);
  unsigned line = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    line = __LINE__ + 1;
    bpf_task_release(task);
    return 0;
  });
  const prog_run_result r = p.run(init_, victim);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::release_unacquired);
  EXPECT_EQ(v.message, "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID");
  EXPECT_EQ(v.kfunc, "bpf_task_release");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(rcu_users(victim), 2U) << "the release was not carried out";
  EXPECT_EQ(usage(victim), 1U);
}

// task_kfunc_release_in_map: a pointer read from a slot may be acquired, not released.
TEST_F(ProgTest, ReleaseOfASlotRead) {
  task_struct* victim = Fork("victim", init_);
  std::optional<task_map> map;
  map.emplace(k_, 16);
  unsigned line = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    if (MapInsert(*map, task) != 0) {
      return 1;
    }
    task_value* v = MapLookup(*map, task);
    if (v == nullptr) {
      return 2;
    }
    bpf_rcu_read_lock();
    task_struct* local = v->task.get();
    if (local == nullptr) {
      bpf_rcu_read_unlock();
      return 3;
    }
    // Can't release a kptr that's still stored in a map.
    line = __LINE__ + 1;
    bpf_task_release(local);
    bpf_rcu_read_unlock();
    return 0;
  });
  const prog_run_result r = p.run(init_, victim);
  EXPECT_EQ(r.ret, 0);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::release_untrusted);
  EXPECT_EQ(v.message, "R1 must be referenced or trusted");
  EXPECT_EQ(v.kfunc, "bpf_task_release");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(rcu_users(victim), 3U) << "the map's reference was not released by the program";
  map.reset();
  EXPECT_EQ(rcu_users(victim), 2U) << "the map released it, once";
}

// A sleepable program reads a slot outside any RCU section: an untrusted pointer.
TEST_F(ProgTest, AcquireOfASlotReadOutsideRcuInASyscallProgram) {
  task_struct* victim = Fork("victim", init_);
  task_map map(k_, 16);
  Stash(map, victim);
  const pid_t key = victim->pid;
  unsigned line = 0;
  task_struct* acquired = victim;
  unsigned after = 0;
  bpf_prog p(k_, prog_type::syscall, "syscall", [&](task_struct*) {
    bpf_rcu_read_lock();
    task_value* v = bpf_map_lookup_elem(&map, &key);
    bpf_rcu_read_unlock();
    if (v == nullptr) {
      return 1;
    }
    task_struct* kptr = v->task.get();  // outside RCU
    if (kptr == nullptr) {
      return 2;
    }
    line = __LINE__ + 1;
    acquired = bpf_task_acquire(kptr);
    after = rcu_users(kptr);
    if (acquired != nullptr) {
      bpf_task_release(acquired);
    }
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_EQ(r.ret, 0);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::untrusted_arg);
  EXPECT_EQ(v.message, "R1 must be a rcu pointer");
  EXPECT_EQ(v.kfunc, "bpf_task_acquire");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(acquired, nullptr) << "vetoed";
  EXPECT_EQ(after, 3U) << "the acquire was not carried out";
  EXPECT_EQ(rcu_users(victim), 3U);
}

// The same read, of a task the program stashed itself: moving a reference into a
// slot is not releasing it, and the fresh read is still an untrusted pointer.
TEST_F(ProgTest, AcquireOfASlotReadOutsideRcuOfATaskTheProgramStashedItself) {
  task_struct* victim = Fork("victim", init_);
  task_map map(k_, 16);
  const pid_t key = victim->pid;
  unsigned line = 0;
  task_struct* acquired = victim;
  bpf_prog p(k_, prog_type::syscall, "syscall", [&](task_struct*) {
    const task_value empty{};
    if (bpf_map_update_elem(&map, &key, &empty, BPF_NOEXIST) != 0) {
      return 1;
    }
    bpf_rcu_read_lock();
    task_value* v = bpf_map_lookup_elem(&map, &key);
    bpf_rcu_read_unlock();
    if (v == nullptr) {
      return 2;
    }
    task_struct* ref = bpf_task_from_pid(key);
    if (ref == nullptr) {
      return 3;
    }
    if (task_struct* old = bpf_kptr_xchg(&v->task, ref); old != nullptr) {
      bpf_task_release(old);
    }
    task_struct* kptr = v->task.get();  // outside RCU
    line = __LINE__ + 1;
    acquired = bpf_task_acquire(kptr);
    if (acquired != nullptr) {
      bpf_task_release(acquired);
    }
    return 0;
  });
  const prog_run_result r = p.run(init_);
  EXPECT_EQ(r.ret, 0);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(to_string(v.kind), std::string_view("untrusted_arg")) << v.message;
  EXPECT_EQ(v.message, "R1 must be a rcu pointer");
  EXPECT_EQ(v.kfunc, "bpf_task_acquire");
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(acquired, nullptr);
  EXPECT_EQ(rcu_users(victim), 3U) << "the map holds the stashed reference";
}

// task_kfunc_from_lsm_task_free: the argument is trusted but not RCU-safe.
TEST_F(ProgTest, AcquireOfTheTaskFreeArgument) {
  task_struct* victim = Fork("victim", init_);
  unsigned line = 0;
  task_struct* acquired = victim;
  bpf_prog p(k_, prog_type::lsm, "lsm/task_free", [&](task_struct* task) {
    line = __LINE__ + 1;
    acquired = bpf_task_acquire(task);
    if (acquired == nullptr) {
      return 0;
    }
    bpf_task_release(acquired);
    return 0;
  });
  const prog_run_result r = p.run(init_, victim);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::untrusted_arg);
  EXPECT_EQ(v.message, "R1 must be a rcu pointer");
  EXPECT_EQ(v.kfunc, "bpf_task_acquire");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(acquired, nullptr);
  EXPECT_EQ(rcu_users(victim), 2U);
}

// task_kfunc_acquire_unsafe_kretprobe, as a kprobe program.
TEST_F(ProgTest, KfuncNotAllowedFromAKprobe) {
  EXPECT_FALSE(kfunc_allowed(prog_type::kprobe, kfunc_id::bpf_task_acquire));
  EXPECT_FALSE(kfunc_allowed(prog_type::kretprobe, kfunc_id::bpf_task_acquire));
  EXPECT_TRUE(kfunc_allowed(prog_type::tracing, kfunc_id::bpf_task_acquire));
  EXPECT_TRUE(kfunc_allowed(prog_type::kprobe, kfunc_id::bpf_kptr_xchg));
  task_struct* victim = Fork("victim", init_);
  unsigned line = 0;
  task_struct* acquired = victim;
  bpf_prog p(k_, prog_type::kprobe, "kprobe/free_task", [&](task_struct* task) {
    line = __LINE__ + 1;
    acquired = bpf_task_acquire(task);
    if (acquired == nullptr) {
      return 0;
    }
    bpf_task_release(acquired);
    return 0;
  });
  const prog_run_result r = p.run(init_, victim);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::kfunc_not_allowed);
  EXPECT_EQ(v.message, "calling kernel function bpf_task_acquire is not allowed");
  EXPECT_EQ(v.kfunc, "bpf_task_acquire");
  EXPECT_EQ(v.argument, nullptr);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(acquired, nullptr) << "the call did not happen";
  EXPECT_EQ(rcu_users(victim), 2U);
}

TEST_F(ProgTest, UseAfterRelease) {
  task_struct* victim = Fork("victim", init_);
  unsigned release_line = 0;
  unsigned line = 0;
  task_struct* again = victim;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    task_struct* acquired = bpf_task_from_pid(victim->pid);
    if (acquired == nullptr) {
      return 1;
    }
    release_line = __LINE__ + 1;
    bpf_task_release(acquired);
    line = __LINE__ + 1;
    again = bpf_task_acquire(acquired);
    if (again != nullptr) {
      bpf_task_release(again);
    }
    return 0;
  });
  const prog_run_result r = p.run(init_, init_);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::use_after_release);
  EXPECT_EQ(v.message,
            "R1 invalid mem access 'scalar' (reference id=1 to this task was released at " +
                At(release_line) + ")");
  EXPECT_EQ(v.kfunc, "bpf_task_acquire");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(again, nullptr);
  EXPECT_EQ(rcu_users(victim), 2U);
}

TEST_F(ProgTest, DoubleRelease) {
  task_struct* victim = Fork("victim", init_);
  unsigned acquire_line = 0;
  unsigned release_line = 0;
  unsigned line = 0;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    acquire_line = __LINE__ + 1;
    task_struct* acquired = bpf_task_from_pid(victim->pid);
    if (acquired == nullptr) {
      return 1;
    }
    release_line = __LINE__ + 1;
    bpf_task_release(acquired);
    line = __LINE__ + 1;
    bpf_task_release(acquired);
    return 0;
  });
  const prog_run_result r = p.run(init_, init_);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::double_release);
  EXPECT_THAT(
      v.message,
      StartsWith("release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID"));
  EXPECT_EQ(v.message,
            "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID (reference "
            "id=1 acquired by bpf_task_from_pid at " +
                At(acquire_line) + " was already released at " + At(release_line) + ")");
  EXPECT_EQ(v.kfunc, "bpf_task_release");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(rcu_users(victim), 2U) << "released once, not twice";
}

// bpf_kptr_xchg's second argument must carry a reference to move into the slot.
TEST_F(ProgTest, XchgOfAnUnreferencedPointer) {
  task_struct* victim = Fork("victim", init_);
  task_map map(k_, 16);
  unsigned line = 0;
  task_struct* old = victim;
  task_struct* in_slot = victim;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    const pid_t key = task->pid;
    const task_value empty{};
    if (bpf_map_update_elem(&map, &key, &empty, BPF_NOEXIST) != 0) {
      return 1;
    }
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v == nullptr) {
      return 2;
    }
    line = __LINE__ + 1;
    old = bpf_kptr_xchg(&v->task, task);  // trusted, but not acquired
    in_slot = v->task.get();
    return 0;
  });
  const prog_run_result r = p.run(init_, victim);
  EXPECT_EQ(r.ret, 0);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::xchg_unreferenced);
  EXPECT_EQ(v.message, "R2 must be referenced when passed to release function");
  EXPECT_EQ(v.kfunc, "bpf_kptr_xchg");
  EXPECT_EQ(v.argument, victim);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_EQ(old, nullptr);
  EXPECT_EQ(in_slot, nullptr) << "the exchange did not happen";
  EXPECT_EQ(rcu_users(victim), 2U);
}

TEST_F(ProgTest, RcuReadUnlockMissing) {
  bool held_inside = false;
  bpf_prog p(k_, prog_type::syscall, "syscall", [&](task_struct*) {
    bpf_rcu_read_lock();
    held_inside = k_.rcu().rcu_read_lock_held();
    return 0;  // no bpf_rcu_read_unlock
  });
  const unsigned run_line = __LINE__ + 1;
  const prog_run_result r = p.run(init_);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::rcu_lock_missing);
  EXPECT_EQ(v.message, "bpf_rcu_read_unlock is missing");
  EXPECT_EQ(v.kfunc, "");
  EXPECT_EQ(v.argument, nullptr);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), run_line);
  EXPECT_TRUE(held_inside);
  EXPECT_FALSE(RcuHeldOutsidePrograms()) << "the runner left the section the program left open";
}

TEST_F(ProgTest, RcuReadUnlockUnmatched) {
  unsigned line = 0;
  bool held_after = false;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    line = __LINE__ + 1;
    bpf_rcu_read_unlock();
    held_after = k_.rcu().rcu_read_lock_held();
    return 0;
  });
  const prog_run_result r = p.run(init_, init_);
  ASSERT_EQ(r.violations.size(), 1U) << Describe(r);
  const violation& v = r.violations[0];
  EXPECT_EQ(v.kind, violation_kind::rcu_unlock_unmatched);
  EXPECT_EQ(v.message, "unmatched rcu read unlock");
  EXPECT_EQ(v.kfunc, "bpf_rcu_read_unlock");
  EXPECT_EQ(v.argument, nullptr);
  EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
  EXPECT_EQ(v.where.line(), line);
  EXPECT_TRUE(held_after) << "the program's implicit RCU section was not left";
  EXPECT_FALSE(RcuHeldOutsidePrograms());
}

// ---- reporting modes --------------------------------------------------------------------------

TEST_F(ProgTest, RecordModeKeepsRunningAndRecordsEveryViolationInOrder) {
  task_struct* victim = Fork("victim", init_);
  bool finished = false;
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    bpf_task_release(task);                                // release_unacquired
    (void)bpf_task_acquire(nullptr);                       // null_arg
    task_struct* leaked = bpf_task_from_pid(victim->pid);  // unreleased_ref
    (void)leaked;
    finished = true;
    return 7;
  });
  EXPECT_EQ(p.mode(), checker_mode::record);
  const prog_run_result r = p.run(init_, init_);
  EXPECT_TRUE(finished) << "a recorded violation does not stop the program";
  EXPECT_EQ(r.ret, 7);
  ASSERT_EQ(r.violations.size(), 3U) << Describe(r);
  EXPECT_EQ(r.violations[0].kind, violation_kind::release_unacquired);
  EXPECT_EQ(r.violations[1].kind, violation_kind::null_arg);
  EXPECT_EQ(r.violations[2].kind, violation_kind::unreleased_ref);
  EXPECT_EQ(r.violations[2].argument, victim);
  EXPECT_EQ(rcu_users(init_), 2U);
  EXPECT_EQ(rcu_users(victim), 2U);
}

TEST_F(ProgTest, AttachedProgramReportsToTheSink) {
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    (void)bpf_task_acquire(task);
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  ASSERT_EQ(f.result.violations.size(), 1U) << Describe(f.result);
  EXPECT_EQ(f.result.violations[0].kind, violation_kind::unreleased_ref);
  EXPECT_EQ(f.result.violations[0].argument, f.child);
  EXPECT_EQ(rcu_users(f.child), 2U);
}

TEST_F(ProgTest, ThrowErrorModeThrowsOutOfRunAndStillReleasesWhatTheProgramHeld) {
  task_struct* victim = Fork("victim", init_);
  unsigned line = 0;
  unsigned held = 0;
  bool went_on = false;
  bpf_prog p(
      k_, prog_type::tracing, "tp_btf/task_newtask",
      [&](task_struct* task) {
        task_struct* ref = bpf_task_from_pid(victim->pid);
        held = rcu_users(victim);
        line = __LINE__ + 1;
        bpf_task_release(task);  // throws
        went_on = true;
        bpf_task_release(ref);
        return 0;
      },
      checker_mode::throw_error);
  EXPECT_EQ(p.mode(), checker_mode::throw_error);
  bool caught = false;
  try {
    (void)p.run(init_, init_);
  } catch (const verifier_error& e) {
    caught = true;
    EXPECT_EQ(e.info().kind, violation_kind::release_unacquired);
    EXPECT_EQ(e.info().kfunc, "bpf_task_release");
    EXPECT_EQ(e.info().argument, init_);
    EXPECT_EQ(e.info().where.line(), line);
    EXPECT_THAT(e.what(), HasSubstr("release kernel function bpf_task_release expects refcounted"));
    EXPECT_THAT(e.what(), HasSubstr(At(line)));
  }
  EXPECT_TRUE(caught) << "verifier_error thrown out of run()";
  EXPECT_FALSE(went_on) << "the program stopped at the violation";
  EXPECT_EQ(held, 3U);
  EXPECT_EQ(rcu_users(victim), 2U) << "the reference the program held was released";
  EXPECT_EQ(rcu_users(init_), 2U) << "the vetoed release did not happen";
  EXPECT_FALSE(RcuHeldOutsidePrograms()) << "the implicit RCU section was left while unwinding";

  // Nothing of the aborted run is left behind: the next run starts clean.
  bpf_prog clean(k_, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* task) {
    bpf_task_release(bpf_task_acquire(task));
    return 0;
  });
  const prog_run_result r = clean.run(init_, victim);
  EXPECT_TRUE(r.ok()) << Describe(r);
}

TEST_F(ProgTest, ThrowErrorModeReportsAnUnreleasedReferenceAfterReleasingIt) {
  task_struct* victim = Fork("victim", init_);
  bpf_prog p(
      k_, prog_type::tracing, "tp_btf/task_newtask",
      [](task_struct* task) {
        (void)bpf_task_acquire(task);
        return 0;
      },
      checker_mode::throw_error);
  bool caught = false;
  try {
    (void)p.run(init_, victim);
  } catch (const verifier_error& e) {
    caught = true;
    EXPECT_EQ(e.info().kind, violation_kind::unreleased_ref);
    EXPECT_THAT(e.info().message, StartsWith("Unreleased reference id=1"));
    EXPECT_EQ(e.info().argument, victim);
  }
  EXPECT_TRUE(caught);
  EXPECT_EQ(rcu_users(victim), 2U) << "released before the error was thrown";
}

TEST_F(ProgTest, AbortModePrintsTheViolationAndAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  bpf_prog p(k_, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* task) {
    bpf_task_release(task);
    return 0;
  });
  // The same program in record mode names the line the abort message will name.
  const prog_run_result recorded = p.run(init_, init_);
  ASSERT_EQ(recorded.violations.size(), 1U) << Describe(recorded);
  const std::string line = std::to_string(recorded.violations[0].where.line());
  p.set_mode(checker_mode::abort);
  EXPECT_EQ(p.mode(), checker_mode::abort);
  EXPECT_DEATH((void)p.run(init_, init_),
               "tasklife: program 'tp_btf/task_newtask' violates the verifier's rules at "
               ".*prog_test\\.cpp:" +
                   line +
                   ":.*release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID");
  EXPECT_EQ(rcu_users(init_), 2U);
}

TEST_F(ProgTest, CheckerOffReportsNothingAndTheLeakIsReal) {
  task_struct* victim = Fork("victim", init_);
  bpf_prog p(
      k_, prog_type::tracing, "tp_btf/task_newtask",
      [](task_struct* task) {
        (void)bpf_task_acquire(task);  // leaked
        return 0;
      },
      checker_mode::off);
  const prog_run_result r = p.run(init_, victim);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(rcu_users(victim), 3U) << "nobody released it";
  {
    const current_task_scope scope(init_);
    bpf_task_release(victim);  // by hand, outside any program
  }
  EXPECT_EQ(rcu_users(victim), 2U);
}

}  // namespace
}  // namespace tasklife
