// The BPF task kfuncs under load. N worker threads share one kernel and one hash
// map whose values hold a task kptr; each worker runs as its own task (a "prog",
// as a BPF program runs in the context of some task) and, for a bounded time,
// randomly:
//   - looks random pids up with bpf_task_from_pid and holds what it gets a while;
//   - reads a task out of a map slot inside bpf_rcu_read_lock() and acquires it
//     with bpf_task_acquire (NULL when the task is dying: counted);
//   - moves a freshly acquired reference into a looked-up element with
//     bpf_kptr_xchg (releasing or keeping what comes back out), or xchg's NULL in
//     to take the stored reference out;
//   - updates (BPF_ANY / BPF_NOEXIST) and deletes random keys, inside a program's
//     RCU section or outside it, so elements (and the references in them) go
//     while other workers read and xchg their slots;
//   - forks victim tasks, exits them, and runs their final switch and reap in
//     either order, from whichever worker picks the duty up from a shared pool,
//     so tasks die while programs hold them, look them up and stash them; a
//     worker that reaps sometimes holds the task across the reap and checks it
//     has no pid number left and that bpf_task_from_pid no longer finds it.
// Every reference a worker obtains (from_pid, acquire, xchg out) is released or
// stored exactly once: each worker counts both sides. At the end everything is
// released, the map is cleared, every task is retired and, after rcu_barrier,
// every forked task has gone through its grace period and been freed: no leak,
// no contract violation (a use-after-free of a poisoned task included), no
// refcount warning. The ASan/TSan presets catch what the checks cannot see.
//
// Reproduce a run's random choices (not its interleaving) with
// TASKLIFE_STRESS_SEED=<the seed printed on failure>.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <latch>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/refcount.hpp>
#include <tasklife/task.hpp>

#include "../support/stress_config.hpp"
#include "../support/stress_fixture.hpp"

namespace tasklife {
namespace {

constexpr int kPidMax = 4096;
constexpr std::uint32_t kMaxEntries = 256;
constexpr int kKeys = 384;                 // more keys than entries: some inserts see -E2BIG
constexpr std::size_t kMaxHeld = 16;       // references one worker holds at a time
constexpr std::size_t kMaxRunning = 96;    // victims forked and not yet exited
constexpr std::size_t kMaxDuties = 256;    // final switches and reaps not yet done
constexpr std::size_t kRecentPids = 64;    // pids of recent victims, for lookups
constexpr unsigned kSaneCount = 1U << 16;  // no counter gets near this (poison: 0x6b6b6b6b)
constexpr std::size_t kProblemsKept = 8;
constexpr int kTimeCheckEvery = 32;

struct value {
  kptr<task_struct> task;
  int tag = 0;
  static constexpr auto kptr_fields = std::make_tuple(&value::task);
};
using task_map = bpf_hash_map<int, value>;

// A program's bpf_rcu_read_lock() .. bpf_rcu_read_unlock(), also left when a
// contract violation is thrown out of the section.
class bpf_rcu_section {
 public:
  bpf_rcu_section() { bpf_rcu_read_lock(); }
  ~bpf_rcu_section() { bpf_rcu_read_unlock(); }
  bpf_rcu_section(const bpf_rcu_section&) = delete;
  bpf_rcu_section& operator=(const bpf_rcu_section&) = delete;
};

// The two rcu_users drops an exited victim is owed. Whoever holds a duty holds
// the reference it drops, so the task cannot be freed under it.
// A victim forked and not yet exited; whoever takes it from the pool exits it.
struct victim {
  task_struct* task;
  bool autoreap;  // exit_notify releases it: it is owed a final switch only
};

enum class duty_kind : std::uint8_t { final_switch, reap };
struct duty {
  task_struct* task;
  duty_kind kind;
};

// Victims between threads: the ones still running (one of them will be exited
// by whichever worker takes it) and the duties of the exited ones.
class lifecycle_pool {
 public:
  std::size_t running_size() {
    const std::lock_guard lock(mutex_);
    return running_.size();
  }
  std::size_t duties_size() {
    const std::lock_guard lock(mutex_);
    return duties_.size();
  }
  void add_running(victim v) {
    const std::lock_guard lock(mutex_);
    running_.push_back(v);
  }
  victim take_running(std::uint64_t r) {
    const std::lock_guard lock(mutex_);
    return take(running_, r, victim{nullptr, false});
  }
  void add_duty(duty d) {
    const std::lock_guard lock(mutex_);
    duties_.push_back(d);
  }
  duty take_duty(std::uint64_t r) {
    const std::lock_guard lock(mutex_);
    return take(duties_, r, duty{nullptr, duty_kind::final_switch});
  }

 private:
  template <class T>
  static T take(std::vector<T>& v, std::uint64_t r, T none) {
    if (v.empty()) {
      return none;
    }
    const std::size_t i = static_cast<std::size_t>(r % v.size());
    T out = v[i];
    v[i] = v.back();
    v.pop_back();
    return out;
  }

  std::mutex mutex_;
  std::vector<victim> running_;  // guarded by mutex_
  std::vector<duty> duties_;     // guarded by mutex_
};

// do_exit, then hand the task's remaining rcu_users drops to the pool.
void exit_victim(kernel& k, lifecycle_pool& pool, victim v) {
  k.do_exit(v.task);
  pool.add_duty(duty{v.task, duty_kind::final_switch});
  if (!v.autoreap) {
    pool.add_duty(duty{v.task, duty_kind::reap});
  }
}

struct shared_state {
  shared_state(kernel& kern, task_map& m) : k(kern), map(m) {}

  kernel& k;
  task_map& map;
  lifecycle_pool pool;
  std::array<std::atomic<pid_t>, kRecentPids> recent_pids{};  // relaxed: just numbers
  std::atomic<std::size_t> recent_next{0};
  std::atomic<bool> stop{false};  // relaxed: a worker failed, the others finish early
};

// One worker's accounting. Obtained: from_pid_ok + acquire_ok + xchg_out.
// Disposed: released + stored. Equal at the end.
struct worker_counts {
  std::uint64_t ops = 0;
  std::uint64_t from_pid_ok = 0;
  std::uint64_t from_pid_null = 0;
  std::uint64_t acquire_ok = 0;     // from a slot under RCU, of current, of a victim we pin
  std::uint64_t acquire_dying = 0;  // bpf_task_acquire said NULL: rcu_users was 0
  std::uint64_t xchg_out = 0;       // non-NULL references that came out of a slot
  std::uint64_t released = 0;       // bpf_task_release
  std::uint64_t stored = 0;         // moved into a slot by bpf_kptr_xchg
  std::uint64_t slot_reads = 0;
  std::uint64_t slot_empty = 0;
  std::uint64_t lookup_miss = 0;
  std::uint64_t updates = 0;
  std::uint64_t update_exists = 0;
  std::uint64_t update_full = 0;
  std::uint64_t deletes = 0;
  std::uint64_t delete_missing = 0;
  std::uint64_t forks = 0;
  std::uint64_t fork_eagain = 0;
  std::uint64_t exits = 0;
  std::uint64_t final_switches = 0;
  std::uint64_t reaps = 0;
  std::uint64_t reaps_watched = 0;          // reaps done while the worker held a reference
  std::uint64_t reaped_still_numbered = 0;  // ... after which the task still had a pid
  std::uint64_t reaped_still_found = 0;     // ... or bpf_task_from_pid still found it

  worker_counts& operator+=(const worker_counts& o) {
    ops += o.ops;
    from_pid_ok += o.from_pid_ok;
    from_pid_null += o.from_pid_null;
    acquire_ok += o.acquire_ok;
    acquire_dying += o.acquire_dying;
    xchg_out += o.xchg_out;
    released += o.released;
    stored += o.stored;
    slot_reads += o.slot_reads;
    slot_empty += o.slot_empty;
    lookup_miss += o.lookup_miss;
    updates += o.updates;
    update_exists += o.update_exists;
    update_full += o.update_full;
    deletes += o.deletes;
    delete_missing += o.delete_missing;
    forks += o.forks;
    fork_eagain += o.fork_eagain;
    exits += o.exits;
    final_switches += o.final_switches;
    reaps += o.reaps;
    reaps_watched += o.reaps_watched;
    reaped_still_numbered += o.reaped_still_numbered;
    reaped_still_found += o.reaped_still_found;
    return *this;
  }
};

class worker {
 public:
  worker(shared_state& shared, task_struct* prog, int index, std::uint64_t seed)
      : s_(shared), prog_(prog), index_(index), seed_(seed), rng_(seed) {}

  std::uint64_t seed() const noexcept { return seed_; }
  int index() const noexcept { return index_; }
  const worker_counts& counts() const noexcept { return c_; }
  const std::vector<std::string>& problems() const noexcept { return problems_; }
  std::size_t held_at_end() const noexcept { return held_.size(); }

  // The thread's body: runs as the prog task until the deadline, then releases
  // everything it holds, still as the prog (kfuncs need current).
  void run(std::chrono::steady_clock::time_point deadline) {
    auto scope = s_.k.run_as(prog_);
    guarded("run", [&] { loop(deadline); });
    guarded("release at the end", [&] {
      while (!held_.empty()) {
        release(held_.back());
        held_.pop_back();
      }
    });
  }

 private:
  template <class F>
  void guarded(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      problem(fmt::format("{}: exception: {}", what, e.what()));
      s_.stop.store(true, std::memory_order_relaxed);
    }
  }

  void loop(std::chrono::steady_clock::time_point deadline) {
    // The operations, each with its cumulative share of the draws out of 100.
    static constexpr std::array<std::pair<std::uint64_t, void (worker::*)()>, 10> kOps = {{
        {18, &worker::op_from_pid},
        {38, &worker::op_acquire_from_slot},
        {56, &worker::op_xchg_in},
        {62, &worker::op_xchg_out},
        {72, &worker::op_update},
        {77, &worker::op_delete},
        {85, &worker::op_release_one},
        {90, &worker::op_fork},
        {94, &worker::op_exit},
        {100, &worker::op_duty},
    }};
    for (int n = 0;; ++n) {
      if (n % kTimeCheckEvery == 0 && (std::chrono::steady_clock::now() >= deadline ||
                                       s_.stop.load(std::memory_order_relaxed))) {
        return;
      }
      ++c_.ops;
      const std::uint64_t r = below(100);
      for (const auto& [below_percent, op] : kOps) {
        if (r < below_percent) {
          (this->*op)();
          break;
        }
      }
    }
  }

  std::uint64_t below(std::uint64_t n) { return rng_() % n; }
  int pick_key() { return static_cast<int>(below(kKeys)); }

  // Mostly numbers victims had recently (live, reaped, or reused by now), often
  // any number, sometimes one no task can have.
  pid_t pick_pid() {
    const std::uint64_t r = below(10);
    if (r < 5) {
      return s_.recent_pids[static_cast<std::size_t>(below(kRecentPids))].load(
          std::memory_order_relaxed);
    }
    if (r < 9) {
      return static_cast<pid_t>(1 + below(kPidMax));
    }
    constexpr std::array<pid_t, 5> kInvalid = {
        0, -1, kPidMax + 1, std::numeric_limits<pid_t>::max(), std::numeric_limits<pid_t>::min()};
    return kInvalid[static_cast<std::size_t>(below(kInvalid.size()))];
  }

  void problem(std::string what) {
    if (problems_.size() < kProblemsKept) {
      problems_.push_back(std::move(what));
    }
  }

  // What a task we hold a reference to must look like: rcu_users pinned by us,
  // usage pinned by the rcu_users group, neither poisoned.
  void check_held(const task_struct* p, const char* how) {
    const unsigned rcu_users = refcount_read(&p->rcu_users);
    const unsigned usage = refcount_read(&p->usage);
    if (rcu_users == 0 || rcu_users >= kSaneCount || usage == 0 || usage >= kSaneCount) {
      problem(fmt::format("task '{}' (pid {}) held from {}: usage={} rcu_users={}", p->comm, p->pid,
                          how, usage, rcu_users));
    }
  }

  // A task read from a slot inside our RCU section: its memory is ours until the
  // section ends, so usage cannot have reached 0 yet; rcu_users may have.
  void check_rcu_protected(const task_struct* p) {
    const unsigned rcu_users = refcount_read(&p->rcu_users);
    const unsigned usage = refcount_read(&p->usage);
    if (rcu_users >= kSaneCount || usage == 0 || usage >= kSaneCount) {
      problem(fmt::format("task '{}' (pid {}) read from a slot under RCU: usage={} rcu_users={}",
                          p->comm, p->pid, usage, rcu_users));
    }
  }

  void release(task_struct* p) {
    bpf_task_release(p);
    ++c_.released;
  }

  void hold(task_struct* p) {
    if (held_.size() >= kMaxHeld) {
      op_release_one();
    }
    held_.push_back(p);
  }

  task_struct* take_held() {
    if (held_.empty()) {
      return nullptr;
    }
    const std::size_t i = static_cast<std::size_t>(below(held_.size()));
    task_struct* p = held_[i];
    held_[i] = held_.back();
    held_.pop_back();
    return p;
  }

  task_struct* from_pid(pid_t pid) {
    task_struct* p = bpf_task_from_pid(pid);
    if (p == nullptr) {
      ++c_.from_pid_null;
      return nullptr;
    }
    ++c_.from_pid_ok;
    check_held(p, "bpf_task_from_pid");
    return p;
  }

  // ---- the program's operations -----------------------------------------------------------

  void op_from_pid() {
    if (task_struct* p = from_pid(pick_pid())) {
      hold(p);
    }
  }

  void op_release_one() {
    if (task_struct* p = take_held()) {
      check_held(p, "the held set");
      release(p);
    }
  }

  void op_acquire_from_slot() {
    const bpf_rcu_section rcu;
    value* v = lookup_random();
    if (v == nullptr) {
      return;
    }
    ++c_.slot_reads;
    task_struct* p = v->task.get();  // an RCU pointer: valid until the section ends
    if (p == nullptr) {
      ++c_.slot_empty;
      return;
    }
    check_rcu_protected(p);
    task_struct* q = bpf_task_acquire(p);
    if (q == nullptr) {
      ++c_.acquire_dying;  // taken out and released since we read the slot
      return;
    }
    if (q != p) {
      problem("bpf_task_acquire returned another task than its argument");
    }
    ++c_.acquire_ok;
    check_held(q, "bpf_task_acquire of a slot");
    hold(q);
  }

  // A reference of our own: a new lookup, current, or one we already hold.
  task_struct* fresh_reference() {
    switch (below(3)) {
      case 0:
        return from_pid(pick_pid());
      case 1: {
        task_struct* p = bpf_task_acquire(bpf_get_current_task_btf());
        if (p != prog_) {
          problem("bpf_task_acquire(current) did not return current");
          return nullptr;
        }
        ++c_.acquire_ok;
        return p;
      }
      default:
        if (task_struct* p = take_held()) {
          return p;
        }
        return from_pid(pick_pid());
    }
  }

  // The value of a random key, looked up inside the caller's RCU section (a miss
  // is counted).
  value* lookup_random() {
    const int key = pick_key();
    value* v = bpf_map_lookup_elem(&s_.map, &key);
    if (v == nullptr) {
      ++c_.lookup_miss;
    }
    return v;
  }

  // A reference that came out of a slot: checked, then released or kept.
  void took_out(task_struct* old, const char* how) {
    ++c_.xchg_out;
    check_held(old, how);
    if (below(2) == 0) {
      release(old);
    } else {
      hold(old);
    }
  }

  void op_xchg_in() {
    task_struct* ref = fresh_reference();
    if (ref == nullptr) {
      return;
    }
    const bpf_rcu_section rcu;
    value* v = lookup_random();
    if (v == nullptr) {
      release(ref);
      return;
    }
    task_struct* old = bpf_kptr_xchg(&v->task, ref);
    ++c_.stored;
    if (old != nullptr) {
      took_out(old, "bpf_kptr_xchg");
    }
  }

  void op_xchg_out() {
    const bpf_rcu_section rcu;
    value* v = lookup_random();
    if (v == nullptr) {
      return;
    }
    task_struct* old = bpf_kptr_xchg(&v->task, nullptr);
    if (old == nullptr) {
      ++c_.slot_empty;
      return;
    }
    took_out(old, "bpf_kptr_xchg(NULL)");
  }

  void op_update() {
    const int key = pick_key();
    value fresh;
    fresh.tag = key;
    const std::uint64_t flags = below(2) == 0 ? BPF_ANY : BPF_NOEXIST;
    long rc = 0;
    if (below(2) == 0) {
      const bpf_rcu_section rcu;  // as a program does it
      rc = bpf_map_update_elem(&s_.map, &key, &fresh, flags);
    } else {
      rc = bpf_map_update_elem(&s_.map, &key, &fresh, flags);  // as the syscall does
    }
    if (rc == 0) {
      ++c_.updates;
    } else if (rc == -EEXIST && flags == BPF_NOEXIST) {
      ++c_.update_exists;
    } else if (rc == -E2BIG) {
      ++c_.update_full;
    } else {
      problem(fmt::format("bpf_map_update_elem(key {}, flags {}) returned {}", key, flags, rc));
    }
  }

  void op_delete() {
    const int key = pick_key();
    long rc = 0;
    if (below(2) == 0) {
      const bpf_rcu_section rcu;
      rc = bpf_map_delete_elem(&s_.map, &key);
    } else {
      rc = bpf_map_delete_elem(&s_.map, &key);
    }
    if (rc == 0) {
      ++c_.deletes;
    } else if (rc == -ENOENT) {
      ++c_.delete_missing;
    } else {
      problem(fmt::format("bpf_map_delete_elem(key {}) returned {}", key, rc));
    }
  }

  // ---- lifecycle churn ----------------------------------------------------------------------

  void op_fork() {
    if (s_.pool.running_size() >= kMaxRunning) {
      return;
    }
    clone_args args{.comm = "victim"};
    task_struct* parent = below(2) == 0 ? prog_ : nullptr;
    switch (below(10)) {
      case 0:
      case 1:
        args.autoreap = true;
        break;
      case 2:
        args.thread = true;  // same tgid as the prog; always autoreaped
        parent = prog_;
        break;
      default:
        break;
    }
    const fork_result res = s_.k.fork(parent, args);
    if (res.task == nullptr) {
      if (res.error == -EAGAIN) {
        ++c_.fork_eagain;
      } else {
        problem(fmt::format("fork failed with {}", res.error));
      }
      return;
    }
    ++c_.forks;
    const std::size_t slot = s_.recent_next.fetch_add(1, std::memory_order_relaxed) % kRecentPids;
    s_.recent_pids[slot].store(res.task->pid, std::memory_order_relaxed);
    s_.pool.add_running(victim{res.task, args.autoreap || args.thread});
  }

  void op_exit() {
    if (s_.pool.duties_size() + 2 > kMaxDuties) {
      return;
    }
    const victim v = s_.pool.take_running(rng_());
    if (v.task == nullptr) {
      return;
    }
    exit_victim(s_.k, s_.pool, v);
    ++c_.exits;
  }

  void op_duty() {
    const duty d = s_.pool.take_duty(rng_());
    if (d.task == nullptr) {
      return;
    }
    if (d.kind == duty_kind::final_switch) {
      s_.k.finish_task_switch(d.task);
      ++c_.final_switches;
      return;
    }
    if (below(2) != 0) {
      if (!s_.k.wait_task_zombie(d.task)) {
        problem(fmt::format("wait_task_zombie of zombie '{}' (pid {}) failed", d.task->comm,
                            d.task->pid));
      }
      ++c_.reaps;
      return;
    }
    // A program that holds the task while it is reaped: it stays valid, but has
    // no number any more and no lookup finds it.
    task_struct* held = bpf_task_acquire(d.task);  // trusted: our duty pins rcu_users
    if (held == nullptr) {
      problem(fmt::format("bpf_task_acquire of zombie '{}' (pid {}) returned NULL", d.task->comm,
                          d.task->pid));
      s_.k.wait_task_zombie(d.task);
      ++c_.reaps;
      return;
    }
    ++c_.acquire_ok;
    const pid_t nr = held->pid;
    if (!s_.k.wait_task_zombie(d.task)) {
      problem(fmt::format("wait_task_zombie of zombie '{}' (pid {}) failed", d.task->comm, nr));
    }
    ++c_.reaps;
    ++c_.reaps_watched;
    check_held(held, "a reap");
    if (task_pid_nr_ns(held, &s_.k.init_pid_ns()) != 0 || task_active_pid_ns(held) != nullptr) {
      ++c_.reaped_still_numbered;
    }
    if (task_struct* again = from_pid(nr)) {
      if (again == held) {
        ++c_.reaped_still_found;
      }
      release(again);  // the number may have gone to a new task already
    }
    release(held);
  }

  shared_state& s_;
  task_struct* const prog_;
  const int index_;
  const std::uint64_t seed_;
  std::mt19937_64 rng_;
  worker_counts c_;
  std::vector<task_struct*> held_;  // references this worker owns
  std::vector<std::string> problems_;
};

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) {
    out += "\n  ";
    out += l;
  }
  return out;
}

class KfuncStressTest : public test::stress_test {
 protected:
  kernel_config config() const override {
    // The newest kernel: a reference a program exchanges into an element another
    // thread deleted meanwhile is released when the element is reclaimed (older
    // kernels leak it; kfuncs.md, the xchg-after-delete rule).
    return {.name = "kfunc-stress",
            .profile = semantics_profile::newest,
            .pid_max = kPidMax,
            .final_put = final_put()};
  }
  void run();
};

void KfuncStressTest::run() {
  const int threads = this->threads();
  kernel& k = this->k();
  auto map = std::make_unique<task_map>(k, kMaxEntries, "tasks");
  shared_state shared(k, *map);

  std::vector<task_struct*> progs;
  std::vector<std::unique_ptr<worker>> workers;
  for (int i = 0; i < threads; ++i) {
    task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
    ASSERT_NE(prog, nullptr);
    progs.push_back(prog);
    workers.push_back(std::make_unique<worker>(shared, prog, i, worker_seed(i)));
  }

  const auto duration = test::stress_duration();
  std::latch start_line(threads + 1);
  std::vector<std::thread> runners;
  for (auto& w : workers) {
    runners.emplace_back([&, self = w.get()] {
      SCOPED_TRACE(fmt::format("worker {} seed {:#x}", self->index(), self->seed()));
      start_line.arrive_and_wait();
      self->run(std::chrono::steady_clock::now() + duration);
    });
  }
  const auto start = std::chrono::steady_clock::now();
  start_line.arrive_and_wait();
  for (std::thread& t : runners) {
    t.join();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Single-threaded from here. Every run_as scope has ended.
  worker_counts total;
  for (const auto& w : workers) {
    SCOPED_TRACE(fmt::format("worker {} seed {:#x}", w->index(), w->seed()));
    const worker_counts& c = w->counts();
    EXPECT_TRUE(w->problems().empty()) << join(w->problems());
    EXPECT_EQ(w->held_at_end(), 0U);
    EXPECT_EQ(c.from_pid_ok + c.acquire_ok + c.xchg_out, c.released + c.stored)
        << "every reference obtained (from_pid " << c.from_pid_ok << ", acquire " << c.acquire_ok
        << ", xchg out " << c.xchg_out << ") is released (" << c.released << ") or stored ("
        << c.stored << ") exactly once";
    EXPECT_EQ(c.reaped_still_numbered, 0U)
        << "of " << c.reaps_watched
        << " tasks held across their reap, these still had a pid number afterwards "
           "(task_pid_nr_ns / task_active_pid_ns after release_task)";
    EXPECT_EQ(c.reaped_still_found, 0U) << "bpf_task_from_pid found a reaped task";
    total += c;
  }

  // Clear the map: each delete releases the reference its slot still holds.
  std::uint64_t final_deletes = 0;
  for (int key = 0; key < kKeys; ++key) {
    if (bpf_map_delete_elem(map.get(), &key) == 0) {
      ++final_deletes;
    }
  }
  EXPECT_EQ(map->count(), 0U);
  map.reset();

  // Retire every victim: exit the running ones, then do every duty, the final
  // switches and reaps in random order (either death order, docs/kernel.md §2).
  std::mt19937_64 rng(test::splitmix64(seed() ^ 0xfeedULL));
  std::uint64_t final_retired = 0;
  for (victim v = shared.pool.take_running(rng()); v.task != nullptr;
       v = shared.pool.take_running(rng())) {
    exit_victim(k, shared.pool, v);
    ++final_retired;
  }
  for (duty d = shared.pool.take_duty(rng()); d.task != nullptr; d = shared.pool.take_duty(rng())) {
    if (d.kind == duty_kind::final_switch) {
      k.finish_task_switch(d.task);
    } else {
      EXPECT_TRUE(k.wait_task_zombie(d.task));
    }
  }
  // And the progs, now that nothing runs as them: not retire, the reap and the
  // final switch come in either order.
  for (task_struct* prog : progs) {
    k.do_exit(prog);
    if (rng() % 2 == 0) {
      k.finish_task_switch(prog);
      EXPECT_TRUE(k.wait_task_zombie(prog));
    } else {
      EXPECT_TRUE(k.wait_task_zombie(prog));
      k.finish_task_switch(prog);
    }
  }
  k.rcu().rcu_barrier();

  // Every task freed once, after its grace period, nothing leaked, no violation
  // and no warning: the kit's end-of-test invariants (TearDown).
  const kernel_stats s = k.stats();
  EXPECT_EQ(s.forked, total.forks + static_cast<std::uint64_t>(threads));
  EXPECT_EQ(s.forked, s.freed) << "every forked task freed before the teardown";
  EXPECT_EQ(s.fork_failures, total.fork_eagain);

  // The run did what it is for.
  EXPECT_GT(total.from_pid_ok, 0U);
  EXPECT_GT(total.acquire_ok, 0U);
  EXPECT_GT(total.stored, 0U);
  EXPECT_GT(total.xchg_out, 0U);
  EXPECT_GT(total.forks, 0U);
  EXPECT_GT(total.reaps, 0U);

  auto prop = [](const char* key, std::uint64_t v) { RecordProperty(key, std::to_string(v)); };
  prop("ops", total.ops);
  prop("ops_per_second", static_cast<std::uint64_t>(static_cast<double>(total.ops) / seconds));
  prop("from_pid_ok", total.from_pid_ok);
  prop("from_pid_null", total.from_pid_null);
  prop("acquire_ok", total.acquire_ok);
  prop("acquire_dying", total.acquire_dying);
  prop("slot_reads", total.slot_reads);
  prop("slot_empty", total.slot_empty);
  prop("stored", total.stored);
  prop("xchg_out", total.xchg_out);
  prop("released", total.released);
  prop("released_by_map", total.stored - total.xchg_out);
  prop("updates", total.updates);
  prop("update_exists", total.update_exists);
  prop("update_full", total.update_full);
  prop("deletes", total.deletes + final_deletes);
  prop("forks", total.forks);
  prop("fork_eagain", total.fork_eagain);
  prop("exits", total.exits + final_retired);
  prop("final_switches", total.final_switches);
  prop("reaps", total.reaps);
  prop("reaps_watched", total.reaps_watched);
}

TEST_P(KfuncStressTest, ProgramsHoldLookUpAndStashTasksWhileTheyDie) {
  run();
}

INSTANTIATE_TEST_SUITE_P(Stress, KfuncStressTest, test::stress_params(), test::stress_param_name);

}  // namespace
}  // namespace tasklife
