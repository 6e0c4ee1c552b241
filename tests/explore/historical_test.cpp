// The kernel's historical task-lifetime bugs, found by the explorer from the
// protocol alone (no hand-chosen schedule), and the same protocols exhausting
// their space cleanly under the kernels that fixed them; the selftests' programs
// whose missing NULL check only a NULL path shows (task_kfunc_failure.c), and
// their fixed versions passing every path.
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <functional>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/explore.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/testing.hpp>

#include "../../examples/explore_models.hpp"
#include "../support/values.hpp"

namespace tasklife {
namespace {

using test::task_value;
using task_map = bpf_hash_map<pid_t, task_value>;
using ::testing::HasSubstr;

std::string Explain(const explore::report& r) {
  return r.summary() + (r.failure ? "\n" + r.failure->message + "\n" + r.failure->schedule + "\n" +
                                        r.failure->format_timeline()
                                  : std::string());
}

// ---- the rcu_users / rcu_head union (docs/kernel.md §4): models::union_race ------------
TEST(HistoricalRaceTest, UnionMakesAcquireOfADeadTaskSucceedUnderRcuUsersInc) {
  TASKLIFE_REQUIRE_CHECKS(check_level::full);
  // The program's release comes after the free of the task it acquired.
  testkit::expect_explore_finds(models::union_race(semantics_profile::rcu_users_inc),
                                explore::failure_kind::use_after_free);
}

// An exhaustive search: a second in the dev build, minutes under the sanitizers.
// Bounded by executions (the default million), not by the wall clock: on a loaded
// machine a time budget would end it before the space is exhausted; the test's
// TIMEOUT is the wall-clock guard.
explore::options Exhaustive() {
  explore::options o;
  o.time_budget = std::chrono::hours(24);
  return o;
}

TEST(HistoricalRaceTest, UnionProtocolExhaustsCleanlyOnceRcuUsersHasItsOwnStorage) {
  testkit::expect_explores_cleanly(models::union_race(semantics_profile::rcu_safe), Exhaustive());
}

TEST(HistoricalRaceTest, UnionProtocolExhaustsCleanlyInTheCurrentKernel) {
  testkit::expect_explores_cleanly(models::union_race(semantics_profile::current), Exhaustive());
}

// ---- the final put, immediate and deferred: models::final_put_race ------------------------
TEST(HistoricalRaceTest, ImmediateFinalPutFreesUnderAnRcuReader) {
  TASKLIFE_REQUIRE_CHECKS(check_level::full);
  testkit::expect_explore_finds(models::final_put_race(final_put_mode::immediate),
                                explore::failure_kind::use_after_free);
}

TEST(HistoricalRaceTest, DeferredFinalPutWaitsForTheRcuReader) {
  testkit::expect_explores_cleanly(models::final_put_race(final_put_mode::deferred));
}

// ---- the destructor of a NULL xchg: models::null_xchg_dtor_race -------------------------
class NullXchgDtorTest : public ::testing::TestWithParam<semantics_profile> {};

TEST_P(NullXchgDtorTest, DeleteAfterTheProgramEmptiedTheSlotDropsNullBefore1431d0b584a6) {
  const explore::report r = testkit::expect_explore_finds(
      models::null_xchg_dtor_race(GetParam()), explore::failure_kind::contract_violation);
  ASSERT_TRUE(r.failure.has_value());
  EXPECT_THAT(r.failure->message, HasSubstr("bpf_obj_drop(NULL)"));
  EXPECT_LT(r.executions, 5000U);
}
INSTANTIATE_TEST_SUITE_P(BeforeV64, NullXchgDtorTest,
                         ::testing::Values(semantics_profile::rcu_users_inc,
                                           semantics_profile::usage_based),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST(HistoricalRaceTest, NullXchgDestructorExhaustsCleanlyOnceNullIsSkipped) {
  testkit::expect_explores_cleanly(models::null_xchg_dtor_race(semantics_profile::rcu_safe));
  testkit::expect_explores_cleanly(models::null_xchg_dtor_race(semantics_profile::current));
}

// The task destructor of the kernels that called it on NULL returned at once
// ("if (!p) return;" in bpf_task_release): an empty task slot freed there is no bug.
TEST(HistoricalRaceTest, EmptyTaskSlotFreedByTheOldKernelsIsHarmless) {
  for (const semantics_profile p :
       {semantics_profile::rcu_users_inc, semantics_profile::usage_based}) {
    testkit::expect_explores_cleanly([p](explore::execution& x) {
      kernel k(x.config({.name = "empty-slot", .profile = p, .pid_max = 64}));
      {
        task_map map(k, 4);
        (void)map.update_elem(1, task_value{}, BPF_NOEXIST);
        (void)map.update_elem(2, task_value{}, BPF_NOEXIST);
        x.thread("deleter", [&] { (void)map.delete_elem(1); });
        x.thread("updater", [&] { (void)map.update_elem(2, task_value{}, BPF_EXIST); });
        x.run();
      }  // and the map's teardown frees element 2's empty slot
    });
  }
}

// ---- the xchg into a deleted element: models::xchg_after_delete_race --------------------
class XchgAfterDeleteTest : public ::testing::TestWithParam<semantics_profile> {};

TEST_P(XchgAfterDeleteTest, ReferenceStoredIntoADeletedElementLeaksUntil2026) {
  const explore::report r = testkit::expect_explore_finds(
      models::xchg_after_delete_race(GetParam()), explore::failure_kind::leak);
  EXPECT_LT(r.executions, 5000U);
}
INSTANTIATE_TEST_SUITE_P(Leaking, XchgAfterDeleteTest,
                         ::testing::Values(semantics_profile::rcu_users_inc,
                                           semantics_profile::usage_based,
                                           semantics_profile::rcu_safe, semantics_profile::current),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST(HistoricalRaceTest, XchgIntoADeletedElementExhaustsCleanlyWithTheHashElementDestructor) {
  testkit::expect_explores_cleanly(models::xchg_after_delete_race(semantics_profile::newest));
}

// ---- task_kfunc_failure.c's programs that only a NULL path shows --------------------------

// Runs `body` as a tracepoint program of a fresh task in a one-thread model.
template <class Body>
explore::model ProgramModel(Body body, semantics_profile profile = semantics_profile::current) {
  return [body, profile](explore::execution& x) {
    kernel k(x.config({.name = "selftest", .profile = profile, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* task = k.fork(init, {.comm = "child"}).task;
    task_map map(k, 4, "__tasks_kfunc_map");
    bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask",
               [&](task_struct* arg) { return body(map, arg); });
    x.thread("program", [&] { (void)p.run(init, task); });
    x.run();
    k.retire(task);
    k.retire(init);
  };
}

// tasks_kfunc_map_insert + lookup (task_kfunc_common.h).
task_value* InsertLookup(task_map& map, task_struct* p) {
  const pid_t key = p->pid;
  const task_value empty{};
  if (bpf_map_update_elem(&map, &key, &empty, BPF_NOEXIST) != 0) {
    return nullptr;
  }
  task_value* v = bpf_map_lookup_elem(&map, &key);
  if (v == nullptr) {
    return nullptr;
  }
  task_struct* acquired = bpf_task_acquire(p);
  if (acquired == nullptr) {
    return nullptr;
  }
  if (task_struct* old = bpf_kptr_xchg(&v->task, acquired); old != nullptr) {
    bpf_task_release(old);
    return nullptr;
  }
  return v;
}

struct selftest {
  const char* name;
  std::function<int(task_map&, task_struct*)> broken;
  std::function<int(task_map&, task_struct*)> fixed;
};

const selftest kNullPathSelftests[] = {
    {"task_kfunc_acquire_untrusted",
     [](task_map& map, task_struct* task) {
       task_value* v = InsertLookup(map, task);
       if (v == nullptr) {
         return 0;
       }
       task_struct* acquired = bpf_task_acquire(v->task.get());  // may be NULL
       if (acquired == nullptr) {
         return 0;
       }
       bpf_task_release(acquired);
       return 0;
     },
     [](task_map& map, task_struct* task) {
       task_value* v = InsertLookup(map, task);
       if (v == nullptr) {
         return 0;
       }
       task_struct* p = v->task.get();
       if (p == nullptr) {
         return 0;
       }
       task_struct* acquired = bpf_task_acquire(p);
       if (acquired == nullptr) {
         return 0;
       }
       bpf_task_release(acquired);
       return 0;
     }},
    {"task_kfunc_acquire_release_no_null_check",
     [](task_map&, task_struct* task) {
       task_struct* acquired = bpf_task_acquire(task);
       bpf_task_release(acquired);  // no NULL check
       return 0;
     },
     [](task_map&, task_struct* task) {
       task_struct* acquired = bpf_task_acquire(task);
       if (acquired != nullptr) {
         bpf_task_release(acquired);
       }
       return 0;
     }},
    {"task_kfunc_from_pid_no_null_check",
     [](task_map&, task_struct* task) {
       task_struct* acquired = bpf_task_from_pid(task->pid);
       bpf_task_release(acquired);  // no NULL check
       return 0;
     },
     [](task_map&, task_struct* task) {
       task_struct* acquired = bpf_task_from_pid(task->pid);
       if (acquired != nullptr) {
         bpf_task_release(acquired);
       }
       return 0;
     }},
    {"task_kfunc_from_vpid_no_null_check",
     [](task_map&, task_struct* task) {
       task_struct* acquired = bpf_task_from_vpid(task->pid);
       bpf_task_release(acquired);  // no NULL check
       return 0;
     },
     [](task_map&, task_struct* task) {
       task_struct* acquired = bpf_task_from_vpid(task->pid);
       if (acquired != nullptr) {
         bpf_task_release(acquired);
       }
       return 0;
     }},
};

// task_kfunc_release_untrusted: bpf_task_release(v->task). The kernel types the
// slot read MEM_RCU | PTR_MAYBE_NULL and rejects it for the NULL first; at run time
// each path says what is wrong on it: the NULL path the kernel's message, the
// other the one the kernel gives the NULL-checked program (task_kfunc_release_in_map).
TEST(NullPathSelftestReleaseUntrusted, TaskKfuncReleaseUntrusted) {
  std::vector<std::string> first_messages;  // per execution, the first violation's
  const explore::model model = [&first_messages](explore::execution& x) {
    kernel k(x.config({.name = "selftest", .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* task = k.fork(init, {.comm = "child"}).task;
    {
      task_map map(k, 4, "__tasks_kfunc_map");
      bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* arg) {
        task_value* v = InsertLookup(map, arg);
        if (v == nullptr) {
          return 0;
        }
        bpf_task_release(v->task.get());  // no NULL check, and not a reference
        return 0;
      });
      x.thread("program", [&] {
        const prog_run_result r = p.run(init, task);
        first_messages.push_back(r.violations.empty() ? "" : r.violations.front().message);
      });
      x.run();
    }
    k.retire(task);
    k.retire(init);
  };
  // The depth-first search proper (no PCT warm-up) through every path, failing
  // ones included. Paths where the insert's own lookups are NULL return early.
  const explore::report r =
      explore::explore(model, {.pct_warmup = 0, .stop_at_first_failure = false, .minimize = false});
  EXPECT_FALSE(r.ok()) << "every path breaks a rule";
  EXPECT_THAT(first_messages, ::testing::Contains("Possibly NULL pointer passed to trusted arg0"))
      << "the path where the slot reads NULL";
  EXPECT_THAT(first_messages, ::testing::Contains("R1 must be referenced or trusted"))
      << "the path where it does not";
}

class NullPathSelftest : public ::testing::TestWithParam<selftest> {};

TEST_P(NullPathSelftest, MissingNullCheckIsReportedWithTheKernelsMessage) {
  const explore::report r = explore::explore(ProgramModel(GetParam().broken));
  ASSERT_FALSE(r.ok()) << Explain(r);
  EXPECT_EQ(r.failure->kind, explore::failure_kind::verifier_violation) << Explain(r);
  EXPECT_THAT(r.failure->message, HasSubstr("Possibly NULL pointer passed to trusted arg0"));
}

TEST_P(NullPathSelftest, FixedProgramPassesEveryPath) {
  const explore::report r = testkit::expect_explores_cleanly(ProgramModel(GetParam().fixed));
  EXPECT_GE(r.executions, 2U) << "at least one NULL path besides the non-NULL one";
}

INSTANTIATE_TEST_SUITE_P(TaskKfuncFailure, NullPathSelftest,
                         ::testing::ValuesIn(kNullPathSelftests),
                         [](const ::testing::TestParamInfo<selftest>& param_info) {
                           std::string name = param_info.param.name;
                           std::string out;
                           bool up = true;
                           for (const char c : name) {
                             if (c == '_') {
                               up = true;
                             } else {
                               out += up ? static_cast<char>(std::toupper(c)) : c;
                               up = false;
                             }
                           }
                           return out;
                         });

}  // namespace
}  // namespace tasklife
