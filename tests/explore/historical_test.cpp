// The kernel's historical task-lifetime bugs, found by the explorer from the
// protocol alone (no hand-chosen schedule), and the same protocols exhausting
// their space cleanly under the kernels that fixed them; the selftests' programs
// whose missing NULL check only a NULL path shows (task_kfunc_failure.c), and
// their fixed versions passing every path.
#include <atomic>
#include <cctype>
#include <cerrno>
#include <functional>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/explore.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/testing.hpp>

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

// ---- the rcu_users / rcu_head union (docs/kernel.md §4) -----------------------------------
//
// `victim` has exited and been reaped; only a map slot's reference keeps it. Its
// owner takes it out and drops it; another dead task's last reference is dropped
// too, so its callback is queued behind victim's; a program acquires the task in
// the slot under RCU and releases it after its section. With the union (<= v6.3)
// the queued callback's `next` pointer overwrote victim's dead rcu_users, so the
// acquire's inc_not_zero succeeds on a task whose free is already queued, and the
// program's release comes after the free. v6.4 (22df776a9a86) gave rcu_users its
// own storage, and the same protocol is safe.
explore::model UnionModel(semantics_profile profile) {
  return [profile](explore::execution& x) {
    kernel k(x.config({.name = "union", .profile = profile, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* victim = k.fork(init, {.comm = "victim"}).task;
    task_struct* other = k.fork(init, {.comm = "other"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    task_map map(k, 4, "stash");
    const pid_t key = 1;
    task_struct* other_ref = nullptr;
    {
      const current_task_scope as(prog);
      const rcu_read_guard guard(k.rcu());
      const task_value empty{};
      bpf_map_update_elem(&map, &key, &empty, BPF_ANY);
      task_value* v = bpf_map_lookup_elem(&map, &key);
      bpf_kptr_xchg(&v->task, bpf_task_acquire(victim));
      other_ref = bpf_task_acquire(other);
    }
    k.retire(victim);  // only the slot's reference is left
    k.retire(other);   // only other_ref is left
    x.thread("owner", [&] {
      const current_task_scope as(prog);
      bpf_rcu_read_lock();
      task_value* v = bpf_map_lookup_elem(&map, &key);
      task_struct* old = v != nullptr ? bpf_kptr_xchg(&v->task, nullptr) : nullptr;
      bpf_rcu_read_unlock();
      if (old != nullptr) {
        bpf_task_release(old);
      }
    });
    x.thread("other", [&] {
      const current_task_scope as(prog);
      bpf_task_release(other_ref);  // queues other's callback
    });
    x.thread("program", [&] {
      const current_task_scope as(prog);
      bpf_rcu_read_lock();
      task_value* v = bpf_map_lookup_elem(&map, &key);
      task_struct* got = nullptr;
      if (v != nullptr) {
        if (kfunc_exists(profile, kfunc_id::bpf_task_kptr_get)) {
          got = bpf_task_kptr_get(&v->task);  // the Nov/Dec 2022 way
        } else if (task_struct* p = v->task.get(); p != nullptr) {
          got = bpf_task_acquire(p);  // v6.4+: an RCU pointer, KF_RCU acquire
        }
      }
      bpf_rcu_read_unlock();
      if (got != nullptr) {
        bpf_task_release(got);
      }
    });
    x.run();
    k.retire(prog);
    k.retire(init);
  };
}

TEST(HistoricalRaceTest, UnionMakesAcquireOfADeadTaskSucceedUnderRcuUsersInc) {
  // The program's release comes after the free of the task it acquired.
  testing::expect_explore_finds(UnionModel(semantics_profile::rcu_users_inc),
                                explore::failure_kind::use_after_free);
}

TEST(HistoricalRaceTest, UnionProtocolExhaustsCleanlyOnceRcuUsersHasItsOwnStorage) {
  for (const semantics_profile p : {semantics_profile::rcu_safe, semantics_profile::current}) {
    SCOPED_TRACE(to_string(p));
    testing::expect_explores_cleanly(UnionModel(p));
  }
}

// ---- the final put: immediate (<= v6.16) and deferred (v6.17, 8671bad873eb) ---------------
//
// A task already reaped and past its grace period is kept only by a usage
// reference, published in a shared pointer. A reader inside an RCU section reads
// the pointer and then looks at the task (tryget_task_struct); the holder clears
// the pointer and drops its reference. With the immediate final put the memory
// goes at once, under the reader; deferred, it goes one grace period later, after
// every reader that could have seen the pointer.
explore::model FinalPutModel(final_put_mode mode) {
  return [mode](explore::execution& x) {
    kernel k(x.config({.name = "final-put", .pid_max = 64, .final_put = mode}));
    task_struct* t = k.fork(nullptr, {.comm = "held"}).task;
    get_task_struct(t);  // the holder's reference
    k.retire(t);
    k.rcu().rcu_barrier();  // reaped, grace period over: only the holder keeps it
    std::atomic<task_struct*> shared{t};
    x.thread("reader", [&] {
      const rcu_thread_registration reg(k.rcu());
      const rcu_read_guard guard(k.rcu());
      explore::yield(&shared);
      task_struct* p = shared.load();
      if (p != nullptr) {
        explore::yield(&shared);
        if (task_struct* ref = tryget_task_struct(p); ref != nullptr) {
          put_task_struct(ref);
        }
      }
    });
    x.thread("holder", [&] {
      explore::yield(&shared);
      task_struct* p = shared.exchange(nullptr);
      put_task_struct(p);  // the last reference
    });
    x.run();
  };
}

TEST(HistoricalRaceTest, ImmediateFinalPutFreesUnderAnRcuReader) {
  testing::expect_explore_finds(FinalPutModel(final_put_mode::immediate),
                                explore::failure_kind::use_after_free);
}

TEST(HistoricalRaceTest, DeferredFinalPutWaitsForTheRcuReader) {
  testing::expect_explores_cleanly(FinalPutModel(final_put_mode::deferred));
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

class NullPathSelftest : public ::testing::TestWithParam<selftest> {};

TEST_P(NullPathSelftest, MissingNullCheckIsReportedWithTheKernelsMessage) {
  const explore::report r = explore::explore(ProgramModel(GetParam().broken));
  ASSERT_FALSE(r.ok()) << Explain(r);
  EXPECT_EQ(r.failure->kind, explore::failure_kind::verifier_violation) << Explain(r);
  EXPECT_THAT(r.failure->message, HasSubstr("Possibly NULL pointer passed to trusted arg0"));
}

TEST_P(NullPathSelftest, FixedProgramPassesEveryPath) {
  const explore::report r = testing::expect_explores_cleanly(ProgramModel(GetParam().fixed));
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
