// Task lifetimes under load. N threads share one kernel and, for a bounded time,
// randomly fork tasks (root or child, sometimes autoreaped, CLONE_THREAD or
// CLONE_NEWPID, sometimes with an injected failure), exit the tasks they run,
// and hand the two rcu_users drops of a dead task (the final switch and the
// reap) to a shared pool, so either order happens, from either thread, and a
// waiter can race with do_exit itself. Meanwhile they look random (often
// recently used, so reused) pids up under RCU and pin what they find the way
// bpf_task_acquire does (refcount_inc_not_zero on rcu_users) or with a usage
// reference (tryget/get_task_struct), check the task's fields while they hold
// it, and release it later, themselves or after handing it to another thread
// (a kptr stashed in a map). pid_max is small, so numbers wrap and are reused.
//
// At the end every reference is released exactly once, every task has been
// exited, switched away from and reaped, and after rcu_barrier every forked
// task has gone through exactly one grace period and been freed: no leak, no
// contract violation (use-after-free of a poisoned task included), no refcount
// warning. ASan/TSan presets catch what the checks cannot see.
//
// Reproduce a run's random choices (not its interleaving) with
// TASKLIFE_STRESS_SEED=<the seed printed on failure>.
#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/refcount.hpp>
#include <tasklife/task.hpp>

#include "../support/stress_config.hpp"
#include "../support/stress_fixture.hpp"

namespace tasklife {
namespace {

constexpr int kPidMax = 4096;
constexpr std::size_t kMaxRunningPerThread = 24;  // tasks a thread runs (will exit)
constexpr std::size_t kMaxRefsPerThread = 32;     // references a thread holds
constexpr std::size_t kMaxDuties = 256;           // pending final switches and reaps
constexpr std::size_t kMaxStash = 64;             // references handed between threads
constexpr int kMaxNamespaces = 1024;              // CLONE_NEWPID budget per kernel (memory)
constexpr unsigned kMaxNamespaceLevel = 4;
constexpr unsigned kSaneCount = 1U << 16;  // no counter gets anywhere near this
constexpr std::size_t kProblemsKept = 8;
constexpr std::chrono::milliseconds kCheckpointEvery{100};

constexpr std::array<const char*, 8> kComms = {"lc-w0", "lc-w1", "lc-w2", "lc-w3",
                                               "lc-w4", "lc-w5", "lc-w6", "lc-w7"};

enum class ref_kind : std::uint8_t { rcu_user, usage };

// A reference held by the test: released exactly once, by whoever holds it.
struct held_ref {
  task_struct* task;
  ref_kind kind;
  int acquirer;  // the thread that took it, for the per-thread balance
};

// The two rcu_users drops a dead task is owed. Whoever holds a duty holds the
// rcu_users reference it drops, so the task cannot go away under it.
enum class duty_kind : std::uint8_t { final_switch, reap };
struct duty {
  task_struct* task;
  duty_kind kind;
};

struct running_task {
  task_struct* task;
  bool autoreaped;      // clone_args::autoreap or ::thread: no reap duty
  bool namespace_init;  // CLONE_NEWPID: pid 1 of its namespace, long-lived like a container's
  bool parent_reported = false;
};

// Test-side hand-off between threads. The mutex guards the containers only; no
// library call is made under it.
struct shared_state {
  explicit shared_state(int threads) : released_for(static_cast<std::size_t>(threads)) {}

  std::mutex mutex;
  std::vector<duty> duties;     // guarded by mutex
  std::vector<held_ref> stash;  // guarded by mutex
  std::atomic<std::size_t> nr_duties{0};

  // Root pids of recent forks: lookups aim at them half of the time, so they hit
  // tasks being exited, reaped and numbers being reused.
  std::array<std::atomic<pid_t>, 64> recent_pids{};
  std::atomic<unsigned> recent_next{0};
  // CLONE_NEWPID is paced over the run: namespaces live as long as the kernel.
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::duration duration{};
  std::atomic<int> namespaces_created{0};
  // Releases counted for the thread that took the reference.
  std::vector<std::atomic<long>> released_for;
};

struct worker_counts {
  long ops = 0;
  long forks = 0;
  long fork_injected_failures = 0;
  long fork_eagain = 0;
  long new_namespaces = 0;
  long exits = 0;
  long final_switches = 0;
  long reaps = 0;
  long reap_retries = 0;
  long lookups = 0;
  long found = 0;
  long rcu_acquires = 0;
  long rcu_acquire_refused = 0;
  long trygets = 0;
  long tryget_refused = 0;
  long gets = 0;
  long upgrades = 0;
  long releases = 0;
  long handed_off = 0;
  long field_checks = 0;
  long barriers = 0;
  long acquired = 0;  // references this thread took
  long problem_count = 0;
  std::vector<std::string> problems;  // the first kProblemsKept
  long parent_problem_count = 0;      // bad real_parent links seen at checkpoints
  std::vector<std::string> parent_problems;

  worker_counts& operator+=(const worker_counts& o) {
    ops += o.ops;
    forks += o.forks;
    fork_injected_failures += o.fork_injected_failures;
    fork_eagain += o.fork_eagain;
    new_namespaces += o.new_namespaces;
    exits += o.exits;
    final_switches += o.final_switches;
    reaps += o.reaps;
    reap_retries += o.reap_retries;
    lookups += o.lookups;
    found += o.found;
    rcu_acquires += o.rcu_acquires;
    rcu_acquire_refused += o.rcu_acquire_refused;
    trygets += o.trygets;
    tryget_refused += o.tryget_refused;
    gets += o.gets;
    upgrades += o.upgrades;
    releases += o.releases;
    handed_off += o.handed_off;
    field_checks += o.field_checks;
    barriers += o.barriers;
    acquired += o.acquired;
    problem_count += o.problem_count;
    parent_problem_count += o.parent_problem_count;
    return *this;
  }
};

// What a task must look like to whoever keeps it alive: a holder of usage or
// rcu_users, the thread running it, or an RCU reader that found it hashed. A
// freed task is poisoned (usage and flags read 0x6b6b6b6b) in checked builds.
// Returns what is wrong, or an empty string.
std::string insane(kernel& k, const task_struct* t, bool rcu_users_pinned) {
  // exit_state and state first, with acquire: PF_EXITING was set before either
  // changed (do_exit), so it must be visible once they have.
  const int exit_state = t->exit_state.load(std::memory_order_acquire);
  const unsigned state = t->state.load(std::memory_order_acquire);
  const unsigned flags = t->flags.load(std::memory_order_acquire);
  const unsigned usage = refcount_read(&t->usage);
  const unsigned rcu_users = refcount_read(&t->rcu_users);
  const auto describe = [&](std::string_view what) {
    return fmt::format(
        "task {} (pid {}, comm '{}'): {} [usage={} rcu_users={} flags={:#x} state={:#x} "
        "exit_state={:#x}]",
        static_cast<const void*>(t), t->pid,
        std::string_view(t->comm, strnlen(t->comm, TASK_COMM_LEN)), what, static_cast<int>(usage),
        static_cast<int>(rcu_users), flags, state, exit_state);
  };
  if (usage == 0 || usage > kSaneCount) {
    return describe("usage is not a live count");
  }
  if (rcu_users > kSaneCount || (rcu_users_pinned && rcu_users == 0)) {
    return describe("rcu_users is not a live count");
  }
  if ((flags & ~PF_EXITING) != 0) {
    return describe("flags other than PF_EXITING");
  }
  if (state != TASK_RUNNING && state != TASK_DEAD) {
    return describe("state is neither TASK_RUNNING nor TASK_DEAD");
  }
  if (exit_state != 0 && exit_state != EXIT_ZOMBIE && exit_state != EXIT_DEAD) {
    return describe("exit_state is not 0, EXIT_ZOMBIE or EXIT_DEAD");
  }
  if ((state == TASK_DEAD || exit_state != 0) && (flags & PF_EXITING) == 0) {
    return describe("dead or exited without PF_EXITING");
  }
  if (t->pid < 1 || t->pid > kPidMax || t->tgid < 1 || t->tgid > kPidMax) {
    return describe("pid or tgid out of [1, pid_max]");
  }
  // A released task has no number any more (detach_pid), a live one its pid;
  // another thread may release it at any moment, so 0 is always an answer.
  const pid_t nr = task_pid_nr_ns(t, &k.init_pid_ns());
  if (nr != t->pid && nr != 0) {
    return describe("task_pid_nr_ns(init_pid_ns) is neither its pid nor 0");
  }
  if (std::memchr(t->comm, '\0', TASK_COMM_LEN) == nullptr ||
      std::strncmp(t->comm, "lc-w", 4) != 0) {
    return describe("comm is not one the test gave");
  }
  return {};
}

class worker {
 public:
  worker(kernel& k, shared_state& shared, int index, std::uint64_t seed)
      : k_(k), shared_(shared), index_(index), seed_(seed), rng_(seed) {}

  std::uint64_t seed() const { return seed_; }
  const worker_counts& counts() const { return c_; }

  void run(std::chrono::steady_clock::time_point deadline) {
    guarded([&] {
      while (std::chrono::steady_clock::now() < deadline) {
        for (int i = 0; i < 64; ++i) {
          step();
        }
      }
    });
  }

  // With every worker stopped (quiescent, so the links under tasklist_lock can be
  // read), the parent links of the tasks this thread runs: a task is never its
  // own parent, and a parent is a live task (an exiting one hands its children on).
  // Each bad link is reported once.
  void check_parents() {
    for (running_task& r : running_) {
      const task_struct* parent = r.task->real_parent;
      std::string bad;
      if (parent == r.task) {
        bad = fmt::format("task pid {} (vpid {} in a level-{} namespace) is its own real_parent",
                          r.task->pid, task_pid_nr_ns(r.task, task_active_pid_ns(r.task)),
                          task_active_pid_ns(r.task)->level());
      } else if (parent != nullptr && !k_.is_allocated(parent)) {
        // Not dereferenced: it may be gone.
        bad = fmt::format("task pid {} has a real_parent that is not a live task", r.task->pid);
      }
      if (!bad.empty() && !r.parent_reported) {
        r.parent_reported = true;
        ++c_.parent_problem_count;
        if (c_.parent_problems.size() < kProblemsKept) {
          c_.parent_problems.push_back(std::move(bad));
        }
      }
    }
  }

  // Releases every reference still held and exits every task still running,
  // performing or handing off their final switch and reap.
  void finish() {
    guarded([&] {
      while (!refs_.empty()) {
        release_at(refs_.size() - 1);
      }
      while (!running_.empty()) {
        exit_one(running_.size() - 1);
      }
    });
  }

 private:
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (const testkit::contract_error& e) {
      problem(std::string("contract violation: ") + e.what());
    } catch (const std::exception& e) {
      problem(std::string("exception: ") + e.what());
    }
  }

  void problem(std::string what) {
    ++c_.problem_count;
    if (c_.problems.size() < kProblemsKept) {
      c_.problems.push_back(std::move(what));
    }
  }

  bool one_in(unsigned n) { return std::uniform_int_distribution<unsigned>(0, n - 1)(rng_) == 0; }
  std::size_t pick(std::size_t size) {
    return std::uniform_int_distribution<std::size_t>(0, size - 1)(rng_);
  }

  void check(const task_struct* t, bool rcu_users_pinned) {
    ++c_.field_checks;
    if (std::string bad = insane(k_, t, rcu_users_pinned); !bad.empty()) {
      problem(std::move(bad));
    }
  }

  void step() {
    ++c_.ops;
    const unsigned dice = std::uniform_int_distribution<unsigned>(0, 99)(rng_);
    if (dice < 15) {
      fork_one();
    } else if (dice < 25) {
      if (!running_.empty()) {
        const std::size_t at = pick(running_.size());
        if (!running_[at].namespace_init || one_in(8)) {
          exit_one(at);
        }
      }
    } else if (dice < 40) {
      do_duty();
    } else if (dice < 70) {
      lookup();
    } else if (dice < 75) {
      upgrade();
    } else if (dice < 90) {
      if (!refs_.empty()) {
        release_at(pick(refs_.size()));
      }
    } else if (dice < 96) {
      hand_off();
    } else if (dice < 99) {
      check_held();
    } else if (one_in(2000)) {
      // Rarely, an rcu_barrier (or a grace period) while callbacks and their
      // chains are being queued from every side.
      ++c_.barriers;
      if (one_in(2)) {
        k_.rcu().rcu_barrier();
      } else {
        k_.rcu().synchronize_rcu();
      }
    }
  }

  void fork_one() {
    if (running_.size() >= kMaxRunningPerThread ||
        shared_.nr_duties.load(std::memory_order_relaxed) >= kMaxDuties) {
      do_duty();
      return;
    }
    task_struct* parent =
        running_.empty() || one_in(8) ? nullptr : running_[pick(running_.size())].task;
    clone_args args;
    args.comm = parent != nullptr && one_in(2) ? nullptr : kComms[static_cast<std::size_t>(index_)];
    args.thread = parent != nullptr && one_in(16);
    args.autoreap = !args.thread && one_in(3);
    if (!args.thread && one_in(24)) {
      const unsigned level = parent != nullptr ? task_active_pid_ns(parent)->level() : 0U;
      args.new_pid_ns = level < kMaxNamespaceLevel && may_create_namespace();
    }
    args.trace = one_in(64);
    if (one_in(64)) {
      args.fail = one_in(2) ? fork_failure::before_pid_alloc : fork_failure::after_pid_alloc;
    }
    const fork_result r = k_.fork(parent, args);
    c_.new_namespaces += args.new_pid_ns ? 1 : 0;
    if (!r) {
      if (args.fail != fork_failure::none) {
        ++c_.fork_injected_failures;
      } else if (r.error == -EAGAIN) {
        ++c_.fork_eagain;
      } else {
        problem(fmt::format("fork failed with {}", r.error));
      }
      return;
    }
    if (args.fail != fork_failure::none) {
      problem("a fork with an injected failure succeeded");
    }
    ++c_.forks;
    running_.push_back({r.task, args.autoreap || args.thread, args.new_pid_ns});
    const unsigned slot = shared_.recent_next.fetch_add(1, std::memory_order_relaxed);
    shared_.recent_pids[slot % shared_.recent_pids.size()].store(r.task->pid,
                                                                 std::memory_order_relaxed);
    check(r.task, true);
    if (refcount_read(&r.task->rcu_users) < 2) {
      // Lookups may pin it already (it is hashed), but nothing can have dropped
      // one of the two rcu_users of a task that has not exited.
      problem(fmt::format("new task pid {}: rcu_users={}", r.task->pid,
                          refcount_read(&r.task->rcu_users)));
    }
  }

  bool may_create_namespace() {
    const auto elapsed = std::chrono::steady_clock::now() - shared_.start;
    const double budget = kMaxNamespaces * std::chrono::duration<double>(elapsed).count() /
                          std::chrono::duration<double>(shared_.duration).count();
    int created = shared_.namespaces_created.load(std::memory_order_relaxed);
    do {
      if (created >= kMaxNamespaces || created >= budget) {
        return false;
      }
    } while (!shared_.namespaces_created.compare_exchange_weak(created, created + 1,
                                                               std::memory_order_relaxed));
    return true;
  }

  void push_duty(task_struct* t, duty_kind kind) {
    const std::lock_guard lock(shared_.mutex);
    shared_.duties.push_back({t, kind});
    shared_.nr_duties.store(shared_.duties.size(), std::memory_order_relaxed);
  }

  // do_exit a task this thread runs; then its final switch and (unless it was
  // autoreaped) its reap, each done now or handed to the pool. The reap may be
  // handed off before do_exit, so a waiter races with the exit itself.
  void exit_one(std::size_t at) {
    const running_task r = running_[at];
    running_[at] = running_.back();
    running_.pop_back();
    task_struct* t = r.task;
    bool reap_owed = !r.autoreaped;
    if (reap_owed && one_in(4)) {
      push_duty(t, duty_kind::reap);
      reap_owed = false;
    }
    k_.do_exit(t, 0);
    ++c_.exits;
    // From here on the thread holds the duties still owed; the task stays valid
    // until the last of them is performed or handed off, and not a moment longer.
    bool switch_now = one_in(2);
    bool reap_now = reap_owed && one_in(2);
    if (!switch_now) {
      push_duty(t, duty_kind::final_switch);
    }
    if (reap_owed && !reap_now) {
      push_duty(t, duty_kind::reap);
    }
    if (switch_now && reap_now && one_in(2)) {
      reap(t);  // order A reversed: reaped before the final switch, same thread
      reap_now = false;
    }
    if (switch_now) {
      k_.finish_task_switch(t);
      ++c_.final_switches;
    }
    if (reap_now) {
      reap(t);
    }
  }

  void reap(task_struct* t) {
    if (k_.wait_task_zombie(t)) {
      ++c_.reaps;
    } else {
      problem("wait_task_zombie refused a zombie only this thread waits for");
    }
  }

  void do_duty() {
    duty d{};
    {
      const std::lock_guard lock(shared_.mutex);
      if (shared_.duties.empty()) {
        return;
      }
      const std::size_t at = pick(shared_.duties.size());
      d = shared_.duties[at];
      shared_.duties[at] = shared_.duties.back();
      shared_.duties.pop_back();
      shared_.nr_duties.store(shared_.duties.size(), std::memory_order_relaxed);
    }
    if (d.kind == duty_kind::final_switch) {
      k_.finish_task_switch(d.task);
      ++c_.final_switches;
    } else if (k_.wait_task_zombie(d.task)) {
      ++c_.reaps;
    } else {
      // Not a zombie yet: its do_exit has not reached exit_notify. Try later.
      ++c_.reap_retries;
      push_duty(d.task, duty_kind::reap);
    }
  }

  pid_t pick_pid() {
    const unsigned dice = std::uniform_int_distribution<unsigned>(0, 99)(rng_);
    if (dice < 50) {
      return shared_.recent_pids[pick(shared_.recent_pids.size())].load(std::memory_order_relaxed);
    }
    if (dice < 52) {
      constexpr std::array<pid_t, 4> odd = {0, -1, kPidMax + 1, 0x7fffffff};
      return odd[pick(odd.size())];
    }
    return std::uniform_int_distribution<pid_t>(1, kPidMax)(rng_);
  }

  void hold(task_struct* t, ref_kind kind) {
    refs_.push_back({t, kind, index_});
    ++c_.acquired;
  }

  // bpf_task_from_pid and friends: find the task in the root namespace under
  // RCU, check it, and pin it (rcu_users as bpf_task_acquire, or usage).
  void lookup() {
    ++c_.lookups;
    const pid_t nr = pick_pid();
    const bool may_hold = refs_.size() < kMaxRefsPerThread;
    const rcu_read_guard guard(k_.rcu());
    task_struct* t = find_task_by_pid_ns(nr, &k_.init_pid_ns());
    if (t == nullptr) {
      return;
    }
    ++c_.found;
    if (t->pid != nr) {
      problem(fmt::format("find_task_by_pid_ns({}) returned a task whose pid is {}", nr, t->pid));
    }
    // Found hashed inside the section: its rcu_users drop to 0 (if any) comes
    // after the unhash, so the grace period before the usage drop waits for us.
    check(t, false);
    if (!may_hold) {
      return;
    }
    switch (std::uniform_int_distribution<int>(0, 3)(rng_)) {
      case 0:
      case 1:
        // bpf_task_acquire: refused once rcu_users has reached 0.
        if (refcount_inc_not_zero(&t->rcu_users)) {
          ++c_.rcu_acquires;
          hold(t, ref_kind::rcu_user);
        } else {
          ++c_.rcu_acquire_refused;
        }
        break;
      case 2:
        // usage cannot reach 0 before our section ends (see above).
        if (task_struct* got = tryget_task_struct(t); got != nullptr) {
          ++c_.trygets;
          hold(got, ref_kind::usage);
        } else {
          ++c_.tryget_refused;
          problem(fmt::format("tryget_task_struct refused pid {} found hashed under RCU", nr));
        }
        break;
      default:
        ++c_.gets;
        hold(get_task_struct(t), ref_kind::usage);
        break;
    }
  }

  // A usage reference taken outside any read section, on a task this thread
  // keeps alive through an rcu_users reference.
  void upgrade() {
    if (refs_.empty() || refs_.size() >= kMaxRefsPerThread) {
      return;
    }
    const held_ref r = refs_[pick(refs_.size())];
    if (r.kind != ref_kind::rcu_user) {
      return;
    }
    ++c_.upgrades;
    hold(get_task_struct(r.task), ref_kind::usage);
    check(r.task, true);
  }

  void release_at(std::size_t at) {
    const held_ref r = refs_[at];
    refs_[at] = refs_.back();
    refs_.pop_back();
    check(r.task, r.kind == ref_kind::rcu_user);
    if (r.kind == ref_kind::rcu_user) {
      put_task_struct_rcu_user(r.task);  // bpf_task_release
    } else {
      put_task_struct(r.task);
    }
    ++c_.releases;
    shared_.released_for[static_cast<std::size_t>(r.acquirer)].fetch_add(1,
                                                                         std::memory_order_relaxed);
  }

  // A reference stored for another thread to release (a kptr in a map), or one
  // taken over from another thread.
  void hand_off() {
    if (one_in(2) && !refs_.empty()) {
      const std::size_t at = pick(refs_.size());
      const held_ref r = refs_[at];
      {
        const std::lock_guard lock(shared_.mutex);
        if (shared_.stash.size() >= kMaxStash) {
          return;
        }
        shared_.stash.push_back(r);
      }
      refs_[at] = refs_.back();
      refs_.pop_back();
      ++c_.handed_off;
      return;
    }
    if (refs_.size() >= kMaxRefsPerThread) {
      return;
    }
    const std::lock_guard lock(shared_.mutex);
    if (!shared_.stash.empty()) {
      const std::size_t at = pick(shared_.stash.size());
      refs_.push_back(shared_.stash[at]);
      shared_.stash[at] = shared_.stash.back();
      shared_.stash.pop_back();
    }
  }

  void check_held() {
    if (!refs_.empty()) {
      const held_ref& r = refs_[pick(refs_.size())];
      check(r.task, r.kind == ref_kind::rcu_user);
    }
    if (!running_.empty()) {
      check(running_[pick(running_.size())].task, true);
    }
  }

  kernel& k_;
  shared_state& shared_;
  const int index_;
  const std::uint64_t seed_;
  std::mt19937_64 rng_;
  worker_counts c_;
  std::vector<running_task> running_;
  std::vector<held_ref> refs_;
};

class LifecycleStressTest : public test::stress_test {
 protected:
  kernel_config config() const override {
    return {.name = "lifecycle-stress",
            .pid_max = kPidMax,
            .final_put = final_put(),
            .history_capacity = std::size_t{1} << 14};
  }
  void run();
};

void LifecycleStressTest::run() {
  const int threads = this->threads();
  kernel& k = this->k();
  shared_state shared(threads);
  std::vector<worker> workers;
  workers.reserve(static_cast<std::size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back(k, shared, i, worker_seed(i));
  }

  const auto duration =
      std::max<std::chrono::steady_clock::duration>(test::stress_duration(), kCheckpointEvery / 10);
  const auto start = std::chrono::steady_clock::now();
  shared.start = start;
  shared.duration = duration;
  // The run is cut into segments; between two, every worker stops (quiescent)
  // and checks the parent links of the tasks it runs.
  const long segments = std::max<long>(1, duration / kCheckpointEvery);
  std::barrier quiescent(threads);
  std::vector<std::thread> pool;
  for (worker& w : workers) {
    pool.emplace_back([&, self = &w] {
      SCOPED_TRACE(fmt::format("worker seed {:#x}", self->seed()));
      const rcu_thread_registration reg(k.rcu());
      for (long i = 1; i <= segments; ++i) {
        self->run(start + duration * i / segments);
        quiescent.arrive_and_wait();  // nobody forks, exits or reaps now
        self->check_parents();
        quiescent.arrive_and_wait();
      }
      self->finish();
    });
  }
  for (std::thread& t : pool) {
    t.join();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Single-threaded from here: whatever is left in the stash and the pool.
  long cleanup_releases = 0;
  for (const held_ref& r : shared.stash) {
    if (r.kind == ref_kind::rcu_user) {
      put_task_struct_rcu_user(r.task);
    } else {
      put_task_struct(r.task);
    }
    shared.released_for[static_cast<std::size_t>(r.acquirer)].fetch_add(1);
    ++cleanup_releases;
  }
  shared.stash.clear();
  long cleanup_duties = 0;
  for (const duty& d : shared.duties) {
    if (d.kind == duty_kind::final_switch) {
      k.finish_task_switch(d.task);
    } else {
      // Every task has been exited by now: each reap must succeed.
      EXPECT_TRUE(k.wait_task_zombie(d.task)) << "pid " << d.task->pid;
    }
    ++cleanup_duties;
  }
  shared.duties.clear();
  k.rcu().rcu_barrier();

  worker_counts total;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const worker_counts& c = workers[i].counts();
    total += c;
    EXPECT_EQ(c.problem_count, 0) << "worker " << i << " (seed "
                                  << fmt::format("{:#x}", workers[i].seed())
                                  << "): " << fmt::format("{}", fmt::join(c.problems, "\n  "));
    EXPECT_EQ(shared.released_for[i].load(), c.acquired)
        << "worker " << i << ": every reference it took is released exactly once";
    // An exiting parent's children go to the reaper of the *parent's* namespace
    // (find_new_reaper), never to themselves.
    EXPECT_EQ(c.parent_problem_count, 0)
        << "worker " << i << " (seed " << fmt::format("{:#x}", workers[i].seed())
        << "), bad real_parent links: " << fmt::format("{}", fmt::join(c.parent_problems, "\n  "));
  }

  // Every task freed once, after exactly one grace period (rcu_users reached 0
  // once per task), every pid number given back, nothing leaked or pending, no
  // violation and no warning: the kit's end-of-test invariants (TearDown).
  const kernel_stats s = k.stats();
  EXPECT_EQ(static_cast<long>(s.forked), total.forks);
  EXPECT_EQ(static_cast<long>(s.fork_failures), total.fork_injected_failures);
  EXPECT_EQ(s.freed, s.forked) << "every forked task is freed before the teardown";
  EXPECT_EQ(total.exits, total.forks);
  EXPECT_EQ(total.tryget_refused, 0);
  EXPECT_TRUE(k.allocated_tasks().empty());

  EXPECT_GT(total.forks, 0);
  EXPECT_GT(total.found, 0);
  EXPECT_GT(total.rcu_acquires, 0);
  RecordProperty("seed", hex(seed()));
  RecordProperty("ops", std::to_string(total.ops));
  RecordProperty("ops_per_second",
                 std::to_string(static_cast<long>(static_cast<double>(total.ops) / seconds)));
  RecordProperty("forks", std::to_string(total.forks));
  RecordProperty("fork_eagain", std::to_string(total.fork_eagain));
  RecordProperty("fork_injected_failures", std::to_string(total.fork_injected_failures));
  RecordProperty("new_pid_namespaces", std::to_string(total.new_namespaces));
  RecordProperty("final_switches", std::to_string(total.final_switches));
  RecordProperty("reaps", std::to_string(total.reaps));
  RecordProperty("reap_retries", std::to_string(total.reap_retries));
  RecordProperty("lookups", std::to_string(total.lookups));
  RecordProperty("lookups_found", std::to_string(total.found));
  RecordProperty("rcu_acquires", std::to_string(total.rcu_acquires));
  RecordProperty("rcu_acquires_refused", std::to_string(total.rcu_acquire_refused));
  RecordProperty("usage_acquires", std::to_string(total.trygets + total.gets + total.upgrades));
  RecordProperty("handed_off", std::to_string(total.handed_off));
  RecordProperty("field_checks", std::to_string(total.field_checks));
  RecordProperty("barriers", std::to_string(total.barriers));
  RecordProperty("cleanup", std::to_string(cleanup_releases + cleanup_duties));
}

TEST_P(LifecycleStressTest, FreesEveryTaskOnceAndNeverUnderAHolder) {
  run();
}

INSTANTIATE_TEST_SUITE_P(Stress, LifecycleStressTest, test::stress_params(),
                         test::stress_param_name);

}  // namespace
}  // namespace tasklife
