// The typed API (typed.hpp) used as a program uses it, and its run-time rules:
// a reference dropped without release is reported with its acquisition site and
// released anyway; a moved-from reference and an RCU pointer used after its
// section are reported. Its compile-time rules are proven in tests/compile_fail.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/testing.hpp>
#include <tasklife/typed.hpp>

#include "../support/names.hpp"
#include "../support/values.hpp"

namespace tasklife {
namespace {

using test::task_value;

// The wrappers are as cheap as promised: a pointer and an acquisition site.
static_assert(sizeof(owned_ref<task_struct>) <= 2 * sizeof(void*));
static_assert(sizeof(maybe_ref<task_struct>) <= 2 * sizeof(void*));
static_assert(sizeof(trusted_ptr<task_struct>) == sizeof(void*));
static_assert(sizeof(rcu_ptr<task_struct>) <= 3 * sizeof(void*));  // + its guard's id
static_assert(sizeof(untrusted_ptr<task_struct>) == sizeof(void*));
// Move-only references; RCU pointers neither copy nor move.
static_assert(!std::is_copy_constructible_v<owned_ref<task_struct>>);
static_assert(std::is_nothrow_move_constructible_v<owned_ref<task_struct>>);
static_assert(!std::is_copy_constructible_v<maybe_ref<task_struct>>);
static_assert(!std::is_move_constructible_v<rcu_ptr<task_struct>>);
static_assert(!std::is_move_constructible_v<rcu_guard>);

// "file:line" of the line after the call, as a violation message names a site.
std::string NextLine(std::source_location here = std::source_location::current()) {
  return std::string(here.file_name()) + ":" + std::to_string(here.line() + 1);
}

// A slot read under a guard that ends before the caller uses the pointer: the
// RCU pointer leaves its guard's scope as a prvalue (guaranteed copy elision).
rcu_ptr<task_struct> ReadUnderItsOwnGuard(const kptr<task_struct>& slot) {
  const rcu_guard guard;
  return read(slot, guard);
}

// `prog` is the task programs run as; the test body itself runs as no task unless
// it enters a scope (some rules are about references dropped outside programs).
class TypedTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "typed-test"}; }
  void SetUp() override {
    kernel_test::SetUp();
    prog_ = fork_task("prog");
  }
  void TearDown() override {
    retire(prog_);
    kernel_test::TearDown();
  }

  // A local object (bpf_obj_new) whose slot holds a reference to `t`, found by
  // bpf_task_from_pid as prog; bpf_obj_drop releases it.
  task_value* NewObjectHolding(task_struct* t) {
    auto* obj = bpf_obj_new<task_value>();
    const current_task_scope scope(prog_);
    auto found = typed::bpf_task_from_pid(t->pid);
    EXPECT_TRUE(found);
    if (found) {
      auto old = typed::bpf_kptr_xchg(&obj->task, std::move(found).take());
      EXPECT_FALSE(old) << "a new object's slot is empty";
    }
    return obj;
  }

  // `drop` takes a reference to `target` (a fresh task whose rcu_users are
  // `before`) as prog, on the line after the one it sets `acquired_at` on, and
  // drops it unreleased: the drop is the one violation, saying `message`, the
  // target's name and the acquire's site, and tasklife released the reference.
  template <class Drop>
  void ExpectDropReported(const std::string& message, Drop drop) {
    task_struct* target = fork_task("target");
    const unsigned before = rcu_users(target);
    std::string acquired_at;
    EXPECT_CONTRACT_VIOLATION(drop(target, before, acquired_at), message);
    EXPECT_THAT(capture().messages(), ElementsAre(AllOf(HasSubstr(message), HasSubstr("'target'"),
                                                        HasSubstr(acquired_at))));
    EXPECT_EQ(rcu_users(target), before) << "tasklife released it";
    retire(target);
  }

  task_struct* prog_ = nullptr;
};

// ---- the typed API used as intended ----------------------------------------------------------

TEST_F(TypedTest, TracepointArgumentIsAcquiredAndReleased) {
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  unsigned held = 0;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    if (!acquired) {
      return 1;
    }
    owned_ref<task_struct> ref = std::move(acquired).take();
    held = rcu_users(ref.get());
    typed::bpf_task_release(std::move(ref));
    return 0;
  });
  const prog_run_result r = p.run(prog_, target);
  EXPECT_TRUE(r.ok()) << r.violations.front().message;
  EXPECT_EQ(r.ret, 0);
  EXPECT_EQ(held, before + 1);
  EXPECT_EQ(rcu_users(target), before) << "released exactly once";
  EXPECT_THAT(capture().messages(), IsEmpty());
  retire(target);
}

TEST_F(TypedTest, FromPidIsCheckedThenReleased) {
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  {
    auto scope = k().run_as(prog_);
    auto found = typed::bpf_task_from_pid(target->pid);
    ASSERT_TRUE(found);
    owned_ref<task_struct> ref = std::move(found).take();
    EXPECT_EQ(ref.get(), target);
    EXPECT_EQ(ref->pid, target->pid);
    EXPECT_EQ(rcu_users(target), before + 1);
    typed::bpf_task_release(std::move(ref));
    EXPECT_EQ(ref.get(), nullptr) << "released: the reference was given up";  // NOLINT
    auto unknown = typed::bpf_task_from_pid(9999);
    EXPECT_FALSE(unknown) << "a NULL result is dropped silently";
  }
  EXPECT_EQ(rcu_users(target), before);
  EXPECT_THAT(capture().messages(), IsEmpty());
  retire(target);
}

TEST_F(TypedTest, OwnedRefGoesIntoAMapValueAndComesBackOut) {
  bpf_array_map<task_value> map(k(), 1, "stash");
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  bpf_prog stash(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    if (!acquired) {
      return 1;
    }
    const std::uint32_t key = 0;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v == nullptr) {
      typed::bpf_task_release(std::move(acquired).take());
      return 2;
    }
    auto old = typed::bpf_kptr_xchg(&v->task, std::move(acquired).take());
    return old ? 3 : 0;  // the slot was empty
  });
  bpf_prog unstash(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
    const std::uint32_t key = 0;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (v == nullptr) {
      return 1;
    }
    auto out = typed::bpf_kptr_xchg(&v->task, nullptr);
    if (!out) {
      return 2;
    }
    owned_ref<task_struct> ref = std::move(out).take();
    const int ret = ref.get() == arg ? 0 : 3;
    typed::bpf_task_release(std::move(ref));
    return ret;
  });

  const prog_run_result stored = stash.run(prog_, target);
  EXPECT_TRUE(stored.ok());
  EXPECT_EQ(stored.ret, 0);
  EXPECT_EQ(rcu_users(target), before + 1) << "the map holds the reference";
  const prog_run_result taken = unstash.run(prog_, target);
  EXPECT_TRUE(taken.ok());
  EXPECT_EQ(taken.ret, 0);
  EXPECT_EQ(rcu_users(target), before) << "taken back out and released";
  EXPECT_THAT(capture().messages(), IsEmpty());
  retire(target);
}

TEST_F(TypedTest, TracepointProgramStashesEveryNewTask) {
  bpf_array_map<task_value> map(k(), 1, "newest");
  int runs = 0;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
    ++runs;
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    const std::uint32_t key = 0;
    task_value* v = bpf_map_lookup_elem(&map, &key);
    if (!acquired || v == nullptr) {
      return 1;  // a NULL maybe_ref goes silently; a non-NULL one would be reported
    }
    auto old = typed::bpf_kptr_xchg(&v->task, std::move(acquired).take());
    if (old) {
      typed::bpf_task_release(std::move(old).take());
    }
    return 0;
  });
  std::vector<std::string> violations;
  bpf_link link = p.attach(k().task_newtask(), [&](const prog_run_result& r) {
    for (const violation& v : r.violations) {
      violations.push_back(v.message);
    }
  });
  task_struct* first = fork_task("first");
  task_struct* second = fork_task("second");
  ASSERT_TRUE(link.detach());
  EXPECT_EQ(runs, 2);
  EXPECT_THAT(violations, IsEmpty());
  {
    auto scope = k().run_as(prog_);
    const rcu_guard guard;
    const std::uint32_t key = 0;
    const rcu_ptr<task_struct> newest = read(bpf_map_lookup_elem(&map, &key)->task, guard);
    EXPECT_EQ(newest.get(), second) << "the second stash gave the first reference back";
  }
  EXPECT_EQ(rcu_users(first), 2U);
  EXPECT_EQ(rcu_users(second), 3U);
  retire({first, second});
  EXPECT_THAT(capture().messages(), IsEmpty());
  // The map's destruction (end of scope, before TearDown) drops the last reference.
}

TEST_F(TypedTest, SlotReadUnderAGuardIsAcquired) {
  task_struct* target = fork_task("target");
  task_value* obj = NewObjectHolding(target);
  {
    auto scope = k().run_as(prog_);
    const unsigned stored = rcu_users(target);

    const rcu_guard guard;
    const rcu_ptr<task_struct> seen = read(obj->task, guard);
    ASSERT_TRUE(seen);
    EXPECT_EQ(seen->pid, target->pid);
    auto pinned = typed::bpf_task_acquire(seen);
    ASSERT_TRUE(pinned);
    owned_ref<task_struct> ref = std::move(pinned).take();
    EXPECT_EQ(ref.get(), target);
    EXPECT_EQ(rcu_users(target), stored + 1);
    typed::bpf_task_release(std::move(ref));
    EXPECT_EQ(rcu_users(target), stored);
    EXPECT_TRUE(read(obj->task)) << "without the guard: untrusted, only compared with NULL";
  }
  bpf_obj_drop(obj);  // releases the stashed reference
  EXPECT_THAT(capture().messages(), IsEmpty());
  retire(target);
}

TEST_F(TypedTest, CurrentTaskBtfIsCurrentAndMayBeAcquired) {
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
    const trusted_ptr<task_struct> self = typed::bpf_get_current_task_btf();
    if (self.get() != get_current()) {
      return 1;
    }
    auto acquired = typed::bpf_task_acquire(self);
    if (!acquired) {
      return 2;
    }
    typed::bpf_task_release(std::move(acquired).take());
    return 0;
  });
  const unsigned before = rcu_users(prog_);
  const prog_run_result r = p.run(prog_);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.ret, 0);
  EXPECT_EQ(rcu_users(prog_), before);
  {
    auto scope = k().run_as(prog_);
    EXPECT_EQ(typed::bpf_get_current_task_btf().get(), prog_);
  }
  EXPECT_THAT(capture().messages(), IsEmpty());
}

// ---- the run-time rules ----------------------------------------------------------------------

TEST_F(TypedTest, OwnedRefDroppedWithoutReleaseIsReportedWithItsAcquireSiteAndReleased) {
  const auto drop = [&](task_struct* target, unsigned before, std::string& acquired_at) {
    auto scope = k().run_as(prog_);
    acquired_at = NextLine();
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(target));
    ASSERT_TRUE(acquired);
    const owned_ref<task_struct> ref = std::move(acquired).take();
    EXPECT_EQ(rcu_users(target), before + 1);
    EXPECT_THAT(capture().messages(), IsEmpty());
  };  // `ref` dropped (noexcept: recorded, not thrown)
  ExpectDropReported("an owned reference was dropped without release", drop);
}

TEST_F(TypedTest, CheckedMaybeRefDroppedWithoutTakeIsReportedWithItsAcquireSiteAndReleased) {
  const auto drop = [&](task_struct* target, unsigned before, std::string& acquired_at) {
    auto scope = k().run_as(prog_);
    acquired_at = NextLine();
    auto found = typed::bpf_task_from_pid(target->pid);
    ASSERT_TRUE(found) << "checked, then never taken";
    EXPECT_EQ(rcu_users(target), before + 1);
  };
  ExpectDropReported("dropped unchecked and unreleased", drop);
}

TEST_F(TypedTest, DroppedReferenceInsideAProgramIsReleasedBeforeTheRunEnds) {
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  std::string acquired_at;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
    acquired_at = NextLine();
    auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(arg));
    return acquired ? 0 : 1;
  });
  prog_run_result r;
  EXPECT_CONTRACT_VIOLATION(r = p.run(prog_, target), "dropped");
  EXPECT_EQ(r.ret, 0);
  EXPECT_TRUE(r.ok()) << "the drop's release reached the checker: nothing left unreleased";
  EXPECT_THAT(capture().messages(),
              ElementsAre(AllOf(HasSubstr("dropped"), HasSubstr(acquired_at))));
  EXPECT_EQ(rcu_users(target), before);
  retire(target);
}

TEST_F(TypedTest, ReleasingAMovedFromOwnedRefIsReportedAndReleasesNothing) {
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  std::string acquired_at;
  {
    auto scope = k().run_as(prog_);
    acquired_at = NextLine();
    auto found = typed::bpf_task_from_pid(target->pid);
    ASSERT_TRUE(found);
    owned_ref<task_struct> ref = std::move(found).take();
    owned_ref<task_struct> moved = std::move(ref);
    typed::bpf_task_release(std::move(moved));
    EXPECT_EQ(rcu_users(target), before);
    EXPECT_THAT(capture().messages(), IsEmpty());
    // NOLINTNEXTLINE(bugprone-use-after-move): the rule
    EXPECT_CONTRACT_VIOLATION(typed::bpf_task_release(std::move(ref)),
                              "bpf_task_release of a moved-from reference");
  }
  EXPECT_THAT(capture().messages(),
              ElementsAre(AllOf(HasSubstr("bpf_task_release of a moved-from reference"),
                                HasSubstr(acquired_at))));
  EXPECT_EQ(rcu_users(target), before) << "nothing released twice";
  retire(target);
}

TEST_F(TypedTest, StoringAMovedFromOwnedRefIsReportedAndStoresNothing) {
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  auto* obj = bpf_obj_new<task_value>();
  {
    auto scope = k().run_as(prog_);
    auto found = typed::bpf_task_from_pid(target->pid);
    ASSERT_TRUE(found);
    owned_ref<task_struct> ref = std::move(found).take();
    typed::bpf_task_release(std::move(ref));
    EXPECT_CONTRACT_VIOLATION(
        {
          // NOLINTNEXTLINE(bugprone-use-after-move): the rule
          auto old = typed::bpf_kptr_xchg(&obj->task, std::move(ref));
          EXPECT_FALSE(old);
        },
        "bpf_kptr_xchg of a moved-from reference");
    EXPECT_FALSE(read(obj->task)) << "the slot stays empty";
  }
  EXPECT_THAT(capture().messages(),
              ElementsAre(HasSubstr("bpf_kptr_xchg of a moved-from reference")));
  bpf_obj_drop(obj);
  EXPECT_EQ(rcu_users(target), before);
  retire(target);
}

TEST_F(TypedTest, RcuPtrUsedAfterItsGuardEndedIsReported) {
  task_struct* target = fork_task("target");
  task_value* obj = NewObjectHolding(target);
  {
    auto scope = k().run_as(prog_);
    const rcu_ptr<task_struct> escaped = ReadUnderItsOwnGuard(obj->task);
    EXPECT_TRUE(escaped) << "comparing with NULL needs no section";
    EXPECT_THAT(capture().messages(), IsEmpty());
    EXPECT_CONTRACT_VIOLATION(EXPECT_EQ(escaped.get(), target),  // no read-side section any more
                              "an rcu_ptr was used after its rcu_guard ended");
  }
  EXPECT_THAT(capture().messages(),
              ElementsAre(HasSubstr("an rcu_ptr was used after its rcu_guard ended")));
  bpf_obj_drop(obj);
  retire(target);
}

// ---- bugs ------------------------------------------------------------------------------------

// An rcu_ptr lives in its rcu_guard's scope (typed.hpp's table). In a
// non-sleepable program the implicit RCU section of the whole run is still held
// after the guard ended, and the check (detail::current_rcu_held: "is any section
// held?") passes: the pointer is acquired as if it were still MEM_RCU. The
// kernel's verifier turns every MEM_RCU register into PTR_UNTRUSTED at
// bpf_rcu_read_unlock, non-sleepable program or not, and then refuses
// bpf_task_acquire ("R1 must be a rcu pointer").
TEST_F(TypedTest, RcuPtrUsedAfterItsGuardInsideANonSleepableProgramIsReported) {
  task_struct* target = fork_task("target");
  task_value* obj = NewObjectHolding(target);
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [obj](task_struct*) {
    const rcu_ptr<task_struct> escaped = ReadUnderItsOwnGuard(obj->task);
    auto pinned = typed::bpf_task_acquire(escaped);  // after bpf_rcu_read_unlock
    if (pinned) {
      typed::bpf_task_release(std::move(pinned).take());
    }
    return 0;
  });
  const prog_run_result r = p.run(prog_);
  // Reported either by the typed API (a contract violation, declared here so that
  // the fixture accepts it) or by the checker (the verifier's way).
  const bool reported_as_contract = !capture().violations().empty();
  if (reported_as_contract) {
    expect_violation("an rcu_ptr was used after its rcu_guard ended");
  }
  EXPECT_TRUE(reported_as_contract || !r.ok())
      << "an rcu_ptr used after its rcu_guard ended went unreported";
  bpf_obj_drop(obj);
  retire(target);
}

// A reference dropped outside any program (here: after its run_as scope ended)
// is "reported, and tasklife releases it". The report is made through the
// noexcept channel, but the release goes through the raw bpf_task_release, which
// reports "called outside a program" through the throwing channel from inside a
// noexcept destructor: with a handler that throws (this one), std::terminate;
// with one that returns, the reference is never released. Runs in a child
// process: it should exit with 0 after one report and no leak.
TEST_F(TypedTest, OwnedRefDroppedOutsideAnyProgramIsReportedNotFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  task_struct* target = fork_task("target");
  const unsigned before = rcu_users(target);
  EXPECT_EXIT(
      {
        std::optional<owned_ref<task_struct>> kept;
        {
          auto scope = k().run_as(prog_);
          auto acquired = typed::bpf_task_acquire(trusted_ptr<task_struct>::from_prog_arg(target));
          if (acquired) {
            kept.emplace(std::move(acquired).take());
          }
        }
        try {
          kept.reset();  // dropped with no current
        } catch (const contract_error&) {
          std::_Exit(3);
        }
        std::_Exit(rcu_users(target) == before && capture().violations().size() == 1 ? 0 : 2);
      },
      ::testing::ExitedWithCode(0), "");
  retire(target);
}

}  // namespace
}  // namespace tasklife
