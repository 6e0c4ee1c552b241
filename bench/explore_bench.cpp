// The explorer's benchmarks: executions per second, time and executions to the
// first failure of each historical model beside a stress test on real threads
// for the same wall time, and what the reduction saves. The fast paths with the
// explorer compiled in but not running are the acquire/release benchmarks of
// tasklife_bench.cpp (nothing of the explorer is on them).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>

#include <benchmark/benchmark.h>

#include <tasklife/tasklife.hpp>

#include "../examples/explore_models.hpp"

namespace {

using namespace tasklife;

explore::options quiet() {
  explore::options o;
  o.minimize = false;
  o.pct_warmup = 0;
  return o;
}

// A whole exhaustive exploration per iteration; items are executions.
void explore_whole(benchmark::State& state, const explore::model& m, explore::options o) {
  std::uint64_t executions = 0;
  std::uint64_t pruned = 0;
  for (auto _ : state) {
    const explore::report r = explore::explore(m, o);
    if (!r.ok() || !r.exhausted) {
      state.SkipWithError("the model failed or did not exhaust its space");
      return;
    }
    executions += r.executions;
    pruned = r.pruned;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(executions));
  state.counters["executions_per_exploration"] =
      static_cast<double>(executions) / static_cast<double>(state.iterations());
  state.counters["pruned"] = static_cast<double>(pruned);
}

// The 2-thread pid-lookup race under the current kernel: every schedule within
// the default bound (no failure to stop at).
void BM_ExplorePidRace2Threads(benchmark::State& state) {
  explore_whole(state, models::pid_lookup_race(semantics_profile::current), quiet());
}
BENCHMARK(BM_ExplorePidRace2Threads)->Unit(benchmark::kMillisecond);

// A 3-thread model with a stash (local object kptr): the union protocol under
// the current kernel.
void BM_ExploreStash3Threads(benchmark::State& state) {
  explore_whole(state, models::union_race(semantics_profile::current), quiet());
}
BENCHMARK(BM_ExploreStash3Threads)->Unit(benchmark::kMillisecond);

// The reduction: the unbounded search of the pid race, with and without sleep sets.
void BM_ExploreReduction(benchmark::State& state) {
  explore::options o = quiet();
  o.preemption_bound = -1;
  o.reduction = state.range(0) != 0;
  explore_whole(state, models::pid_lookup_race(semantics_profile::current), o);
}
BENCHMARK(BM_ExploreReduction)->ArgName("reduction")->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond);

// Time and executions to the first failure, with the default options (PCT
// warm-up, then the bounded search), minimisation off.
void first_failure(benchmark::State& state, const explore::model& m) {
  explore::options o;
  o.minimize = false;
  std::uint64_t executions = 0;
  for (auto _ : state) {
    const explore::report r = explore::explore(m, o);
    if (r.ok()) {
      state.SkipWithError("no failure found");
      return;
    }
    executions += r.executions;
  }
  state.counters["executions_to_failure"] =
      static_cast<double>(executions) / static_cast<double>(state.iterations());
}
void BM_ExploreFirstFailurePidRace(benchmark::State& state) {
  first_failure(state, models::pid_lookup_race(semantics_profile::rcu_users_inc));
}
void BM_ExploreFirstFailureUnion(benchmark::State& state) {
  first_failure(state, models::union_race(semantics_profile::rcu_users_inc));
}
void BM_ExploreFirstFailureFinalPut(benchmark::State& state) {
  first_failure(state, models::final_put_race(final_put_mode::immediate));
}
void BM_ExploreFirstFailureNullDtor(benchmark::State& state) {
  first_failure(state, models::null_xchg_dtor_race(semantics_profile::usage_based));
}
void BM_ExploreFirstFailureXchgAfterDelete(benchmark::State& state) {
  first_failure(state, models::xchg_after_delete_race(semantics_profile::rcu_safe));
}
BENCHMARK(BM_ExploreFirstFailurePidRace)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExploreFirstFailureNullDtor)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExploreFirstFailureXchgAfterDelete)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExploreFirstFailureUnion)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExploreFirstFailureFinalPut)->Unit(benchmark::kMillisecond);

// The pid race as a plain stress test on real threads, on liburcu, for 50 ms a
// trial: how often it sees the bug (an ADD_UAF warning, a use-after-free report).
std::atomic<std::uint64_t> g_violations{0};
void count_violation(const contract_violation&) {
  g_violations.fetch_add(1, std::memory_order_relaxed);
}
void BM_StressPidRace(benchmark::State& state) {
  const auto previous = set_contract_handler(&count_violation);
  std::uint64_t rounds = 0;
  std::uint64_t found = 0;
  for (auto _ : state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
    kernel k(kernel_config{
        .name = "stress", .profile = semantics_profile::rcu_users_inc, .pid_max = 4096});
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::uint64_t warnings_before =
          refcount_warnings_seen(REFCOUNT_ADD_UAF) + g_violations.load();
      task_struct* victim = k.fork(init, {.comm = "victim"}).task;
      if (victim == nullptr) {
        break;
      }
      const pid_t pid = victim->pid;
      std::atomic<bool> go{false};
      std::thread program([&] {
        const current_task_scope as(prog);
        while (!go.load(std::memory_order_acquire)) {
        }
        if (task_struct* t = bpf_task_from_pid(pid); t != nullptr) {
          bpf_task_release(t);
        }
      });
      std::thread reaper([&] {
        const rcu_thread_registration reg(k.rcu());
        while (!go.load(std::memory_order_acquire)) {
        }
        k.retire(victim);
      });
      go.store(true, std::memory_order_release);
      program.join();
      reaper.join();
      ++rounds;
      if (refcount_warnings_seen(REFCOUNT_ADD_UAF) + g_violations.load() != warnings_before) {
        ++found;
      }
    }
    k.retire(prog);
    k.retire(init);
  }
  set_contract_handler(previous);
  state.counters["trials"] = static_cast<double>(rounds);
  state.counters["bug_seen"] = static_cast<double>(found);
}
BENCHMARK(BM_StressPidRace)->Iterations(1)->Unit(benchmark::kMillisecond);

// Two real threads a trial, started together: a program (lookup, then its own
// protocol on the element) and a syscall that deletes the element.
template <class Program>
void race_trial(kernel& k, task_struct* prog, Program program, const std::function<void()>& del) {
  std::atomic<bool> go{false};
  std::thread p([&] {
    const current_task_scope as(prog);
    while (!go.load(std::memory_order_acquire)) {
    }
    bpf_rcu_read_lock();
    program();
    bpf_rcu_read_unlock();
  });
  std::thread d([&] {
    const rcu_thread_registration reg(k.rcu());
    while (!go.load(std::memory_order_acquire)) {
    }
    del();
  });
  go.store(true, std::memory_order_release);
  p.join();
  d.join();
}

// The destructor of a NULL xchg (usage_based) for 50 ms: a bpf_obj_drop(NULL)
// report is the bug seen.
void BM_StressNullDtor(benchmark::State& state) {
  const auto previous = set_contract_handler(&count_violation);
  std::uint64_t rounds = 0;
  std::uint64_t found = 0;
  for (auto _ : state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
    kernel k(kernel_config{.name = "stress", .profile = semantics_profile::usage_based});
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    {
      models::node_map map(k, 4, "stash");
      const int key = 1;
      while (std::chrono::steady_clock::now() < deadline) {
        const std::uint64_t before = g_violations.load();
        {
          const current_task_scope as(prog);
          (void)map.update_elem(key, models::node_value{}, BPF_NOEXIST);
          const rcu_read_guard guard(k.rcu());
          models::task_node* n = bpf_obj_new<models::task_node>();
          (void)bpf_kptr_xchg(&n->task, bpf_task_acquire(prog));
          (void)bpf_kptr_xchg(&map.lookup_elem(key)->node, n);
        }
        race_trial(
            k, prog,
            [&] {
              if (models::node_value* v = bpf_map_lookup_elem(&map, &key); v != nullptr) {
                if (models::task_node* old =
                        bpf_kptr_xchg(&v->node, static_cast<models::task_node*>(nullptr));
                    old != nullptr) {
                  bpf_obj_drop(old);
                }
              }
            },
            [&] { (void)bpf_map_delete_elem(&map, &key); });
        ++rounds;
        found += g_violations.load() != before ? 1U : 0U;
      }
    }
    k.retire(prog);
    k.retire(init);
  }
  set_contract_handler(previous);
  state.counters["trials"] = static_cast<double>(rounds);
  state.counters["bug_seen"] = static_cast<double>(found);
}
BENCHMARK(BM_StressNullDtor)->Iterations(1)->Unit(benchmark::kMillisecond);

// The xchg into a deleted element (rcu_safe) for 50 ms: a reference the delete
// did not release, and its element's reclaim will not, is the bug seen (it is
// then dropped by hand, so that the next trial starts from the same counts).
void BM_StressXchgAfterDelete(benchmark::State& state) {
  std::uint64_t rounds = 0;
  std::uint64_t found = 0;
  for (auto _ : state) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
    kernel k(kernel_config{.name = "stress", .profile = semantics_profile::rcu_safe});
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    {
      models::task_map map(k, 4, "__tasks_kfunc_map");
      const pid_t key = prog->pid;
      const unsigned baseline = refcount_read(&prog->rcu_users);
      while (std::chrono::steady_clock::now() < deadline) {
        (void)map.update_elem(key, models::task_value{}, BPF_NOEXIST);
        race_trial(
            k, prog,
            [&] {
              if (models::task_value* v = bpf_map_lookup_elem(&map, &key); v != nullptr) {
                if (task_struct* t = bpf_task_acquire(bpf_get_current_task_btf()); t != nullptr) {
                  if (task_struct* old = bpf_kptr_xchg(&v->task, t); old != nullptr) {
                    bpf_task_release(old);
                  }
                }
              }
            },
            [&] { (void)bpf_map_delete_elem(&map, &key); });
        ++rounds;
        if (refcount_read(&prog->rcu_users) > baseline) {
          ++found;
          put_task_struct_rcu_user(prog);  // the leaked reference, dropped by hand
        }
      }
    }
    k.retire(prog);
    k.retire(init);
  }
  state.counters["trials"] = static_cast<double>(rounds);
  state.counters["bug_seen"] = static_cast<double>(found);
}
BENCHMARK(BM_StressXchgAfterDelete)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
