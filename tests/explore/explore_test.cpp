// The explorer: historical races found from the program text alone, clean
// exhaustion under the profiles that fixed them, NULL paths, replay, and the
// detection of nondeterminism it does not control. Each model is deterministic;
// every test ends with the explorer's own verdict (failure or exhausted space).
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <tasklife/explore.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/testing.hpp>

#include "../../examples/explore_models.hpp"

namespace tasklife {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

// task_kfunc_acquire_release_no_null_check (checked = false: the result is
// released unchecked) and its fixed version.
explore::model acquire_release_program(bool checked) {
  return [checked](explore::execution& x) {
    kernel k(x.config({.name = "null", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [checked](task_struct* task) {
      task_struct* acquired = bpf_task_acquire(task);
      if (checked && acquired == nullptr) {
        return 0;
      }
      bpf_task_release(acquired);
      return 0;
    });
    x.thread("program", [&] { (void)p.run(t, t); });
    x.run();
    k.retire(t);
  };
}

TEST(ExploreTest, PidLookupRaceIsFoundUnderTheNov2022Acquire) {
  const explore::report r =
      explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc));
  ASSERT_FALSE(r.ok()) << r.summary();
  EXPECT_THAT(r.failure->kind,
              AnyOf(explore::failure_kind::refcount_warning, explore::failure_kind::use_after_free,
                    explore::failure_kind::contract_violation));
  EXPECT_FALSE(r.failure->schedule.empty());
  EXPECT_FALSE(r.failure->timeline.empty()) << "the failing execution's steps";
  EXPECT_LE(r.failure->preemptions, 2U);
}

TEST(ExploreTest, PidLookupRaceExhaustsCleanlyUnderTheV64Acquire) {
  for (const semantics_profile p : {semantics_profile::rcu_safe, semantics_profile::current}) {
    const explore::report r = explore::explore(models::pid_lookup_race(p));
    EXPECT_TRUE(r.ok()) << to_string(p) << ": " << r.summary() << "\n"
                        << (r.failure ? r.failure->message + "\n" + r.failure->format_timeline()
                                      : "");
    EXPECT_TRUE(r.exhausted) << to_string(p) << ": " << r.summary();
    EXPECT_GT(r.executions, 1U);
  }
}

// The task iterator against a reap: each bpf_iter_task_next is a scheduling
// point, so the reap lands between any two steps of the walk. On every schedule
// the program acquires only live tasks (KF_RCU: NULL once rcu_users is 0), never
// touches freed memory, and releases what it took; on some the victim is yielded
// and its acquire returns NULL because the reap came between the two.
TEST(ExploreTest, TaskIteratorAgainstAReapIsCleanOnEverySchedule) {
  std::atomic<int> yielded_dying{0};  // a witness only: it changes nothing the model does
  const explore::model m = [&yielded_dying](explore::execution& x) {
    kernel k(x.config({.name = "iter", .profile = semantics_profile::current, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* victim = k.fork(init, {.comm = "victim"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    k.do_exit(victim);
    k.finish_task_switch(victim);  // a zombie: its reaper's rcu_users is all it has
    x.thread("program", [&] {
      bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct*) {
        bpf_iter_task it;
        (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
        while (task_struct* pos = bpf_iter_task_next(&it)) {
          task_struct* pinned = bpf_task_acquire(pos);
          if (pinned != nullptr) {
            bpf_task_release(pinned);
          } else if (pos == victim) {
            yielded_dying.fetch_add(1, std::memory_order_relaxed);
          }
        }
        bpf_iter_task_destroy(&it);
        return 0;
      });
      const prog_run_result r = p.run(prog, prog);
      x.check(r.ok(), "the walk breaks no verifier rule");
    });
    x.thread("reaper", [&] { k.wait_task_zombie(victim); });
    x.run();
    k.retire(prog);
    k.retire(init);
  };
  explore::options o;
  o.preemption_bound = 1;
  o.null_paths = false;  // the NULL acquires below are the reap's, not the explorer's
  const explore::report r = explore::explore(m, o);
  EXPECT_TRUE(r.ok()) << r.summary() << "\n"
                      << (r.failure ? r.failure->message + "\n" + r.failure->format_timeline()
                                    : "");
  EXPECT_TRUE(r.exhausted) << r.summary();
  EXPECT_GT(r.executions, 2U) << "the walk's steps are scheduling points";
  EXPECT_GT(yielded_dying.load(), 0) << "some schedule reaps the victim between its yield and "
                                        "its acquire";
}

TEST(ExploreTest, ReplayStringReproducesTheFailureExactly) {
  const explore::model m = models::pid_lookup_race(semantics_profile::rcu_users_inc);
  const explore::report found = explore::explore(m);
  ASSERT_FALSE(found.ok());
  const explore::report again = explore::replay(m, found.failure->schedule);
  ASSERT_FALSE(again.ok()) << again.summary();
  EXPECT_EQ(again.failure->kind, found.failure->kind);
  EXPECT_EQ(again.failure->message, found.failure->message);
  EXPECT_EQ(again.failure->schedule, found.failure->schedule);
  EXPECT_EQ(again.failure->timeline.size(), found.failure->timeline.size());
}

TEST(ExploreTest, AMalformedScheduleIsReportedNotRun) {
  const explore::model m = models::pid_lookup_race(semantics_profile::current);
  for (const char* bad : {"", "tl1-", "tl2-0000000000000000-0000000000000000-0", "tl1-zz"}) {
    const explore::report r = explore::replay(m, bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.failure->kind, explore::failure_kind::usage) << bad;
    EXPECT_EQ(r.stopped, explore::stop_reason::usage) << bad;
    EXPECT_EQ(r.executions, 0U) << bad;
  }
}

// Options out of range explore nothing and say which field is wrong, both in
// explore() and in replay(); a budget as large as the type allows is no overflow.
TEST(ExploreTest, InvalidOptionsExploreNothingAndNameTheField) {
  std::atomic<int> ran{0};
  const explore::model base = models::pid_lookup_race(semantics_profile::current);
  const explore::model m = [&](explore::execution& x) {
    ran.fetch_add(1);
    base(x);
  };
  struct bad_case {
    const char* field;
    void (*set)(explore::options&);
  };
  const bad_case cases[] = {
      {"shards", [](explore::options& o) { o.shards = 0; }},
      {"shard 5 of 3", [](explore::options& o) { o.shard = 5, o.shards = 3; }},
      {"jobs", [](explore::options& o) { o.jobs = 0; }},
      {"stack_size", [](explore::options& o) { o.stack_size = 100; }},
      {"preemption_bound", [](explore::options& o) { o.preemption_bound = -2; }},
      {"max_null_paths", [](explore::options& o) { o.max_null_paths = -7; }},
      {"time_budget", [](explore::options& o) { o.time_budget = std::chrono::milliseconds{-5}; }},
      {"max_executions", [](explore::options& o) { o.max_executions = 0; }},
      {"pct_depth", [](explore::options& o) { o.pct_depth = 0; }},
  };
  for (const bad_case& c : cases) {
    explore::options o;
    c.set(o);
    const explore::report r = explore::explore(m, o);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_EQ(r.failure->kind, explore::failure_kind::usage) << c.field;
    EXPECT_THAT(r.failure->message, HasSubstr(c.field));
    EXPECT_FALSE(r.exhausted) << c.field;
    EXPECT_THAT(r, ::testing::Not(testkit::ExploresCleanly())) << c.field;
  }
  EXPECT_EQ(ran.load(), 0) << "an invalid exploration ran the model";
  explore::options tiny;
  tiny.stack_size = 0;
  const explore::report r = explore::replay(m, "tl1-0000000000000000-0000000000000000-0", tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::usage);
  EXPECT_EQ(ran.load(), 0);
  explore::options forever;
  forever.time_budget = std::chrono::milliseconds::max();
  EXPECT_THAT(explore::explore(m, forever), testkit::ExploresCleanly());
  EXPECT_GT(ran.load(), 1);
  // ... also when a failure is minimised within it (the guard plus 10 s).
  const explore::report found =
      explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc), forever);
  ASSERT_FALSE(found.ok());
  EXPECT_NE(found.failure->kind, explore::failure_kind::usage);
  explore::options huge;
  huge.stack_size = static_cast<std::size_t>(-1);
  const explore::report big = explore::explore(m, huge);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.failure->message, HasSubstr("max_stack_size"));
}

TEST(ExploreTest, TheReportSaysWhyTheSearchStopped) {
  const explore::model m = models::pid_lookup_race(semantics_profile::current);
  explore::options few;
  few.max_executions = 5;
  few.pct_warmup = 0;
  const explore::report cut = explore::explore(m, few);
  EXPECT_TRUE(cut.ok());
  EXPECT_FALSE(cut.exhausted);
  EXPECT_EQ(cut.stopped, explore::stop_reason::executions);
  EXPECT_THAT(cut.summary(), HasSubstr("not exhausted (stopped: max_executions)"));
  explore::options walk;
  walk.strategy = explore::strategy::random;
  const explore::report random = explore::explore(m, walk);
  EXPECT_EQ(random.stopped, explore::stop_reason::repeats) << random.summary();
  EXPECT_THAT(random.summary(), HasSubstr("repeated earlier schedules"));
  const explore::report whole = explore::explore(m);
  EXPECT_TRUE(whole.exhausted);
  EXPECT_EQ(whole.stopped, explore::stop_reason::exhausted);
  const explore::report found =
      explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc));
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.stopped, explore::stop_reason::failure);
}

// A model whose setup throws after a fork: the kernel's teardown during the
// unwinding reports the task as leaked, but the failure is the exception.
TEST(ExploreTest, AModelThatThrowsIsAnExceptionFailureWithItsMessage) {
  const explore::report r = explore::explore([](explore::execution& x) {
    kernel k(x.config({.name = "throws", .pid_max = 64}));
    (void)k.fork(nullptr, {.comm = "t"});
    throw std::runtime_error("setup fails after fork");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::exception) << r.failure->message;
  EXPECT_THAT(r.failure->message, HasSubstr("setup fails after fork"));
  const explore::report inv = explore::explore([](explore::execution& x) {
    kernel k(x.config({.name = "inv", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    x.invariant("thrower", []() -> bool { throw std::runtime_error("inv boom"); });
    x.thread("a", [&] {
      get_task_struct(t);
      put_task_struct(t);
    });
    x.run();
    k.retire(t);
  });
  ASSERT_FALSE(inv.ok());
  EXPECT_EQ(inv.failure->kind, explore::failure_kind::invariant);
  EXPECT_THAT(inv.failure->message, HasSubstr("it threw: inv boom"));
}

// The schedule's hash covers the verdict: a failing schedule of the unchecked
// program replayed on the fixed one (same decisions, same task events) does
// not pass silently.
TEST(ExploreTest, AFailingScheduleReplayedOnTheFixedModelIsAMismatch) {
  const explore::report bad = explore::explore(acquire_release_program(false));
  ASSERT_FALSE(bad.ok());
  ASSERT_EQ(bad.failure->kind, explore::failure_kind::verifier_violation);
  const explore::report fixed =
      explore::replay(acquire_release_program(true), bad.failure->schedule);
  ASSERT_FALSE(fixed.ok()) << "the failing schedule passed on another model";
  EXPECT_EQ(fixed.failure->kind, explore::failure_kind::nondeterminism);
  EXPECT_THAT(fixed.failure->message, HasSubstr("another model or profile"));
}

TEST(ExploreTest, AScheduleOfAnotherModelIsDetected) {
  const explore::report found =
      explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc));
  ASSERT_FALSE(found.ok());
  const explore::report r =
      explore::replay(models::pid_lookup_race(semantics_profile::current), found.failure->schedule);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::nondeterminism) << r.failure->message;
}

TEST(ExploreTest, UncontrolledNondeterminismIsDetected) {
  // A counter kept across executions (a clock would do the same) changes what a
  // thread does from the fourth execution on: re-executing a schedule no longer
  // gives the same events.
  std::atomic<int> runs{0};
  const explore::report r = explore::explore([&runs](explore::execution& x) {
    kernel k(x.config({.name = "nondet", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    const int run = runs.fetch_add(1);
    x.thread("a", [&] {
      get_task_struct(t);
      if (run >= 3) {
        get_task_struct(t);
        put_task_struct(t);
      }
      put_task_struct(t);
    });
    x.thread("b", [&] {
      get_task_struct(t);
      put_task_struct(t);
    });
    x.run();
    k.retire(t);
  });
  ASSERT_FALSE(r.ok()) << r.summary();
  EXPECT_EQ(r.failure->kind, explore::failure_kind::nondeterminism);
  EXPECT_THAT(r.failure->message, HasSubstr("does not control"));
}

TEST(ExploreTest, NullPathOfAcquireIsReportedWithTheVerifiersMessage) {
  const explore::report bad = explore::explore(acquire_release_program(false));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.failure->kind, explore::failure_kind::verifier_violation);
  EXPECT_THAT(bad.failure->message, HasSubstr("Possibly NULL pointer passed to trusted arg0"));
  explore::options exact;
  exact.pct_warmup = 0;  // count only the search's executions
  const explore::report good = explore::explore(acquire_release_program(true), exact);
  EXPECT_TRUE(good.ok()) << (good.failure ? good.failure->message : "");
  EXPECT_TRUE(good.exhausted);
  EXPECT_EQ(good.executions, 2U) << "the non-NULL path and the NULL path";
}

TEST(ExploreTest, ReductionExploresFewerSchedulesWithTheSameVerdict) {
  const explore::model m = models::pid_lookup_race(semantics_profile::current);
  explore::options with;
  with.preemption_bound = -1;  // sleep sets apply to the unbounded search
  explore::options without = with;
  without.reduction = false;
  const explore::report a = explore::explore(m, with);
  const explore::report b = explore::explore(m, without);
  EXPECT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a.exhausted && b.exhausted);
  EXPECT_LT(a.executions, b.executions) << a.summary() << " vs " << b.summary();
  EXPECT_GT(a.pruned, 0U);
}

// A failure that needs a NULL path in an interleaving with a preemption: a
// bounded search explores NULL paths on executions without preemptions only
// (options::null_paths_with_preemptions), the unbounded one on every
// interleaving, with and without the reduction (whose sleep sets stand for both
// paths of a step only then).
TEST(ExploreTest, AnUnboundedSearchTakesNullPathsInEveryInterleaving) {
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "null-order", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    std::atomic<int> stage{0};
    bool null_after_b = false;
    bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
      task_struct* acquired = bpf_task_acquire(task);
      if (acquired == nullptr) {
        null_after_b = stage.load() == 2;
        return 0;
      }
      bpf_task_release(acquired);
      return 0;
    });
    x.thread("a", [&] {
      explore::yield(&stage);
      stage.store(1);
      explore::yield(&stage);  // b runs here only with a preemption
      (void)p.run(t, t);
    });
    x.thread("b", [&] {
      explore::yield(&stage);
      if (stage.load() == 1) {
        stage.store(2);
      }
    });
    x.run();
    x.check(!null_after_b, "the acquire is NULL after b saw a's first step");
    k.retire(t);
  };
  explore::options bounded;
  bounded.pct_warmup = 0;
  const explore::report cut = explore::explore(m, bounded);
  EXPECT_TRUE(cut.ok()) << "bounded: NULL only without preemptions";
  for (const bool reduction : {true, false}) {
    explore::options o;
    o.preemption_bound = -1;
    o.reduction = reduction;
    o.pct_warmup = 0;
    const explore::report r = testkit::expect_explore_finds(m, explore::failure_kind::invariant, o);
    ASSERT_FALSE(r.ok()) << "reduction " << reduction;
    EXPECT_THAT(r.failure->message, HasSubstr("NULL after b"));
    explore::options plain;  // the string carries the NULL-path options
    const explore::report again = explore::replay(m, r.failure->schedule, plain);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.failure->kind, explore::failure_kind::invariant);
  }
}

TEST(ExploreTest, RandomAndPctFindThePidLookupRace) {
  TASKLIFE_REQUIRE_CHECKS(check_level::full);
  const explore::model m = models::pid_lookup_race(semantics_profile::rcu_users_inc);
  for (const explore::strategy s : {explore::strategy::random, explore::strategy::pct}) {
    explore::options o;
    o.strategy = s;
    o.max_executions = 5000;
    o.preemption_bound = -1;
    const explore::report r = explore::explore(m, o);
    EXPECT_FALSE(r.ok()) << to_string(s) << ": " << r.summary();
  }
}

TEST(ExploreTest, ShardsPartitionTheSearch) {
  const explore::model m = models::pid_lookup_race(semantics_profile::current);
  explore::options o;
  o.reduction = false;  // with sleep sets a shard may explore more than its share
  o.pct_warmup = 0;     // shards run no warm-up; the whole must not either
  const explore::report whole = explore::explore(m, o);
  ASSERT_TRUE(whole.exhausted);
  std::uint64_t sum = 0;
  for (unsigned k = 0; k < 3; ++k) {
    o.shards = 3;
    o.shard = k;
    const explore::report part = explore::explore(m, o);
    EXPECT_TRUE(part.ok());
    EXPECT_TRUE(part.exhausted);
    sum += part.executions;
  }
  EXPECT_EQ(sum, whole.executions);
}

TEST(ExploreTest, ParallelJobsFindTheSameRace) {
  explore::options o;
  o.jobs = 2;
  const explore::report r =
      explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc), o);
  EXPECT_FALSE(r.ok()) << r.summary();
}

TEST(ExploreTest, SynchronizeRcuWaitsForEveryReaderThatBeganBeforeIt) {
  // A simulated thread blocked in synchronize_rcu lets the others run; when it
  // returns, a reader that was inside when it began has left, in every schedule.
  const explore::report r = testkit::expect_explores_cleanly([](explore::execution& x) {
    kernel k(x.config({.name = "sync", .pid_max = 64}));
    std::atomic<bool> inside{false};
    x.thread("reader", [&] {
      const rcu_thread_registration reg(k.rcu());
      k.rcu().rcu_read_lock();
      explore::yield(&inside);
      inside.store(true);
      explore::yield(&inside);
      inside.store(false);
      k.rcu().rcu_read_unlock();
    });
    x.thread("updater", [&] {
      const rcu_thread_registration reg(k.rcu());
      explore::yield(&inside);
      const bool was_inside = inside.load();
      k.rcu().synchronize_rcu();
      explore::yield(&inside);
      x.check(!(was_inside && inside.load()), "synchronize_rcu returned under a reader");
    });
    x.run();
  });
  EXPECT_GT(r.executions, 2U);
}

TEST(ExploreTest, KitFailsATestWithTheReplayLineAndPassesACleanModel) {
  TASKLIFE_REQUIRE_CHECKS(check_level::full);
  EXPECT_NONFATAL_FAILURE(
      testkit::expect_explores_cleanly(models::pid_lookup_race(semantics_profile::rcu_users_inc)),
      "replay: tasklife::explore::replay(model, \"tl1-");
  EXPECT_THAT(explore::explore(models::pid_lookup_race(semantics_profile::current)),
              testkit::ExploresCleanly());
  EXPECT_THAT(explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc)),
              ::testing::Not(testkit::ExploresCleanly()));
}

TEST(ExploreTest, ReplayInAFreshProcessReproducesTheFailure) {
  // The schedule string is all a fresh process needs: the death test re-runs the
  // binary (threadsafe style) and replays there.
  const explore::model m = models::pid_lookup_race(semantics_profile::rcu_users_inc);
  const explore::report found = explore::explore(m);
  ASSERT_FALSE(found.ok());
  const std::string schedule = found.failure->schedule;
  const std::string message = found.failure->message;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const explore::report again = explore::replay(m, schedule);
        std::exit(again.failure && again.failure->message == message &&
                          again.failure->schedule == schedule
                      ? 0
                      : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// ---- the gaps closed after the first review ---------------------------------------------

// A thread whose one operation is a scheduling point can run before or after
// another thread's point (2 executions); an operation that announced nothing
// would run in the thread's prologue (1 execution).
struct one_operation {
  const char* name;
  void (*body)(kernel& k, task_struct* t, void* state);
};
class SchedulingPointTest : public ::testing::TestWithParam<one_operation> {};

TEST_P(SchedulingPointTest, TheOperationIsAPointOfItsOwn) {
  explore::options o;
  o.pct_warmup = 0;  // the search's executions only
  const explore::report r = testkit::expect_explores_cleanly(
      [](explore::execution& x) {
        kernel k(x.config({.name = "point", .pid_max = 64}));
        task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
        {
          bpf_array_map<models::task_value> array(k, 2);
          models::node_value* object = bpf_obj_new<models::node_value>();
          void* state = GetParam().name[0] == 'a' ? static_cast<void*>(&array) : object;
          x.thread("operation", [&] { GetParam().body(k, t, state); });
          x.thread("other", [] { explore::yield(nullptr); });
          x.run();
          bpf_obj_drop(object);
        }
        k.retire(t);
      },
      o);
  EXPECT_EQ(r.executions, 2U) << GetParam().name << ": " << r.summary();
}
INSTANTIATE_TEST_SUITE_P(
    Gaps, SchedulingPointTest,
    ::testing::Values(
        one_operation{"array_update_elem",
                      [](kernel&, task_struct*, void* state) {
                        (void)static_cast<bpf_array_map<models::task_value>*>(state)->update_elem(
                            0, models::task_value{}, BPF_ANY);
                      }},
        one_operation{"local_object_kptr_xchg",
                      [](kernel&, task_struct*, void* state) {
                        auto* v = static_cast<models::node_value*>(state);
                        (void)bpf_kptr_xchg(&v->node, static_cast<models::task_node*>(nullptr));
                      }},
        one_operation{"kfunc_entry",
                      [](kernel&, task_struct* task, void*) {
                        const current_task_scope as(task);
                        (void)bpf_get_current_task_btf();
                      }}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(ExploreTest, ReplayTakesTheNullPathOptionsFromTheSchedule) {
  // task_kfunc_acquire_release_no_null_check fails on its NULL path only: a
  // replay without the explorer's options (a fresh process, a pasted line) must
  // still take that path.
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "null", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* task) {
      bpf_task_release(bpf_task_acquire(task));
      return 0;
    });
    x.thread("program", [&] { (void)p.run(t, t); });
    x.run();
    k.retire(t);
  };
  const explore::report found = explore::explore(m);
  ASSERT_FALSE(found.ok());
  EXPECT_THAT(found.failure->schedule, HasSubstr("~n1"));
  explore::options plain;
  plain.null_paths = false;
  const explore::report again = explore::replay(m, found.failure->schedule, plain);
  ASSERT_FALSE(again.ok()) << again.summary();
  EXPECT_EQ(again.failure->kind, explore::failure_kind::verifier_violation)
      << again.failure->message;
  EXPECT_EQ(again.failure->schedule, found.failure->schedule);
}

TEST(ExploreTest, ChoicesPastTheThirtySixthOptionReplay) {
  // 40 threads: a decision may take option 36 or later, which a base-36 digit
  // cannot write.
  const explore::model m = [](explore::execution& x) {
    for (int i = 0; i < 40; ++i) {
      x.thread("t" + std::to_string(i), [] { explore::yield(nullptr); });
    }
    x.run();
    x.check(false, "every execution fails: its schedule is what the test looks at");
  };
  explore::options o;
  o.strategy = explore::strategy::random;
  o.minimize = false;
  o.max_executions = 1;
  std::string schedule;
  for (std::uint64_t seed = 1; seed < 64 && schedule.find('{') == std::string::npos; ++seed) {
    o.seed = seed;
    const explore::report r = explore::explore(m, o);
    ASSERT_FALSE(r.ok());
    ASSERT_EQ(r.failure->kind, explore::failure_kind::invariant) << r.failure->message;
    schedule = r.failure->schedule;
  }
  ASSERT_THAT(schedule, HasSubstr("{"));
  const explore::report again = explore::replay(m, schedule);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.failure->kind, explore::failure_kind::invariant) << again.failure->message;
  EXPECT_EQ(again.failure->schedule, schedule);
}

explore::model SpinsForever() {
  return [](explore::execution& x) {
    kernel k(x.config({.name = "spin", .pid_max = 64}));
    auto holder = std::make_unique<int>(7);  // owned by the spinning thread's frame
    x.thread("spinner", [&] {
      const rcu_thread_registration reg(k.rcu());
      const rcu_read_guard guard(k.rcu());
      const std::unique_ptr<int> mine = std::move(holder);
      for (;;) {
        explore::yield(mine.get());  // waits for a flag nobody sets
      }
    });
    x.thread("other", [] { explore::yield(nullptr); });
    x.run();
  };
}

TEST(ExploreTest, AThreadThatNeverEndsIsAFailureWithItsSchedule) {
  explore::options o;
  o.max_steps = 200;
  const explore::report r = explore::explore(SpinsForever(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::step_limit) << r.failure->message;
  EXPECT_FALSE(r.failure->schedule.empty());
  const explore::report again = explore::replay(SpinsForever(), r.failure->schedule, o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.failure->kind, explore::failure_kind::step_limit);
}

// An abandoned thread's stack stays mapped for the life of the process: past
// options::max_abandoned_stacks an execution declares no more threads and fails
// with that diagnostic, instead of the process growing with every execution.
TEST(ExploreTest, AbandonedStacksAreBoundedByADiagnostic) {
  explore::options o;
  o.max_steps = 200;
  o.max_abandoned_stacks = 8;
  o.pct_warmup = 0;
  o.minimize = false;
  // Each exploration reaches the step limit and abandons the spinner's stack at
  // least once; the count only grows, so the bound is reached within
  // max_abandoned_stacks + 2 explorations whatever this process abandoned before.
  bool bounded = false;
  for (std::size_t i = 0; i < o.max_abandoned_stacks + 2 && !bounded; ++i) {
    const explore::report r = explore::explore(SpinsForever(), o);
    ASSERT_FALSE(r.ok());
    bounded = r.failure->kind == explore::failure_kind::exception;
    if (!bounded) {
      // The exploration during which the bound is crossed: its final replay of
      // the step-limit schedule no longer starts the spinner (nondeterminism).
      EXPECT_THAT(r.failure->kind,
                  AnyOf(explore::failure_kind::step_limit, explore::failure_kind::nondeterminism))
          << r.failure->message;
    }
  }
  ASSERT_TRUE(bounded);
  // From then on every execution stops at the bound, with the diagnostic (and its
  // schedule replays to the same failure).
  const explore::report after = explore::explore(SpinsForever(), o);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.failure->kind, explore::failure_kind::exception) << after.failure->message;
  EXPECT_THAT(after.failure->message, HasSubstr("max_abandoned_stacks is 8"));
  // A larger bound lets executions run again: the model's teardown is clean.
  o.max_abandoned_stacks = static_cast<std::size_t>(-1);
  const explore::report again = explore::explore(SpinsForever(), o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.failure->kind, explore::failure_kind::step_limit) << again.failure->message;
}

TEST(ExploreTest, ADeadlockIsAFailureWithItsSchedule) {
  // Each thread waits in synchronize_rcu for the other's read-side section.
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "deadlock", .pid_max = 64}));
    for (const char* name : {"a", "b"}) {
      x.thread(name, [&] {
        const rcu_thread_registration reg(k.rcu());
        const rcu_read_guard guard(k.rcu());
        explore::yield(nullptr);
        k.rcu().synchronize_rcu();
      });
    }
    x.run();
  };
  const explore::report r = explore::explore(m);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.failure->kind,
              AnyOf(explore::failure_kind::deadlock, explore::failure_kind::contract_violation))
      << r.failure->message;
  EXPECT_FALSE(r.failure->schedule.empty());
  const explore::report again = explore::replay(m, r.failure->schedule);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.failure->kind, r.failure->kind);
}

TEST(ExploreTest, TheWarmUpCountsAgainstTheBudget) {
  explore::options o;
  o.pct_warmup = 50;
  o.max_executions = 60;
  const explore::report r = explore::explore(models::union_race(semantics_profile::current), o);
  EXPECT_LE(r.executions, 60U) << r.summary();
  EXPECT_FALSE(r.exhausted);
}

TEST(ExploreTest, AJobThatFindsTheFailureStopsTheOthers) {
  // The failure (thread 0's step, then thread 1's) lies below the shards' split
  // in one job's share only: without the stop the other job explores all of its own.
  const explore::model m = [](explore::execution& x) {
    std::vector<int> order;
    std::atomic<int> shared{0};
    for (int i = 0; i < 3; ++i) {
      x.thread("t" + std::to_string(i), [&, i] {
        for (int s = 0; s < 3; ++s) {
          explore::yield(&shared);
          order.push_back(i);
        }
      });
    }
    x.run();
    x.check(!(order.size() >= 2 && order[0] == 0 && order[1] == 1), "thread 0, then thread 1");
  };
  explore::options o;
  o.jobs = 2;
  o.pct_warmup = 0;
  o.minimize = false;
  o.preemption_bound = -1;
  o.reduction = false;
  const explore::report r = explore::explore(m, o);
  ASSERT_FALSE(r.ok());
  explore::options one = o;
  one.jobs = 1;
  one.stop_at_first_failure = false;
  const explore::report whole = explore::explore(m, one);
  EXPECT_EQ(whole.executions, 1680U) << "9! / (3!)^3 orders";
  EXPECT_LT(r.executions, whole.executions / 2) << r.summary() << " vs " << whole.summary();
}

}  // namespace
}  // namespace tasklife

namespace tasklife {
namespace {

// Under the explorer an event names the simulated thread that recorded it (its
// number: 1 + its index), the explorer's own steps and the setup the exploring
// OS thread. Checked in every execution of the search.
TEST(ExploreTest, EventsNameTheSimulatedThreadThatRecordedThem) {
  const explore::report r = explore::explore([](explore::execution& x) {
    kernel k(x.config({.name = "threads", .pid_max = 16}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    std::uint32_t first = 0, second = 0;
    x.thread("first", [&] {
      first = event_thread_id();
      put_task_struct(get_task_struct(t));
    });
    x.thread("second", [&] {
      second = event_thread_id();
      put_task_struct(get_task_struct(t));
    });
    x.run();
    x.check(first == (simulated_thread_bit | 1U) && second == (simulated_thread_bit | 2U),
            "the simulated threads are numbered 1 and 2");
    for (const task_event& e : k.history(t)) {
      if (e.kind == task_event_kind::fork) {
        x.check(e.thread == event_thread_id(), "the setup is the exploring OS thread's");
      } else if (e.kind == task_event_kind::get || e.kind == task_event_kind::put) {
        x.check(e.thread == first || e.thread == second, "a get or put names its thread");
      }
    }
    k.retire(t);
  });
  EXPECT_TRUE(r.ok()) << r.failure->message;
  EXPECT_GT(r.executions, 1U);
}

}  // namespace
}  // namespace tasklife
