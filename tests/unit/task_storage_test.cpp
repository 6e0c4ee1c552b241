// Task local storage (bpf_task_storage_map, bpf_task_storage_get / _delete): the
// kernel's rules from kernel/bpf/bpf_task_storage.c and kernel/fork.c, and the
// selftest program that checks creation on a task being freed
// (task_local_storage_exit_creds.c). Each test ends with the kit's invariant and
// with every value it made destroyed exactly once.
#include <cerrno>
#include <cstdint>
#include <sys/types.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/testing.hpp>

#include "../support/values.hpp"

namespace tasklife {
namespace {

// A value that counts its destructions.
struct counted {
  int tag = 0;
  int* destroyed = nullptr;
  counted() = default;
  counted(int t, int* d) : tag(t), destroyed(d) {}
  counted(const counted&) = default;
  counted& operator=(const counted&) = default;
  ~counted() {
    if (destroyed != nullptr) {
      ++*destroyed;
    }
  }
};

class TaskStorageTest : public testkit::kernel_test,
                        public ::testing::WithParamInterface<semantics_profile> {
 protected:
  kernel_config config() const override { return {.name = "storage", .profile = GetParam()}; }
  // Runs `body` as `as` inside an RCU section, as a program would.
  template <class Body>
  void InSection(task_struct* as, Body body) {
    const current_task_scope scope(as);
    const rcu_read_guard guard(k().rcu());
    body();
  }
};

std::string ProfileName(const ::testing::TestParamInfo<semantics_profile>& info) {
  return std::string(to_string(info.param));
}

// Without F_CREATE nothing is made; with it one value per task and map, found
// again by later gets; a bad flag gives NULL; delete removes it (-ENOENT the
// second time) and frees it after a grace period.
TEST_P(TaskStorageTest, GetCreatesOneValuePerTaskAndDeleteFreesAfterAGracePeriod) {
  task_struct* t = fork_task("t");
  task_struct* u = fork_task("u");
  int destroyed = 0;
  {
    bpf_task_storage_map<counted> map(k(), "ids");
    const counted init(7, &destroyed);
    InSection(t, [&] {
      EXPECT_EQ(bpf_task_storage_get(&map, t, &init, 0), nullptr);
      counted* v = bpf_task_storage_get(&map, t, &init, BPF_LOCAL_STORAGE_GET_F_CREATE);
      ASSERT_NE(v, nullptr);
      EXPECT_EQ(v->tag, 7);
      EXPECT_EQ(bpf_task_storage_get(&map, t, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE), v);
      EXPECT_EQ(bpf_task_storage_get(&map, t, nullptr, 0), v);
      counted* w = bpf_task_storage_get(&map, u, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE);
      ASSERT_NE(w, nullptr);
      EXPECT_NE(w, v);
      EXPECT_EQ(w->tag, 0) << "no initial value: value-initialized";
      EXPECT_EQ(bpf_task_storage_get(&map, t, nullptr, 2), nullptr) << "flags beyond F_CREATE";
      EXPECT_EQ(bpf_task_storage_get(&map, nullptr, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE),
                nullptr);
      EXPECT_EQ(map.size(), 2U);
      EXPECT_EQ(bpf_task_storage_delete(&map, t), 0);
      EXPECT_EQ(bpf_task_storage_delete(&map, t), -ENOENT);
      EXPECT_EQ(bpf_task_storage_delete(&map, nullptr), -EINVAL);
      EXPECT_EQ(v->tag, 7) << "a deleted value is readable until the section ends";
    });
    EXPECT_EQ(destroyed, 0) << "the delete's free waits for a grace period";
    k().rcu().rcu_barrier();
    EXPECT_EQ(destroyed, 1);
    EXPECT_EQ(map.size(), 1U);
  }  // the map's destruction frees u's value after a grace period
  k().rcu().rcu_barrier();
  EXPECT_EQ(destroyed, 2) << "every value destroyed exactly once";
  retire({t, u});
}

// free_task's bpf_task_storage_free: the storage lives as long as the task's
// memory. A usage holder keeps it past the task's grace period; the last put
// frees it with the task.
TEST_P(TaskStorageTest, AUsageHolderKeepsTheStoragePastTheGracePeriod) {
  task_struct* reader = fork_task("reader");
  task_struct* t = fork_task("t");
  int destroyed = 0;
  bpf_task_storage_map<counted> map(k(), "kept");
  const counted init(42, &destroyed);
  InSection(t, [&] {
    ASSERT_NE(bpf_task_storage_get(&map, t, &init, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
  });
  get_task_struct(t);  // a usage holder
  const kernel_stats before = k().stats();
  retire(t);
  k().rcu().rcu_barrier();  // rcu_users' grace period is over: only the holder keeps t
  // Counted, not asked with is_freed(): the unchecked tier remembers no freed task.
  ASSERT_EQ(k().stats().freed, before.freed);
  EXPECT_EQ(destroyed, 0);
  InSection(reader, [&] {
    const counted* v = bpf_task_storage_get(&map, t, nullptr, 0);
    ASSERT_NE(v, nullptr) << "the storage is the task's memory's";
    EXPECT_EQ(v->tag, 42);
  });
  put_task_struct(t);  // the last put: free_task (after a grace period in newest)
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, before.freed + 1) << "t, and only t";
  EXPECT_EQ(destroyed, 1) << "freed with the task, once";
  EXPECT_EQ(map.size(), 0U);
  retire(reader);
}

// task_local_storage_exit_creds.c, trace_exit_creds: a program that runs while
// the task is being freed (usage already 0) and asks for storage with F_CREATE
// gets NULL ("only allocate new storage, when the task is refcounted"); storage
// made before is still there until the free. Here the program holds only RCU on
// a task whose last put is deferred (v6.17's call_rcu, kernel_config::final_put).
TEST_P(TaskStorageTest, TraceExitCreds) {
  remake({.name = "storage", .profile = GetParam(), .final_put = final_put_mode::deferred});
  task_struct* reader = fork_task("reader");
  task_struct* t = fork_task("t");
  task_struct* other = fork_task("other");
  int destroyed = 0;
  bpf_task_storage_map<counted> made(k(), "made");
  bpf_task_storage_map<counted> late(k(), "late");
  const counted init(1, &destroyed);
  InSection(t, [&] {
    ASSERT_NE(bpf_task_storage_get(&made, t, &init, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
  });
  get_task_struct(t);
  const kernel_stats before = k().stats();
  retire(t);
  k().rcu().rcu_barrier();
  int null_ptr_count = 0;
  int valid_ptr_count = 0;
  InSection(reader, [&] {
    put_task_struct(t);  // usage 0: the free waits for this section's grace period
    EXPECT_EQ(refcount_read(&t->usage), 0U);
    if (bpf_task_storage_get(&late, t, &init, BPF_LOCAL_STORAGE_GET_F_CREATE) == nullptr) {
      ++null_ptr_count;
    } else {
      ++valid_ptr_count;
    }
    EXPECT_NE(bpf_task_storage_get(&made, t, nullptr, 0), nullptr)
        << "what was made while refcounted lives until free_task";
    // A live task of the same program still gets storage.
    EXPECT_NE(bpf_task_storage_get(&late, other, &init, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
  });
  EXPECT_EQ(null_ptr_count, 1);
  EXPECT_EQ(valid_ptr_count, 0);
  EXPECT_EQ(late.size(), 1U) << "only the live task's";
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, before.freed + 1) << "t, and only t";
  EXPECT_EQ(destroyed, 1) << "t's value went with t";
  retire({reader, other});
  k().rcu().rcu_barrier();
  EXPECT_EQ(destroyed, 2) << "other's value went with other";
}

// Checked builds: the storage of a freed task is not reachable: the helpers
// report the task as a use-after-free instead of touching it.
TEST_P(TaskStorageTest, StorageOfAFreedTaskIsAUseAfterFree) {
  TASKLIFE_REQUIRE_CHECKS(check_level::full);
  task_struct* reader = fork_task("reader");
  task_struct* t = fork_task("gone");
  bpf_task_storage_map<counted> map(k(), "stale");
  InSection(t, [&] {
    ASSERT_NE(bpf_task_storage_get(&map, t, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
  });
  retire(t);
  k().rcu().rcu_barrier();
  ASSERT_TRUE(k().is_freed(t));
  EXPECT_EQ(map.size(), 0U);
  InSection(reader, [&] {
    EXPECT_CONTRACT_VIOLATION(EXPECT_EQ(bpf_task_storage_get(&map, t, nullptr, 0), nullptr),
                              testkit::violation_spec(contract_kind::use_after_free));
    EXPECT_CONTRACT_VIOLATION(EXPECT_EQ(bpf_task_storage_delete(&map, t), -EINVAL),
                              testkit::violation_spec(contract_kind::use_after_free));
  });
  retire(reader);
}

// The helpers need an RCU section (WARN_ON_ONCE(!bpf_rcu_lock_held())).
TEST_P(TaskStorageTest, OutsideRcuIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("t");
  {
    bpf_task_storage_map<counted> map(k(), "norcu");
    const current_task_scope scope(t);
    EXPECT_CONTRACT_VIOLATION(
        EXPECT_EQ(bpf_task_storage_get(&map, t, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr),
        "outside an RCU read-side section");
    EXPECT_EQ(map.size(), 0U) << "refused: nothing made";
  }
  retire(t);
}

// The helpers' task is ARG_PTR_TO_BTF_ID_OR_NULL: the verifier takes NULL and a
// pointer it types ptr_, trusted_ptr_ or rcu_ptr_ (btf_ptr_types: the argument, a
// walked field, a task the iterator yields), and refuses an untrusted one (a field
// walked outside any RCU section) and a released reference (a scalar by then).
TEST_P(TaskStorageTest, TheTaskArgumentIsCheckedAsTheVerifierTypesIt) {
  task_struct* init = fork_task("init");
  task_struct* child = fork_task("child", init);
  task_struct* other = fork_task("other", init);
  int destroyed = 0;
  int made = 0;
  const counted value(1, &destroyed);
  bpf_task_storage_map<counted> map(k(), "typed");
  const pid_t other_pid = other->pid;
  const bool iterator = kfunc_exists(GetParam(), kfunc_id::bpf_iter_task_new);
  bpf_prog accepted(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    EXPECT_NE(bpf_task_storage_get(&map, task, &value, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
    ++made;
    EXPECT_EQ(bpf_task_storage_get(&map, nullptr, &value, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
    task_struct* parent = btf_walk(task, &task_struct::real_parent);  // rcu_ptr_
    EXPECT_NE(bpf_task_storage_get(&map, parent, &value, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
    ++made;
    EXPECT_EQ(bpf_task_storage_delete(&map, parent), 0);
    if (iterator) {  // a task the walk yields is an RCU pointer
      bpf_iter_task it;
      (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS);
      while (task_struct* t = bpf_iter_task_next(&it)) {
        if (t == other) {
          EXPECT_NE(bpf_task_storage_get(&map, t, &value, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
          ++made;
          EXPECT_EQ(bpf_task_storage_delete(&map, t), 0);
        }
      }
      bpf_iter_task_destroy(&it);
    }
    return 0;
  });
  const prog_run_result ok = accepted.run(child, child);
  EXPECT_TRUE(ok.violations.empty()) << ::testing::PrintToString(ok.violations);
  EXPECT_EQ(map.size(), 1U) << "the argument's value";

  bpf_prog released(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    task_struct* t = bpf_task_from_pid(other_pid);
    if (t != nullptr) {
      bpf_task_release(t);
      EXPECT_EQ(bpf_task_storage_get(&map, t, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
    }
    return 0;
  });
  const prog_run_result r = released.run(child, child);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::use_after_release,
                                       "R2 type=scalar expected=ptr_, trusted_ptr_, rcu_ptr_"));

  // A sleepable program outside bpf_rcu_read_lock: the walked field is untrusted.
  bpf_prog untrusted(k(), prog_type::syscall, "syscall", [&](task_struct*) {
    task_struct* parent = btf_walk(bpf_get_current_task_btf(), &task_struct::real_parent);
    EXPECT_EQ(bpf_task_storage_delete(&map, parent), -EINVAL);
    return 0;
  });
  const prog_run_result u = untrusted.run(child);
  EXPECT_THAT(
      u, testkit::HasViolation(violation_kind::untrusted_arg,
                               "R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"));
  EXPECT_EQ(u.violations.size(), 1U) << "refused before the RCU check: nothing else reported";
  EXPECT_EQ(map.size(), 1U) << "neither refused call made or removed anything";
  retire({child, other, init});
  k().rcu().rcu_barrier();
  EXPECT_EQ(made, iterator ? 3 : 2);
  EXPECT_EQ(destroyed, made) << "every value made destroyed exactly once";
}

// A reference moved into a map's slot (bpf_kptr_xchg) is no longer the program's:
// its register is a scalar, refused as a released one is.
TEST_P(TaskStorageTest, AReferenceMovedIntoASlotIsRefused) {
  task_struct* child = fork_task("child");
  task_struct* other = fork_task("other");
  int destroyed = 0;
  const counted value(1, &destroyed);
  const pid_t other_pid = other->pid;
  {
    bpf_task_storage_map<counted> map(k(), "moved");
    bpf_array_map<test::task_value> slots(k(), 1);
    bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
      const std::uint32_t key = 0;
      test::task_value* v = bpf_map_lookup_elem(&slots, &key);
      task_struct* t = bpf_task_from_pid(other_pid);
      if (v != nullptr && t != nullptr) {
        EXPECT_EQ(bpf_kptr_xchg(&v->task, t), nullptr);
        EXPECT_EQ(bpf_task_storage_get(&map, t, &value, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
      } else if (t != nullptr) {
        bpf_task_release(t);
      }
      return 0;
    });
    const prog_run_result r = p.run(child, child);
    EXPECT_THAT(r, testkit::HasViolation(violation_kind::use_after_release,
                                         "R2 type=scalar expected=ptr_, trusted_ptr_, rcu_ptr_"));
    EXPECT_THAT(r.violations.front().message, ::testing::HasSubstr("moved into a slot"));
    EXPECT_EQ(map.size(), 0U) << "refused: nothing made";
  }  // the slot's reference is released with the array
  retire({child, other});
  k().rcu().rcu_barrier();
  EXPECT_EQ(destroyed, 0);
}

// A pointer that is no task (the stack's fp) is refused by its type; only checked
// builds know their tasks from other memory.
TEST_P(TaskStorageTest, APointerThatIsNoTaskIsRefusedByItsType) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* child = fork_task("child");
  bpf_task_storage_map<counted> map(k(), "fp");
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    long on_stack[64] = {};
    auto* fake = reinterpret_cast<task_struct*>(on_stack);
    EXPECT_EQ(bpf_task_storage_get(&map, fake, nullptr, BPF_LOCAL_STORAGE_GET_F_CREATE), nullptr);
    return 0;
  });
  const prog_run_result r = p.run(child, child);
  EXPECT_THAT(r, testkit::HasViolation(violation_kind::arg_type_mismatch,
                                       "R2 type=fp expected=ptr_, trusted_ptr_, rcu_ptr_"));
  EXPECT_EQ(map.size(), 0U);
  retire(child);
}

INSTANTIATE_TEST_SUITE_P(Profiles, TaskStorageTest,
                         ::testing::Values(semantics_profile::rcu_safe, semantics_profile::current,
                                           semantics_profile::newest),
                         ProfileName);

}  // namespace
}  // namespace tasklife
