// tasklife's benchmark suite: every hot path beside its physical floor and what
// users would write instead, in one binary so that every ratio comes from one run.
// Built by the release preset; run by scripts/bench, which writes docs/benchmarks.md.
//
// Naming: BM_Floor* are the raw floors, BM_Alt* the alternatives users would
// write, everything else is tasklife. Rates are items_per_second (aggregate over
// the threads, wall clock: UseRealTime for every threaded run).
//
// The floors include liburcu directly (this file is not part of the library):
// _LGPL_SOURCE gives its inlined read side, the floor tasklife's must match.
#define _LGPL_SOURCE 1
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <malloc.h>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <benchmark/benchmark.h>
#include <urcu/urcu-memb.h>

#include <tasklife/tasklife.hpp>

#include "context.hpp"

namespace {

using namespace tasklife;

// ---- shared helpers --------------------------------------------------------------------------

// One cache line per thread-private counter (no false sharing in "distinct" runs).
struct alignas(64) padded_counter {
  std::atomic<int> value{1};
};

// A small, fast, per-thread random sequence (xorshift64*).
struct xorshift {
  std::uint64_t s;
  explicit xorshift(std::uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ULL + 1) {}
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dULL;
  }
};

// The kfuncs' inc_not_zero + dec: the floor under bpf_task_acquire/release.
inline bool floor_inc_not_zero(std::atomic<int>& c) {
  int old = c.load(std::memory_order_relaxed);
  do {
    if (old == 0) {
      return false;
    }
  } while (!c.compare_exchange_weak(old, old + 1, std::memory_order_relaxed));
  return true;
}
inline void floor_dec(std::atomic<int>& c) {
  if (c.fetch_sub(1, std::memory_order_release) == 1) {
    std::atomic_thread_fence(std::memory_order_acquire);
  }
}

// A kernel with some tasks, one program task per benchmark thread, shared by the
// benchmarks that need one (created on first use, torn down at exit).
class bench_world {
 public:
  static bench_world& get() {
    static bench_world w;
    return w;
  }
  kernel& k() { return *k_; }
  task_struct* prog(int thread) { return progs_.at(static_cast<std::size_t>(thread)); }
  task_struct* shared_task() { return shared_; }
  task_struct* own_task(int thread) { return own_.at(static_cast<std::size_t>(thread)); }

 private:
  bench_world() : k_(std::make_unique<kernel>(kernel_config{.name = "bench"})) {
    shared_ = k_->fork(nullptr, {.comm = "shared"}).task;
    for (int i = 0; i < 8; ++i) {
      progs_.push_back(k_->fork(shared_, {.comm = "prog"}).task);
      own_.push_back(k_->fork(shared_, {.comm = "own"}).task);
    }
  }
  ~bench_world() {
    for (task_struct* t : progs_) {
      k_->retire(t);
    }
    for (task_struct* t : own_) {
      k_->retire(t);
    }
    k_->retire(shared_);
    k_->shutdown();
  }
  std::unique_ptr<kernel> k_;
  task_struct* shared_ = nullptr;
  std::vector<task_struct*> progs_;
  std::vector<task_struct*> own_;
};

// A kernel with `n` live tasks for the pid lookups, rebuilt when n changes.
class pid_world {
 public:
  static pid_world& get(int n) {
    static std::unique_ptr<pid_world> w;
    static std::mutex m;
    const std::lock_guard lock(m);
    if (!w || w->n_ != n) {
      w.reset();
      w.reset(new pid_world(n));
    }
    return *w;
  }
  ~pid_world() {
    for (task_struct* t : tasks_) {
      k_->retire(t);
    }
    for (task_struct* t : progs_) {
      k_->retire(t);
    }
    k_->shutdown();
  }
  kernel& k() { return *k_; }
  const std::vector<pid_t>& pids() const { return pids_; }
  task_struct* prog(int thread) { return progs_.at(static_cast<std::size_t>(thread)); }

  // The floor's and the alternatives' own tables over the same pids. Their object
  // has a task_struct's size with the counter at rcu_users' offset: the lookups
  // touch the same amount of memory, so the floor is the lookup's, not a smaller
  // working set's.
  struct plain_task {
    std::atomic<int> pad{0};
    std::atomic<int> refs{1};
    char rest[sizeof(task_struct) - 2 * sizeof(std::atomic<int>)];
  };
  static_assert(sizeof(plain_task) == sizeof(task_struct));
  std::vector<std::atomic<plain_task*>>& rcu_array() { return array_; }
  std::unordered_map<pid_t, plain_task*>& map() { return map_; }
  std::shared_mutex& shared_mutex() { return shared_mutex_; }
  std::mutex& mutex() { return mutex_; }

 private:
  explicit pid_world(int n)
      : n_(n),
        k_(std::make_unique<kernel>(kernel_config{.name = "pids", .pid_max = PID_MAX_LIMIT})),
        array_(static_cast<std::size_t>(PID_MAX_LIMIT) + 1) {
    tasks_.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      task_struct* t = k_->fork(nullptr, {.comm = "live"}).task;
      tasks_.push_back(t);
      pids_.push_back(t->pid);
      plains_.push_back(std::make_unique<plain_task>());
      array_[static_cast<std::size_t>(t->pid)].store(plains_.back().get());
      map_.emplace(t->pid, plains_.back().get());
    }
    for (int i = 0; i < 8; ++i) {
      progs_.push_back(k_->fork(nullptr, {.comm = "prog"}).task);
    }
  }
  int n_;
  std::unique_ptr<kernel> k_;
  std::vector<task_struct*> tasks_;
  std::vector<task_struct*> progs_;
  std::vector<pid_t> pids_;
  std::vector<std::unique_ptr<plain_task>> plains_;
  std::vector<std::atomic<plain_task*>> array_;
  std::unordered_map<pid_t, plain_task*> map_;
  std::shared_mutex shared_mutex_;
  std::mutex mutex_;
};

// Registers the calling benchmark thread with liburcu for the floors.
struct urcu_thread {
  urcu_thread() { urcu_memb_register_thread(); }
  ~urcu_thread() { urcu_memb_unregister_thread(); }
  urcu_thread(const urcu_thread&) = delete;
  urcu_thread& operator=(const urcu_thread&) = delete;
};

void threads_1_2_4(benchmark::internal::Benchmark* b) {
  b->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
}
void threads_1_2(benchmark::internal::Benchmark* b) {
  b->Threads(1)->Threads(2)->UseRealTime();
}
// The pid lookups at three table sizes (pid_world's live tasks), 1 and 2 threads.
void tasks_1k_100k_1m(benchmark::internal::Benchmark* b) {
  b->ArgName("tasks")->Arg(1000)->Arg(100000)->Arg(1000000)->Apply(threads_1_2);
}

// ---- 1. acquire + release ------------------------------------------------------------------

// The contention model: arg shared=1, every thread hammers one counter (one cache
// line bouncing between cores); shared=0, each thread its own line (must scale).
std::atomic<int> g_shared_counter{1};
padded_counter g_own_counters[8];

void BM_FloorAtomicIncDec(benchmark::State& state) {
  std::atomic<int>& c =
      state.range(0) != 0 ? g_shared_counter : g_own_counters[state.thread_index()].value;
  for (auto _ : state) {
    c.fetch_add(1, std::memory_order_relaxed);
    floor_dec(c);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FloorAtomicIncDec)->ArgName("shared")->Arg(1)->Arg(0)->Apply(threads_1_2_4);

void BM_FloorCasIncNotZeroDec(benchmark::State& state) {
  std::atomic<int>& c =
      state.range(0) != 0 ? g_shared_counter : g_own_counters[state.thread_index()].value;
  for (auto _ : state) {
    benchmark::DoNotOptimize(floor_inc_not_zero(c));
    floor_dec(c);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FloorCasIncNotZeroDec)->ArgName("shared")->Arg(1)->Arg(0)->Apply(threads_1_2_4);

std::shared_ptr<int> g_shared_ptr = std::make_shared<int>(1);

void BM_AltSharedPtrCopy(benchmark::State& state) {
  std::shared_ptr<int> own = std::make_shared<int>(1);
  const std::shared_ptr<int>& src = state.range(0) != 0 ? g_shared_ptr : own;
  for (auto _ : state) {
    std::shared_ptr<int> copy = src;  // copy + destroy: inc + dec of the control block
    benchmark::DoNotOptimize(copy);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AltSharedPtrCopy)->ArgName("shared")->Arg(1)->Arg(0)->Apply(threads_1_2_4);

std::atomic<std::shared_ptr<int>> g_atomic_shared_ptr{std::make_shared<int>(1)};

void BM_AltAtomicSharedPtrLoad(benchmark::State& state) {
  for (auto _ : state) {
    std::shared_ptr<int> p = g_atomic_shared_ptr.load(std::memory_order_acquire);
    benchmark::DoNotOptimize(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AltAtomicSharedPtrLoad)->Apply(threads_1_2_4);

void BM_TaskAcquireRelease(benchmark::State& state) {
  bench_world& w = bench_world::get();
  const current_task_scope scope(w.prog(state.thread_index()));
  task_struct* t = state.range(0) != 0 ? w.shared_task() : w.own_task(state.thread_index());
  for (auto _ : state) {
    task_struct* ref = bpf_task_acquire(t);
    benchmark::DoNotOptimize(ref);
    bpf_task_release(ref);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaskAcquireRelease)->ArgName("shared")->Arg(1)->Arg(0)->Apply(threads_1_2_4);

void BM_TaskAcquireReleaseTyped(benchmark::State& state) {
  bench_world& w = bench_world::get();
  const current_task_scope scope(w.prog(state.thread_index()));
  task_struct* t = state.range(0) != 0 ? w.shared_task() : w.own_task(state.thread_index());
  const trusted_ptr<task_struct> p = trusted_ptr<task_struct>::from_prog_arg(t);
  for (auto _ : state) {
    maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
    if (r) {
      owned_ref<task_struct> ref = std::move(r).take();
      benchmark::DoNotOptimize(ref.get());
      typed::bpf_task_release(std::move(ref));
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaskAcquireReleaseTyped)->ArgName("shared")->Arg(1)->Arg(0)->Apply(threads_1_2_4);

// 6. The checker: the whole loop inside one program run, checker on (record).
void BM_TaskAcquireReleaseChecked(benchmark::State& state) {
  bench_world& w = bench_world::get();
  task_struct* t = w.own_task(state.thread_index());
  bpf_prog prog(
      w.k(), prog_type::tracing, "tp_btf/task_newtask",
      [&](task_struct* arg) {
        for (auto _ : state) {
          task_struct* ref = bpf_task_acquire(arg);
          benchmark::DoNotOptimize(ref);
          bpf_task_release(ref);
        }
        return 0;
      },
      state.range(0) != 0 ? checker_mode::record : checker_mode::off);
  const prog_run_result r = prog.run(w.prog(state.thread_index()), t);
  if (!r.ok()) {
    state.SkipWithError("the checker reported a violation");
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaskAcquireReleaseChecked)
    ->ArgName("checker")
    ->Arg(1)
    ->Arg(0)
    ->Threads(1)
    ->UseRealTime();

// ---- 2. from_pid + release ---------------------------------------------------------------------

void BM_TaskFromPidRelease(benchmark::State& state) {
  pid_world& w = pid_world::get(static_cast<int>(state.range(0)));
  const current_task_scope scope(w.prog(state.thread_index()));
  const std::vector<pid_t>& pids = w.pids();
  xorshift rng(static_cast<std::uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    const pid_t pid = pids[rng.next() % pids.size()];
    task_struct* ref = bpf_task_from_pid(pid);
    benchmark::DoNotOptimize(ref);
    bpf_task_release(ref);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaskFromPidRelease)->Apply(tasks_1k_100k_1m);

// The raw floor: liburcu's inlined read lock, an array indexed by pid, inc_not_zero,
// unlock, dec: bpf_task_from_pid's work with nothing else.
void BM_FloorRcuArrayLookupIncNotZero(benchmark::State& state) {
  pid_world& w = pid_world::get(static_cast<int>(state.range(0)));
  const urcu_thread reg;
  auto& array = w.rcu_array();
  const std::vector<pid_t>& pids = w.pids();
  xorshift rng(static_cast<std::uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    const pid_t pid = pids[rng.next() % pids.size()];
    urcu_memb_read_lock();
    pid_world::plain_task* p = array[static_cast<std::size_t>(pid)].load(std::memory_order_acquire);
    const bool got = p != nullptr && floor_inc_not_zero(p->refs);
    urcu_memb_read_unlock();
    if (got) {
      floor_dec(p->refs);
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FloorRcuArrayLookupIncNotZero)->Apply(tasks_1k_100k_1m);

// Ablation: the floor's loop (liburcu's inlined lock, one table load,
// inc_not_zero, unlock, dec) over tasklife's own pid table and task_structs,
// without the kfunc: separates the data layout's cost from the kfunc code's.
void BM_FloorTasklifeTableLookup(benchmark::State& state) {
  pid_world& w = pid_world::get(static_cast<int>(state.range(0)));
  const urcu_thread reg;
  const pid_namespace& ns = w.k().init_pid_ns();
  const std::vector<pid_t>& pids = w.pids();
  xorshift rng(static_cast<std::uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    const pid_t pid = pids[rng.next() % pids.size()];
    urcu_memb_read_lock();
    task_struct* p = ns.find_task(pid);
    const bool got = p != nullptr && refcount_inc_not_zero(&p->rcu_users);
    urcu_memb_read_unlock();
    if (got && refcount_dec_and_test(&p->rcu_users)) {
      state.SkipWithError("the last reference cannot go here");
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FloorTasklifeTableLookup)
    ->ArgName("tasks")
    ->Arg(100000)
    ->Arg(1000000)
    ->Apply(threads_1_2);

// What users write instead: a lock around an unordered_map, a reference taken
// under it. Lock is std::shared_mutex (readers share it) or std::mutex.
template <class Lock>
void BM_AltMapLookup(benchmark::State& state) {
  pid_world& w = pid_world::get(static_cast<int>(state.range(0)));
  auto& map = w.map();
  const std::vector<pid_t>& pids = w.pids();
  xorshift rng(static_cast<std::uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) {
    const pid_t pid = pids[rng.next() % pids.size()];
    pid_world::plain_task* p = nullptr;
    {
      const Lock lock = [&w] {
        if constexpr (std::is_same_v<Lock, std::shared_lock<std::shared_mutex>>) {
          return Lock(w.shared_mutex());
        } else {
          return Lock(w.mutex());
        }
      }();
      const auto it = map.find(pid);
      if (it != map.end() && floor_inc_not_zero(it->second->refs)) {
        p = it->second;
      }
    }
    if (p != nullptr) {
      floor_dec(p->refs);
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_AltSharedMutexMapLookup(benchmark::State& state) {
  BM_AltMapLookup<std::shared_lock<std::shared_mutex>>(state);
}
BENCHMARK(BM_AltSharedMutexMapLookup)->ArgName("tasks")->Arg(100000)->Apply(threads_1_2);

void BM_AltMutexMapLookup(benchmark::State& state) {
  BM_AltMapLookup<std::unique_lock<std::mutex>>(state);
}
BENCHMARK(BM_AltMutexMapLookup)->ArgName("tasks")->Arg(100000)->Apply(threads_1_2);

// ---- 3. RCU ------------------------------------------------------------------------------------

void BM_FloorUrcuReadLockUnlock(benchmark::State& state) {
  const urcu_thread reg;
  for (auto _ : state) {
    urcu_memb_read_lock();
    benchmark::ClobberMemory();
    urcu_memb_read_unlock();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FloorUrcuReadLockUnlock)->Apply(threads_1_2_4);

void BM_RcuReadGuard(benchmark::State& state) {
  rcu_domain& d = bench_world::get().k().rcu();
  const rcu_thread_registration reg(d);
  for (auto _ : state) {
    const rcu_read_guard guard(d);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RcuReadGuard)->Apply(threads_1_2_4);

// The library's native read side called directly, without the domain's backend
// seam: separates the seam's cost from liburcu's inlined fast path.
void BM_RcuNativeReadSideNoSeam(benchmark::State& state) {
  rcu_domain& d = bench_world::get().k().rcu();
  const rcu_thread_registration reg(d);
  for (auto _ : state) {
    detail::native_read_lock();
    benchmark::ClobberMemory();
    detail::native_read_unlock();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RcuNativeReadSideNoSeam)->Threads(1)->UseRealTime();

void BM_SynchronizeRcu(benchmark::State& state) {
  rcu_domain d("bench-sync");
  const rcu_thread_registration reg(d);
  for (auto _ : state) {
    d.synchronize_rcu();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SynchronizeRcu)->UseRealTime();

struct bench_head {
  tasklife::rcu_head head{};  // qualified: liburcu's own ::rcu_head is visible here
  static void noop(tasklife::rcu_head*) {}
};

// call_rcu enqueue alone (the barrier that drains the heads runs outside the
// timed region, every 64k calls; it has liburcu's ~10 ms floor).
void BM_CallRcuEnqueue(benchmark::State& state) {
  rcu_domain d("bench-call");
  const rcu_thread_registration reg(d);
  constexpr std::size_t kBatch = 1 << 16;
  std::vector<bench_head> heads(kBatch);
  std::size_t i = 0;
  for (auto _ : state) {
    d.call_rcu(&heads[i].head, &bench_head::noop);
    if (++i == kBatch) {
      state.PauseTiming();
      d.rcu_barrier();
      i = 0;
      state.ResumeTiming();
    }
  }
  d.rcu_barrier();  // after the loop: not timed
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CallRcuEnqueue)->UseRealTime();

// End to end: `batch` call_rcu then one rcu_barrier per iteration. Includes
// liburcu 0.13's ~10 ms batching floor of rcu_barrier once per iteration.
void BM_CallRcuEndToEnd(benchmark::State& state) {
  rcu_domain d("bench-e2e");
  const rcu_thread_registration reg(d);
  const auto batch = static_cast<std::size_t>(state.range(0));
  std::vector<bench_head> heads(batch);
  for (auto _ : state) {
    for (bench_head& h : heads) {
      d.call_rcu(&h.head, &bench_head::noop);
    }
    d.rcu_barrier();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}
BENCHMARK(BM_CallRcuEndToEnd)
    ->ArgName("batch")
    ->Arg(100000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- 4. kptrs and maps -------------------------------------------------------------------------

std::atomic<void*> g_exchange_slot{nullptr};

void BM_FloorAtomicExchange(benchmark::State& state) {
  int token = 0;
  for (auto _ : state) {
    void* old = g_exchange_slot.exchange(&token, std::memory_order_acq_rel);
    benchmark::DoNotOptimize(old);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FloorAtomicExchange)->Threads(1)->UseRealTime();

struct bench_value {
  kptr<task_struct> task;
  std::uint64_t tag = 0;
  static constexpr auto kptr_fields = std::make_tuple(&bench_value::task);
};

// One exchange per item, alternately storing the reference and taking it back.
void BM_KptrXchg(benchmark::State& state) {
  bench_world& w = bench_world::get();
  const current_task_scope scope(w.prog(0));
  bpf_array_map<bench_value> map(w.k(), 1);
  task_struct* ref = bpf_task_acquire(w.own_task(0));
  kptr<task_struct>* slot = nullptr;
  {
    const rcu_read_guard guard(w.k().rcu());
    slot = &map.lookup_elem(0)->task;
  }
  task_struct* held = ref;
  for (auto _ : state) {
    held = bpf_kptr_xchg(slot, held);  // in (old NULL comes back), then out
    benchmark::DoNotOptimize(held);
  }
  bpf_task_release(held != nullptr ? held : bpf_kptr_xchg(slot, nullptr));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KptrXchg)->Threads(1)->UseRealTime();

void BM_MapLookupAcquireRelease(benchmark::State& state) {
  bench_world& w = bench_world::get();
  const current_task_scope scope(w.prog(0));
  bpf_hash_map<int, bench_value> map(w.k(), 64);
  (void)map.update_elem(7, bench_value{}, BPF_NOEXIST);
  {
    const rcu_read_guard guard(w.k().rcu());
    task_struct* old = bpf_kptr_xchg(&map.lookup_elem(7)->task, bpf_task_acquire(w.own_task(0)));
    if (old != nullptr) {
      bpf_task_release(old);
    }
  }
  const int key = 7;
  for (auto _ : state) {
    bpf_rcu_read_lock();
    bench_value* v = bpf_map_lookup_elem(&map, &key);
    task_struct* t = v != nullptr ? v->task.get() : nullptr;
    task_struct* ref = t != nullptr ? bpf_task_acquire(t) : nullptr;
    bpf_rcu_read_unlock();
    if (ref != nullptr) {
      bpf_task_release(ref);
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MapLookupAcquireRelease)->Threads(1)->UseRealTime();

// ---- 5. lifecycle churn
// --------------------------------------------------------------------------

struct churn_world {
  kernel k{kernel_config{.name = "churn", .pid_max = PID_MAX_LIMIT}};
};

// One task's whole life per item: fork, exit, final switch, reap; the grace
// period and the free follow on liburcu's worker (drained outside the timing).
void BM_LifecycleChurn(benchmark::State& state) {
  static churn_world* w = nullptr;
  if (state.thread_index() == 0) {
    w = new churn_world;
  }
  // Threads start together after the setup above (benchmark's own barrier).
  for (auto _ : state) {
    task_struct* t = w->k.fork(nullptr, {.comm = "churn"}).task;
    w->k.do_exit(t);
    w->k.finish_task_switch(t);
    w->k.wait_task_zombie(t);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {  // after the loop (and its end barrier): not timed
    w->k.rcu().rcu_barrier();
    state.counters["freed"] = static_cast<double>(w->k.stats().freed);
    delete w;
    w = nullptr;
  }
}
BENCHMARK(BM_LifecycleChurn)->Apply(threads_1_2);

// Peak memory while 2 threads churn 1M tasks through their whole life: the peak
// growth of the bytes malloc has handed out (mallinfo2, sampled during the churn;
// RSS would not move, malloc reuses what earlier benchmarks freed), the largest
// callback backlog seen, and the memory one task takes.
std::size_t heap_in_use() {
  return mallinfo2().uordblks;
}

void BM_LifecycleChurnMemory(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    churn_world w;  // its fixed tables (the 32 MiB pid table) are not per-task memory
    const std::size_t heap_before = heap_in_use();
    std::atomic<std::uint64_t> max_backlog{0};
    std::atomic<std::size_t> max_heap{heap_before};
    auto churn = [&](std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        task_struct* t = w.k.fork(nullptr, {.comm = "churn"}).task;
        w.k.do_exit(t);
        w.k.finish_task_switch(t);
        w.k.wait_task_zombie(t);
        if ((i & 1023) == 0) {
          const std::uint64_t backlog = w.k.rcu().stats().pending();
          std::uint64_t seen = max_backlog.load(std::memory_order_relaxed);
          while (backlog > seen && !max_backlog.compare_exchange_weak(seen, backlog)) {
          }
          const std::size_t heap = heap_in_use();
          std::size_t top = max_heap.load(std::memory_order_relaxed);
          while (heap > top && !max_heap.compare_exchange_weak(top, heap)) {
          }
        }
      }
    };
    std::thread other(churn, total / 2);
    churn(total - total / 2);
    other.join();
    w.k.rcu().rcu_barrier();
    state.counters["peak_heap_growth_kb"] =
        static_cast<double>(max_heap.load() - heap_before) / 1024.0;
    state.counters["max_callback_backlog"] = static_cast<double>(max_backlog.load());
    state.counters["task_bytes"] = static_cast<double>(sizeof(task_struct) + sizeof(upid));
    state.counters["freed"] = static_cast<double>(w.k.stats().freed);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(total));
}
BENCHMARK(BM_LifecycleChurnMemory)
    ->ArgName("tasks")
    ->Arg(1000000)
    ->Arg(3000000)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  return tasklife::bench::run_benchmarks(argc, argv);
}
