// The map layer against the kernel: hashtab.c and arraymap.c return codes, kptr
// slots that copying and assigning never touch, every path that frees a stashed
// reference (delete, update-replace, array update, map destruction, bpf_obj_drop,
// nested local objects), the grace period that keeps a deleted element readable,
// the xchg-after-delete rule, and the misuse that checked builds report.
// docs/kernel.md §6 (kptrs in maps) is the specification.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/task.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/threads.hpp"

namespace tasklife {
namespace {

using test::give_others_a_chance;
using test::wait_for;

// `struct { struct task_struct __kptr *task; int tag; }`
struct task_value {
  kptr<task_struct> task;
  int tag = 0;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

// Two referenced slots with a plain field between them.
struct pair_value {
  kptr<task_struct> first;
  int tag = 0;
  kptr<task_struct> second;
  static constexpr auto kptr_fields = std::make_tuple(&pair_value::first, &pair_value::second);
};

// A program-allocated object (bpf_obj_new) holding a task: of the map value's type,
// as test_task_xchg_release (progs/task_kfunc_success.c) allocates it.
using local_obj = task_value;

// A map value holding a local object (`struct local_obj __kptr *obj`).
struct obj_value {
  kptr<local_obj> obj;
  int tag = 0;
  static constexpr auto kptr_fields = std::make_tuple(&obj_value::obj);
};

// Every key in one bucket: the list walks, unlinks and replacements in the middle.
struct one_bucket_hash {
  std::size_t operator()(int) const noexcept { return 0; }
};

// Plain stores into a kptr field are impossible (the verifier rejects them); only
// bpf_kptr_xchg stores. Values stay copyable: copy_map_value skips the slots.
static_assert(!std::is_assignable_v<kptr<task_struct>&, task_struct*>, "no plain store");
static_assert(!std::is_constructible_v<kptr<task_struct>, task_struct*>, "no plain init");
static_assert(std::is_copy_constructible_v<kptr<task_struct>>);
static_assert(std::is_copy_assignable_v<kptr<task_struct>>);
static_assert(std::is_copy_assignable_v<task_value>);

task_value with_tag(int tag) {
  task_value v;
  v.tag = tag;
  return v;
}

template <class T>
bool registered(const kptr<T>* slot) {
  return detail::kptr_region_contains(slot, sizeof(*slot));
}

// The test body runs as a BPF program of task `prog` (kfuncs need current).
class MapTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "map-test"}; }
  const char* body_task_comm() const override { return "prog"; }

  // The selftests' idiom: acquire a reference, xchg it into an empty slot.
  static void Stash(kptr<task_struct>* slot, task_struct* t) {
    task_struct* ref = bpf_task_acquire(t);
    ASSERT_EQ(ref, t);
    task_struct* old = bpf_kptr_xchg(slot, ref);
    EXPECT_EQ(old, nullptr) << "the slot was empty";
    if (old != nullptr) {
      bpf_task_release(old);
    }
  }

  // A map `make` creates holds a reference to each of two tasks in the values it
  // returns; the map is destroyed inside a read-side section: each reference is
  // released exactly once, at destruction, and the values' memory stays readable
  // until the section ends.
  template <class Make>
  void ExpectDestructionReleasesBothOnce(Make make) {
    task_struct* a = fork_task("a");
    task_struct* b = fork_task("b");
    const unsigned before_a = rcu_users(a);
    const unsigned before_b = rcu_users(b);
    {
      const rcu_read_guard g(k().rcu());
      auto [map, va, vb] = make();
      ASSERT_TRUE(va != nullptr && vb != nullptr);
      Stash(&va->task, a);
      Stash(&vb->task, b);
      EXPECT_EQ(rcu_users(a), before_a + 1);
      EXPECT_EQ(rcu_users(b), before_b + 1);
      const int tag = va->tag;
      map.reset();  // the values' memory waits for the grace period
      EXPECT_EQ(rcu_users(a), before_a) << "freed at destruction, once";
      EXPECT_EQ(rcu_users(b), before_b);
      EXPECT_EQ(va->task.get(), nullptr);
      EXPECT_EQ(vb->task.get(), nullptr);
      EXPECT_EQ(va->tag, tag) << "memory still there inside the read section";
    }
    k().rcu().rcu_barrier();
    EXPECT_EQ(rcu_users(a), before_a);
    EXPECT_EQ(rcu_users(b), before_b);
    retire({a, b});
  }
};

// A task, a hash map with element 1 (tag kTag) and an array of two, in whose values
// the test stashes references to the task, inside its own read-side section
// (StashInElementOne, StashInArray). At the end the maps are destroyed: the task's
// rcu_users must be back where they started.
class MapElementTest : public MapTest {
 protected:
  static constexpr int kTag = 7;
  void SetUp() override {
    MapTest::SetUp();
    task_ = fork_task("stashed");
    map_.emplace(k(), 4);
    array_.emplace(k(), 2);
    ASSERT_EQ(map_->update_elem(1, with_tag(kTag), BPF_NOEXIST), 0);
    before_ = rcu_users(task_);
  }
  void TearDown() override {
    map_.reset();
    array_.reset();
    k().rcu().rcu_barrier();
    if (task_ != nullptr) {
      EXPECT_EQ(rcu_users(task_), before_) << "every reference released exactly once";
      retire(task_);
    }
    MapTest::TearDown();
  }
  // Element 1 of the hash map, or element `index` of the array, its slot now
  // holding a reference to task_.
  task_value* StashInElementOne() { return StashIn(map_->lookup_elem(1)); }
  task_value* StashInArray(std::uint32_t index) { return StashIn(array_->lookup_elem(index)); }
  task_value* StashIn(task_value* v) {
    EXPECT_NE(v, nullptr);
    if (v != nullptr) {
      Stash(&v->task, task_);
    }
    return v;
  }

  task_struct* task_ = nullptr;
  std::optional<bpf_hash_map<int, task_value>> map_;
  std::optional<bpf_array_map<task_value>> array_;
  unsigned before_ = 0;
};

// ---- 1. hash map return codes (kernel/bpf/hashtab.c) ---------------------------------------

TEST_F(MapTest, HashUpdateFlagsReturnTheKernelsCodes) {
  bpf_hash_map<int, task_value> map(k(), 4);
  EXPECT_EQ(map.max_entries(), 4U);
  EXPECT_EQ(map.update_elem(1, with_tag(1), BPF_EXIST), -ENOENT) << "BPF_EXIST on an absent key";
  EXPECT_EQ(map.count(), 0U);
  EXPECT_EQ(map.update_elem(1, with_tag(2), BPF_NOEXIST), 0);
  EXPECT_EQ(map.update_elem(1, with_tag(3), BPF_NOEXIST), -EEXIST) << "BPF_NOEXIST, present";
  EXPECT_EQ(map.update_elem(1, with_tag(4), BPF_EXIST), 0);
  EXPECT_EQ(map.update_elem(1, with_tag(5), BPF_ANY), 0) << "BPF_ANY replaces";
  EXPECT_EQ(map.update_elem(2, with_tag(6), BPF_ANY), 0) << "BPF_ANY inserts";
  for (const std::uint64_t bad : {std::uint64_t{3}, std::uint64_t{4}, ~std::uint64_t{0}}) {
    EXPECT_EQ(map.update_elem(1, with_tag(99), bad), -EINVAL) << bad;
    EXPECT_EQ(map.update_elem(7, with_tag(99), bad), -EINVAL) << bad;
  }
  EXPECT_EQ(map.count(), 2U);
  {
    const rcu_read_guard g(k().rcu());
    ASSERT_NE(map.lookup_elem(1), nullptr);
    EXPECT_EQ(map.lookup_elem(1)->tag, 5) << "-EEXIST and -EINVAL changed nothing";
    ASSERT_NE(map.lookup_elem(2), nullptr);
    EXPECT_EQ(map.lookup_elem(2)->tag, 6);
    EXPECT_EQ(map.lookup_elem(7), nullptr) << "absent";
  }
}

TEST_F(MapTest, HashIsFullAtMaxEntriesButReplacingAnExistingKeyStillWorks) {
  bpf_hash_map<int, task_value> map(k(), 2);
  ASSERT_EQ(map.update_elem(1, with_tag(1), BPF_NOEXIST), 0);
  ASSERT_EQ(map.update_elem(2, with_tag(2), BPF_NOEXIST), 0);
  EXPECT_EQ(map.update_elem(3, with_tag(3), BPF_ANY), -E2BIG);
  EXPECT_EQ(map.update_elem(3, with_tag(3), BPF_NOEXIST), -E2BIG);
  EXPECT_EQ(map.update_elem(3, with_tag(3), BPF_EXIST), -ENOENT) << "absence is decided first";
  EXPECT_EQ(map.count(), 2U) << "a refused insert leaves the count alone";
  EXPECT_EQ(map.update_elem(1, with_tag(10), BPF_ANY), 0) << "full, but the key exists";
  EXPECT_EQ(map.update_elem(2, with_tag(20), BPF_EXIST), 0);
  EXPECT_EQ(map.count(), 2U);
  EXPECT_EQ(map.delete_elem(1), 0);
  EXPECT_EQ(map.count(), 1U);
  EXPECT_EQ(map.update_elem(3, with_tag(30), BPF_NOEXIST), 0) << "room again after the delete";
  EXPECT_EQ(map.update_elem(4, with_tag(40), BPF_ANY), -E2BIG);
  const rcu_read_guard g(k().rcu());
  EXPECT_EQ(map.lookup_elem(1), nullptr);
  ASSERT_NE(map.lookup_elem(2), nullptr);
  EXPECT_EQ(map.lookup_elem(2)->tag, 20);
  ASSERT_NE(map.lookup_elem(3), nullptr);
  EXPECT_EQ(map.lookup_elem(3)->tag, 30);
}

TEST_F(MapTest, HashDeleteReturnsZeroOnceThenEnoent) {
  bpf_hash_map<int, task_value> map(k(), 4);
  EXPECT_EQ(map.delete_elem(1), -ENOENT) << "empty map";
  ASSERT_EQ(map.update_elem(1, with_tag(1), BPF_ANY), 0);
  {
    const rcu_read_guard g(k().rcu());
    EXPECT_NE(map.lookup_elem(1), nullptr) << "found";
  }
  EXPECT_EQ(map.delete_elem(1), 0);
  EXPECT_EQ(map.delete_elem(1), -ENOENT);
  EXPECT_EQ(map.count(), 0U);
  const rcu_read_guard g(k().rcu());
  EXPECT_EQ(map.lookup_elem(1), nullptr) << "absent";
}

TEST_F(MapTest, CollidingKeysInOneBucketAreFoundReplacedAndDeletedIndependently) {
  bpf_hash_map<int, task_value, one_bucket_hash> map(k(), 8);
  for (int key = 1; key <= 5; ++key) {
    ASSERT_EQ(map.update_elem(key, with_tag(key), BPF_NOEXIST), 0);
  }
  EXPECT_EQ(map.delete_elem(3), 0) << "the middle of the list";
  EXPECT_EQ(map.delete_elem(5), 0) << "the head";
  EXPECT_EQ(map.delete_elem(1), 0) << "the tail";
  EXPECT_EQ(map.update_elem(2, with_tag(20), BPF_EXIST), 0) << "replaced in place";
  EXPECT_EQ(map.update_elem(4, with_tag(40), BPF_ANY), 0);
  EXPECT_EQ(map.update_elem(6, with_tag(6), BPF_ANY), 0);
  EXPECT_EQ(map.count(), 3U);
  const rcu_read_guard g(k().rcu());
  for (const int gone : {1, 3, 5}) {
    EXPECT_EQ(map.lookup_elem(gone), nullptr) << gone;
  }
  for (const auto& [key, tag] : {std::pair{2, 20}, std::pair{4, 40}, std::pair{6, 6}}) {
    const task_value* v = map.lookup_elem(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(v->tag, tag) << key;
  }
}

TEST_F(MapTest, KernelNamedFunctionsForwardToTheMap) {
  bpf_hash_map<int, task_value> hash(k(), 1);
  const int key = 42;
  const int other = 43;
  const task_value value = with_tag(7);
  EXPECT_EQ(bpf_map_update_elem(&hash, &key, &value, BPF_EXIST), -ENOENT);
  EXPECT_EQ(bpf_map_update_elem(&hash, &key, &value, BPF_NOEXIST), 0);
  EXPECT_EQ(bpf_map_update_elem(&hash, &key, &value, BPF_NOEXIST), -EEXIST);
  EXPECT_EQ(bpf_map_update_elem(&hash, &other, &value, BPF_ANY), -E2BIG);
  EXPECT_EQ(bpf_map_update_elem(&hash, &key, &value, 3), -EINVAL);
  {
    const rcu_read_guard g(k().rcu());
    task_value* v = bpf_map_lookup_elem(&hash, &key);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->tag, 7);
    EXPECT_EQ(bpf_map_lookup_elem(&hash, &other), nullptr);
  }
  EXPECT_EQ(bpf_map_delete_elem(&hash, &key), 0);
  EXPECT_EQ(bpf_map_delete_elem(&hash, &key), -ENOENT);

  bpf_array_map<task_value> array(k(), 2);
  const std::uint32_t in = 1;
  const std::uint32_t out = 2;
  EXPECT_EQ(bpf_map_update_elem(&array, &in, &value, BPF_ANY), 0);
  EXPECT_EQ(bpf_map_update_elem(&array, &out, &value, BPF_ANY), -E2BIG);
  EXPECT_EQ(bpf_map_delete_elem(&array, &in), -EINVAL);
  const rcu_read_guard g(k().rcu());
  ASSERT_NE(bpf_map_lookup_elem(&array, &in), nullptr);
  EXPECT_EQ(bpf_map_lookup_elem(&array, &in)->tag, 7);
  EXPECT_EQ(bpf_map_lookup_elem(&array, &out), nullptr);
}

// ---- 2. array map (kernel/bpf/arraymap.c) -----------------------------------------------------

TEST_F(MapTest, ArrayLookupUpdateAndDeleteFollowArraymap) {
  bpf_array_map<task_value> map(k(), 3);
  EXPECT_EQ(map.max_entries(), 3U);
  {
    const rcu_read_guard g(k().rcu());
    for (std::uint32_t i = 0; i < 3; ++i) {
      const task_value* v = map.lookup_elem(i);
      ASSERT_NE(v, nullptr) << "every index exists: " << i;
      EXPECT_EQ(v->tag, 0) << "zeroed at creation";
      EXPECT_EQ(v->task.get(), nullptr);
    }
    EXPECT_EQ(map.lookup_elem(3), nullptr) << "out of range";
    EXPECT_EQ(map.lookup_elem(UINT32_MAX), nullptr);
  }
  EXPECT_EQ(map.update_elem(0, with_tag(1), BPF_ANY), 0);
  EXPECT_EQ(map.update_elem(1, with_tag(2), BPF_EXIST), 0) << "it always exists";
  EXPECT_EQ(map.update_elem(2, with_tag(3), BPF_NOEXIST), -EEXIST) << "it always exists";
  EXPECT_EQ(map.update_elem(3, with_tag(4), BPF_ANY), -E2BIG);
  EXPECT_EQ(map.update_elem(3, with_tag(4), BPF_NOEXIST), -E2BIG) << "range before NOEXIST";
  EXPECT_EQ(map.update_elem(0, with_tag(5), 3), -EINVAL);
  EXPECT_EQ(map.update_elem(9, with_tag(5), 7), -EINVAL) << "flags before range";
  EXPECT_EQ(map.delete_elem(0), -EINVAL) << "arrays cannot delete";
  EXPECT_EQ(map.delete_elem(3), -EINVAL);
  const rcu_read_guard g(k().rcu());
  EXPECT_EQ(map.lookup_elem(0)->tag, 1);
  EXPECT_EQ(map.lookup_elem(1)->tag, 2);
  EXPECT_EQ(map.lookup_elem(2)->tag, 0) << "-EEXIST changed nothing";
}

// ---- 3. copying and assigning values (copy_map_value skips kptr fields) --------------------

TEST_F(MapElementTest, CopyingAValueCopiesNoReference) {
  {
    const rcu_read_guard g(k().rcu());
    task_value* v = StashInElementOne();
    ASSERT_NE(v, nullptr);
    ASSERT_EQ(v->task.get(), task_);

    const task_value copy = *v;
    EXPECT_EQ(copy.task.get(), nullptr) << "the copy's slot is NULL";
    EXPECT_EQ(copy.tag, kTag) << "plain fields are copied";
    EXPECT_EQ(v->task.get(), task_) << "the source keeps its reference";

    // An update from a value with a stashed reference copies no reference either.
    ASSERT_EQ(map_->update_elem(2, *v, BPF_NOEXIST), 0);
    EXPECT_EQ(map_->lookup_elem(2)->task.get(), nullptr);
    EXPECT_EQ(map_->lookup_elem(2)->tag, kTag);
    EXPECT_EQ(rcu_users(task_), before_ + 1) << "one reference: the slot's, never duplicated";
  }
  EXPECT_EQ(map_->delete_elem(2), 0);
  EXPECT_EQ(rcu_users(task_), before_ + 1) << "deleting the copy released nothing";
  EXPECT_EQ(map_->delete_elem(1), 0);
  EXPECT_EQ(rcu_users(task_), before_);
}

TEST_F(MapElementTest, AssigningAValueLeavesTheDestinationSlotAloneUntilArrayUpdateFreesIt) {
  const rcu_read_guard g(k().rcu());
  task_value* v = StashInArray(0);
  ASSERT_NE(v, nullptr);

  *v = with_tag(9);  // a plain assignment, as copy_map_value does
  EXPECT_EQ(v->task.get(), task_) << "the destination's slot is left alone";
  EXPECT_EQ(v->tag, 9);
  EXPECT_EQ(rcu_users(task_), before_ + 1);

  EXPECT_EQ(array_->update_elem(0, with_tag(10), BPF_ANY), 0);  // copy, then free the slots
  EXPECT_EQ(v->task.get(), nullptr) << "array update freed the slot";
  EXPECT_EQ(v->tag, 10);
  EXPECT_EQ(rcu_users(task_), before_) << "released exactly once";
}

// ---- 4. every path that frees a stashed reference -------------------------------------------

TEST_F(MapElementTest, HashDeleteReleasesTheStashedReferenceOnceAndLeavesTheSlotNull) {
  {
    const rcu_read_guard g(k().rcu());  // keeps the deleted element's memory readable
    task_value* v = StashInElementOne();
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(rcu_users(task_), before_ + 1);
    EXPECT_EQ(map_->delete_elem(1), 0);
    EXPECT_EQ(rcu_users(task_), before_) << "the dtor ran at once, exactly once";
    EXPECT_EQ(v->task.get(), nullptr) << "bpf_obj_free_fields xchg'd the slot to NULL";
  }
  k().rcu().rcu_barrier();
  EXPECT_EQ(rcu_users(task_), before_) << "the reclaim released nothing more";
}

TEST_F(MapElementTest, HashUpdateReplaceReleasesTheOldElementsReference) {
  {
    const rcu_read_guard g(k().rcu());
    task_value* old = StashInElementOne();
    ASSERT_NE(old, nullptr);
    EXPECT_EQ(map_->update_elem(1, with_tag(2), BPF_ANY), 0);
    EXPECT_EQ(rcu_users(task_), before_) << "the replaced element's slot was freed at once";
    EXPECT_EQ(old->task.get(), nullptr);
    task_value* fresh = map_->lookup_elem(1);
    ASSERT_NE(fresh, nullptr);
    EXPECT_NE(fresh, old) << "a new element replaced the old one";
    EXPECT_EQ(fresh->task.get(), nullptr) << "the new element's slots start NULL";
    EXPECT_EQ(fresh->tag, 2);
    Stash(&fresh->task, task_);
    EXPECT_EQ(map_->update_elem(1, with_tag(3), BPF_EXIST), 0) << "BPF_EXIST replaces too";
    EXPECT_EQ(fresh->task.get(), nullptr);
    EXPECT_EQ(rcu_users(task_), before_);
  }
  k().rcu().rcu_barrier();
  EXPECT_EQ(rcu_users(task_), before_);
}

TEST_F(MapTest, HashMapDestructionReleasesEveryStashedReference) {
  ExpectDestructionReleasesBothOnce([this] {
    auto map = std::make_unique<bpf_hash_map<int, task_value>>(k(), 8);
    for (int key = 1; key <= 4; ++key) {
      EXPECT_EQ(map->update_elem(key, with_tag(key), BPF_NOEXIST), 0);
    }
    task_value* va = map->lookup_elem(1);
    task_value* vb = map->lookup_elem(3);
    EXPECT_EQ(va != nullptr ? va->tag : 0, 1);
    return std::tuple{std::move(map), va, vb};
  });
}

TEST_F(MapTest, ArrayMapDestructionReleasesEveryStashedReference) {
  ExpectDestructionReleasesBothOnce([this] {
    auto map = std::make_unique<bpf_array_map<task_value>>(k(), 3);
    task_value* v0 = map->lookup_elem(0);
    task_value* v2 = map->lookup_elem(2);
    return std::tuple{std::move(map), v0, v2};
  });
}

TEST_F(MapElementTest, ArrayUpdateReleasesTheStashedReference) {
  const rcu_read_guard g(k().rcu());
  task_value* v = StashInArray(1);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(array_->update_elem(1, with_tag(5), BPF_EXIST), 0);
  EXPECT_EQ(rcu_users(task_), before_);
  EXPECT_EQ(v->task.get(), nullptr);
  EXPECT_EQ(array_->update_elem(1, with_tag(6), BPF_ANY), 0) << "an empty slot: nothing to free";
  EXPECT_EQ(rcu_users(task_), before_);
  EXPECT_EQ(array_->update_elem(2, with_tag(6), BPF_ANY), -E2BIG);
}

TEST_F(MapTest, ValueWithTwoSlotsReleasesEachOnce) {
  task_struct* a = fork_task("a");
  task_struct* b = fork_task("b");
  const unsigned before_a = rcu_users(a);
  const unsigned before_b = rcu_users(b);
  bpf_hash_map<int, pair_value> hash(k(), 2);
  ASSERT_EQ(hash.update_elem(1, pair_value{}, BPF_NOEXIST), 0);
  {
    const rcu_read_guard g(k().rcu());
    pair_value* v = hash.lookup_elem(1);
    ASSERT_NE(v, nullptr);
    Stash(&v->first, a);
    Stash(&v->second, b);
    EXPECT_EQ(hash.delete_elem(1), 0);
    EXPECT_EQ(rcu_users(a), before_a);
    EXPECT_EQ(rcu_users(b), before_b);
    EXPECT_EQ(v->first.get(), nullptr);
    EXPECT_EQ(v->second.get(), nullptr);
  }
  {
    // The same task in both slots: two references, two releases.
    const rcu_read_guard g(k().rcu());
    {
      bpf_array_map<pair_value> array(k(), 1);
      pair_value* v = array.lookup_elem(0);
      Stash(&v->first, a);
      Stash(&v->second, a);
      EXPECT_EQ(rcu_users(a), before_a + 2);
      EXPECT_EQ(array.update_elem(0, pair_value{}, BPF_ANY), 0);
      EXPECT_EQ(rcu_users(a), before_a);
      Stash(&v->second, b);
    }
    EXPECT_EQ(rcu_users(b), before_b) << "destruction freed the second slot";
  }
  k().rcu().rcu_barrier();
  EXPECT_EQ(rcu_users(a), before_a);
  EXPECT_EQ(rcu_users(b), before_b);
  retire({a, b});
}

// test_task_xchg_release (progs/task_kfunc_success.c): a task moved from a map into
// a local object is released by bpf_obj_drop: before == after + 1.
TEST_F(MapTest, ObjDropReleasesTheLocalObjectsTaskOnce) {
  task_struct* t = fork_task("stashed");
  bpf_hash_map<int, task_value> map(k(), 4);
  const unsigned base = rcu_users(t);
  {
    const rcu_read_guard g(k().rcu());
    // tasks_kfunc_map_insert
    ASSERT_EQ(map.update_elem(1, task_value{}, BPF_NOEXIST), 0);
    task_value* v = map.lookup_elem(1);
    ASSERT_NE(v, nullptr);
    Stash(&v->task, t);

    task_struct* stashed = bpf_kptr_xchg(&v->task, nullptr);
    ASSERT_EQ(stashed, t);
    local_obj* local = bpf_obj_new<local_obj>();
    ASSERT_NE(local, nullptr);
    EXPECT_EQ(local->task.get(), nullptr) << "a new object's slots start NULL";
    EXPECT_EQ(bpf_kptr_xchg(&local->task, stashed), nullptr);

    task_struct* acquired = bpf_task_acquire(t);
    ASSERT_EQ(acquired, t);
    const unsigned refcnt = rcu_users(acquired);
    bpf_obj_drop(local);
    const unsigned refcnt_after_drop = rcu_users(acquired);
    EXPECT_EQ(refcnt, refcnt_after_drop + 1) << "the object's slot released exactly once";
    bpf_task_release(acquired);

    local_obj* empty = bpf_obj_new<local_obj>();
    bpf_obj_drop(empty);  // an empty slot: no dtor
    EXPECT_EQ(rcu_users(t), base);
  }
  retire(t);
}

TEST_F(MapTest, LocalObjectInAMapSlotIsDroppedWithItsTaskWhenTheElementIsDeleted) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("nested");
  bpf_hash_map<int, obj_value> map(k(), 2);
  ASSERT_EQ(map.update_elem(1, obj_value{}, BPF_NOEXIST), 0);
  const unsigned before = rcu_users(t);
  const rcu_read_guard g(k().rcu());
  obj_value* v = map.lookup_elem(1);
  ASSERT_NE(v, nullptr);
  local_obj* obj = bpf_obj_new<local_obj>();
  Stash(&obj->task, t);
  // tasklife's bpf_kptr_xchg takes task slots only: the exchange underneath it.
  EXPECT_EQ(detail::kptr_exchange(&v->obj, obj), nullptr);
  EXPECT_TRUE(registered(&obj->task)) << "a live local object";
  EXPECT_EQ(rcu_users(t), before + 1);

  EXPECT_EQ(map.delete_elem(1), 0);
  EXPECT_EQ(v->obj.get(), nullptr) << "the element's slot is NULL";
  EXPECT_EQ(rcu_users(t), before) << "the object's own slot was freed with it, once";
  EXPECT_FALSE(registered(&obj->task)) << "the object was dropped (address only, not read)";
  retire(t);
}

// ---- 5. the grace period keeps a deleted element readable -----------------------------------

TEST_F(MapTest, ReaderKeepsReadingADeletedElementUntilItsSectionEnds) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* victim = fork_task("victim");
  task_struct* reader_task = fork_task("reader");
  bpf_hash_map<int, task_value> map(k(), 4);
  ASSERT_EQ(map.update_elem(1, with_tag(7), BPF_NOEXIST), 0);
  {
    const rcu_read_guard g(k().rcu());
    Stash(&map.lookup_elem(1)->task, victim);
  }
  retire(victim);  // exit, final switch, reap: the slot's reference is the last one
  ASSERT_EQ(rcu_users(victim), 1U);
  const kernel_stats before = k().stats();

  struct observed {
    task_value* value = nullptr;
    task_struct* task = nullptr;  // read from the slot before the delete
    task_struct* slot_after = nullptr;
    int tag_after = -1;
    std::string comm_after;
    unsigned rcu_users_after = 99;
    task_struct* acquired = nullptr;
    bool element_registered = false;
  } seen;
  std::atomic<int> phase{0};
  std::thread reader([&] {
    auto scope = k().run_as(reader_task);
    bpf_rcu_read_lock();
    seen.value = map.lookup_elem(1);
    seen.task = seen.value != nullptr ? seen.value->task.get() : nullptr;
    phase.store(1, std::memory_order_release);
    wait_for(phase, 2);  // the element was deleted meanwhile
    if (seen.value != nullptr && seen.task != nullptr) {
      seen.slot_after = seen.value->task.get();
      seen.tag_after = seen.value->tag;
      seen.comm_after = seen.task->comm;
      seen.rcu_users_after = rcu_users(seen.task);
      seen.acquired = bpf_task_acquire(seen.task);  // KF_RCU: tells that it is dying
      seen.element_registered = registered(&seen.value->task);
    }
    phase.store(3, std::memory_order_release);
    wait_for(phase, 4);
    bpf_rcu_read_unlock();
  });
  wait_for(phase, 1);
  EXPECT_EQ(map.delete_elem(1), 0);
  EXPECT_EQ(k().stats().rcu_users_zero, before.rcu_users_zero + 1) << "the slot's was the last";
  phase.store(2, std::memory_order_release);
  wait_for(phase, 3);
  give_others_a_chance();
  EXPECT_EQ(k().stats().gp_elapsed, before.gp_elapsed) << "no grace period while the reader is in";
  EXPECT_EQ(k().stats().freed, before.freed) << "the task must outlive the reader's section";
  EXPECT_GT(k().rcu().stats().pending(), 0U) << "element reclaim and delayed_put wait";
  phase.store(4, std::memory_order_release);
  reader.join();
  k().rcu().rcu_barrier();
  EXPECT_EQ(k().stats().freed, before.freed + 1) << "freed once the reader left";

  EXPECT_NE(seen.value, nullptr);
  EXPECT_EQ(seen.task, victim);
  EXPECT_EQ(seen.slot_after, nullptr) << "delete xchg'd the slot to NULL";
  EXPECT_EQ(seen.tag_after, 7) << "the element's memory was not reclaimed";
  EXPECT_EQ(seen.comm_after, "victim") << "the task's memory was not freed";
  EXPECT_EQ(seen.rcu_users_after, 0U);
  EXPECT_EQ(seen.acquired, nullptr) << "inc_not_zero refuses a dying task";
  EXPECT_TRUE(seen.element_registered) << "a live value until its grace period";
  EXPECT_FALSE(registered(&seen.value->task)) << "reclaimed after it (address only)";
  retire(reader_task);
}

// ---- 6. the xchg-after-delete rule (Hou Tao, 2025) ------------------------------------------

TEST_F(MapTest, XchgIntoADeletedElementIsReleasedOnceAtReclaim) {
  remake({.name = "map-test", .profile = semantics_profile::newest});  // the 2026 fix
  task_struct* first = fork_task("first");
  task_struct* fresh = fork_task("fresh");
  task_struct* program = fork_task("program");
  bpf_hash_map<int, task_value> map(k(), 4);
  ASSERT_EQ(map.update_elem(1, task_value{}, BPF_NOEXIST), 0);
  {
    const rcu_read_guard g(k().rcu());
    Stash(&map.lookup_elem(1)->task, first);
  }
  const unsigned before_first = rcu_users(first) - 1;
  const unsigned before = rcu_users(fresh);

  std::atomic<int> phase{0};
  task_struct* old = fresh;  // anything but NULL
  unsigned while_stashed = 0;
  std::thread prog_thread([&] {
    auto scope = k().run_as(program);
    bpf_rcu_read_lock();
    task_value* v = map.lookup_elem(1);
    phase.store(1, std::memory_order_release);
    wait_for(phase, 2);  // deleted meanwhile; v is still a valid pointer
    if (v != nullptr) {
      task_struct* ref = bpf_task_acquire(fresh);
      old = bpf_kptr_xchg(&v->task, ref);
      while_stashed = rcu_users(fresh);
    }
    bpf_rcu_read_unlock();
  });
  wait_for(phase, 1);
  EXPECT_EQ(map.delete_elem(1), 0);
  EXPECT_EQ(rcu_users(first), before_first) << "the delete freed the first reference";
  phase.store(2, std::memory_order_release);
  prog_thread.join();
  EXPECT_EQ(old, nullptr) << "the deleted element's slot was empty";
  EXPECT_EQ(while_stashed, before + 1);
  k().rcu().rcu_barrier();
  EXPECT_EQ(rcu_users(fresh), before) << "the late reference was released exactly once";
  EXPECT_EQ(rcu_users(first), before_first) << "and the first one not again";
  retire({first, fresh, program});
}

TEST_F(MapTest, XchgAfterMapDestructionBeganIsReleasedAtReclaim) {
  remake({.name = "map-test", .profile = semantics_profile::newest});
  task_struct* t = fork_task("late");
  const unsigned before = rcu_users(t);
  {
    const rcu_read_guard g(k().rcu());
    task_value* hv = nullptr;
    task_value* av = nullptr;
    {
      bpf_hash_map<int, task_value> hash(k(), 2);
      bpf_array_map<task_value> array(k(), 2);
      ASSERT_EQ(hash.update_elem(1, task_value{}, BPF_NOEXIST), 0);
      hv = hash.lookup_elem(1);
      av = array.lookup_elem(1);
    }  // both maps destroyed; their values wait for the grace period
    ASSERT_TRUE(hv != nullptr && av != nullptr);
    EXPECT_EQ(bpf_kptr_xchg(&hv->task, bpf_task_acquire(t)), nullptr);
    EXPECT_EQ(bpf_kptr_xchg(&av->task, bpf_task_acquire(t)), nullptr);
    EXPECT_EQ(rcu_users(t), before + 2);
  }
  k().rcu().rcu_barrier();
  EXPECT_EQ(rcu_users(t), before) << "each late reference released once, at reclaim";
  retire(t);
}

// ---- 7. bad input ---------------------------------------------------------------------------

TEST_F(MapTest, XchgOnASlotOfADestroyedMapIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("t");
  kptr<task_struct>* array_slot = nullptr;
  kptr<task_struct>* hash_slot = nullptr;
  {
    bpf_array_map<task_value> array(k(), 2);
    bpf_hash_map<int, task_value> hash(k(), 2);
    ASSERT_EQ(hash.update_elem(1, task_value{}, BPF_NOEXIST), 0);
    const rcu_read_guard g(k().rcu());
    array_slot = &array.lookup_elem(1)->task;
    hash_slot = &hash.lookup_elem(1)->task;
  }
  k().rcu().rcu_barrier();  // the grace period: the memory is gone
  const unsigned before = rcu_users(t);
  for (kptr<task_struct>* slot : {array_slot, hash_slot}) {
    task_struct* ref = bpf_task_acquire(t);
    ASSERT_EQ(ref, t);
    EXPECT_CONTRACT_VIOLATION((void)bpf_kptr_xchg(slot, ref),
                              "is not a kptr field of a live map value or local object");
    bpf_task_release(ref);  // the reference never moved
  }
  EXPECT_EQ(rcu_users(t), before);
  retire(t);
}

TEST_F(MapTest, XchgOnAStackAddressIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  task_struct* t = fork_task("t");
  kptr<task_struct> on_stack;
  EXPECT_CONTRACT_VIOLATION((void)bpf_kptr_xchg(&on_stack, nullptr),
                            "is not a kptr field of a live map value or local object");

  // A copy of a map value is a stack object too, not a map value.
  bpf_array_map<task_value> map(k(), 1);
  task_value copy;
  {
    const rcu_read_guard g(k().rcu());
    copy = *map.lookup_elem(0);
  }
  task_struct* ref = bpf_task_acquire(t);
  EXPECT_CONTRACT_VIOLATION((void)bpf_kptr_xchg(&copy.task, ref), "is not a kptr field");
  EXPECT_EQ(copy.task.get(), nullptr) << "nothing was stored";
  bpf_task_release(ref);

  EXPECT_CONTRACT_VIOLATION((void)bpf_kptr_xchg(nullptr, nullptr), "NULL kptr slot");
  retire(t);
}

TEST_F(MapTest, ObjDropOfNullAndOfADroppedObjectAreReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  EXPECT_CONTRACT_VIOLATION(bpf_obj_drop(static_cast<local_obj*>(nullptr)), "bpf_obj_drop(NULL)");

  local_obj* obj = bpf_obj_new<local_obj>();
  kptr<task_struct>* slot = &obj->task;
  bpf_obj_drop(obj);
  EXPECT_CONTRACT_VIOLATION(bpf_obj_drop(obj), "bpf_obj_drop(): ")
      << "a double drop, not a double free";
  EXPECT_CONTRACT_VIOLATION((void)bpf_kptr_xchg(slot, nullptr), "is not a kptr field")
      << "a dropped object's slot";
}

TEST_F(MapTest, LookupWithoutReadLockIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  bpf_hash_map<int, task_value> hash(k(), 1, "tasks");
  bpf_array_map<task_value> array(k(), 1, "slots");
  EXPECT_CONTRACT_VIOLATION((void)hash.lookup_elem(1),
                            "map 'tasks': bpf_map_lookup_elem() without rcu_read_lock()");
  EXPECT_CONTRACT_VIOLATION((void)array.lookup_elem(0),
                            "map 'slots': bpf_map_lookup_elem() without rcu_read_lock()");
  bpf_rcu_read_lock();
  EXPECT_NE(array.lookup_elem(0), nullptr) << "bpf_rcu_read_lock is the same section";
  bpf_rcu_read_unlock();
}

// bpf_obj_drop frees local objects only. A map value passes the registry check
// (it is a live kptr region), so tasklife `delete`s a pointer it never `new`ed
// instead of reporting it. Runs in a child process: with the bug the child dies
// in free() (or ASan reports a bad free); reported, it exits with 42.
TEST_F(MapTest, ObjDropOfAMapValueIsReportedNotFreed) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  bpf_hash_map<int, task_value> map(k(), 1);
  ASSERT_EQ(map.update_elem(1, task_value{}, BPF_NOEXIST), 0);
  const rcu_read_guard g(k().rcu());
  task_value* v = map.lookup_elem(1);
  ASSERT_NE(v, nullptr);
  EXPECT_EXIT(
      {
        try {
          bpf_obj_drop(v);
        } catch (const contract_error&) {
          std::_Exit(42);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(42), "");
}

// Keep last: under ThreadSanitizer a failure here is a race report, and
// halt_on_error ends the process.
//
// The unlink of a deleted element is a relaxed store, but the pointer it stores
// (the deleted element's successor) may name an element that the reader's
// acquire loads have not yet synchronised with: here `1'` replaced key 1 in place
// (published by a release store into key 2's `next`), then key 2, the head, is
// deleted: head = 1' (relaxed). A reader that walks the list afterwards acquires
// only the release that published key 2 — which happened before 1' was built —
// so reading 1'->key is a data race in the C++ memory model (TSan reports it).
TEST_F(MapTest, ZDeletePublishesTheSuccessorToReadersWalkingTheBucket) {
  task_struct* reader_task = fork_task("reader");
  bpf_hash_map<int, task_value, one_bucket_hash> map(k(), 4);
  ASSERT_EQ(map.update_elem(1, with_tag(1), BPF_NOEXIST), 0);
  ASSERT_EQ(map.update_elem(2, with_tag(2), BPF_NOEXIST), 0);  // head -> 2 -> 1

  std::atomic<bool> ready{false};
  std::atomic<bool> go{false};
  int seen_tag = -1;
  std::thread reader([&] {
    auto scope = k().run_as(reader_task);
    const rcu_read_guard g(k().rcu());
    ready.store(true, std::memory_order_release);
    // Relaxed on purpose: the reader's only synchronisation with the writer must
    // be the map's own (the acquire loads of the bucket walk).
    while (!go.load(std::memory_order_relaxed)) {
      std::this_thread::yield();
    }
    const task_value* v = map.lookup_elem(1);
    seen_tag = v != nullptr ? v->tag : 0;
  });
  while (!ready.load(std::memory_order_acquire)) {
    std::this_thread::yield();
  }
  EXPECT_EQ(map.update_elem(1, with_tag(10), BPF_EXIST), 0);  // head -> 2 -> 1'
  EXPECT_EQ(map.delete_elem(2), 0);                           // head -> 1'
  go.store(true, std::memory_order_relaxed);
  reader.join();
  EXPECT_EQ(seen_tag, 10);
  retire(reader_task);
}

}  // namespace
}  // namespace tasklife
