// Task local storage (bpf_task_storage_map, bpf_task_storage_get / _delete): the
// kernel's rules from kernel/bpf/bpf_task_storage.c and kernel/fork.c, and the
// selftest program that checks creation on a task being freed
// (task_local_storage_exit_creds.c). Each test ends with the kit's invariant and
// with every value it made destroyed exactly once.
#include <cstdint>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/testing.hpp>

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
  retire(t);
  k().rcu().rcu_barrier();  // rcu_users' grace period is over: only the holder keeps t
  ASSERT_FALSE(k().is_freed(t));
  EXPECT_EQ(destroyed, 0);
  InSection(reader, [&] {
    const counted* v = bpf_task_storage_get(&map, t, nullptr, 0);
    ASSERT_NE(v, nullptr) << "the storage is the task's memory's";
    EXPECT_EQ(v->tag, 42);
  });
  put_task_struct(t);  // the last put: free_task (after a grace period in newest)
  k().rcu().rcu_barrier();
  EXPECT_TRUE(k().is_freed(t));
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
  EXPECT_TRUE(k().is_freed(t));
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

INSTANTIATE_TEST_SUITE_P(Profiles, TaskStorageTest,
                         ::testing::Values(semantics_profile::rcu_safe, semantics_profile::current,
                                           semantics_profile::newest),
                         ProfileName);

}  // namespace
}  // namespace tasklife
