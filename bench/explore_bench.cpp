// The explorer's benchmarks: executions per second, time and executions to the
// first failure of each historical model beside a stress test on real threads
// for the same wall time, and what the reduction saves. The fast paths with the
// explorer compiled in but not running are the acquire/release benchmarks of
// tasklife_bench.cpp (nothing of the explorer is on them).
#include <atomic>
#include <chrono>
#include <cstdint>
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
BENCHMARK(BM_ExploreFirstFailurePidRace)->Unit(benchmark::kMillisecond);
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

}  // namespace
