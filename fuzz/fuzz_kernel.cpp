// The differential fuzzer (issue 14): bytes decode into a legal sequence of
// operations on one kernel, and every result is checked against a small model of
// the kernel's rules written here, independently of the library: the counters
// of every task, which pid resolves to which task in which namespace, what is
// freed when (and what is still waiting for a grace period), and which violation
// a program gets from the run-time verifier. Any contract violation, refcount
// warning or divergence aborts with the operations so far (libFuzzer then saves
// the input); the sanitizers catch the rest.
//
// An input: a header (semantics profile, final-put mode, memcg, history, pid_max),
// then one operation per byte group. Operations are only generated where they
// are legal (a put needs a reference the fuzzer holds, a final switch needs an
// exited task, ...), except for the program misuses whose verdict is part of the
// model (a reference left unreleased, a double release).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/tasklife.hpp>

namespace {

using namespace tasklife;

// ---- input -----------------------------------------------------------------------------------

class bytes {
 public:
  bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool empty() const noexcept { return pos_ >= size_; }
  std::uint8_t next() noexcept { return pos_ < size_ ? data_[pos_++] : 0; }
  // A value in [0, n).
  std::size_t pick(std::size_t n) noexcept { return n == 0 ? 0 : next() % n; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// ---- failure -----------------------------------------------------------------------------------

std::vector<std::string>* g_trace = nullptr;
// Operations and inputs run in this process (printed at exit: the fuzzing figures).
std::uint64_t g_operations = 0;
std::uint64_t g_inputs = 0;
// Callbacks the native domain has run (the fuzzer's, on liburcu's worker thread;
// read after rcu_barrier, which orders them before its return).
std::atomic<std::uint64_t> g_native_callbacks{0};
// The domain a callback calls rcu_barrier on (a misuse; callbacks take no context).
rcu_domain* g_barrier_domain = nullptr;

[[noreturn]] void diverge(const std::string& what) {
  std::fprintf(stderr, "tasklife fuzz: divergence: %s\noperations:\n", what.c_str());
  if (g_trace != nullptr) {
    for (const std::string& op : *g_trace) {
      std::fprintf(stderr, "  %s\n", op.c_str());
    }
  }
  std::abort();
}

// While a misuse the model expects runs, its violations are collected here.
struct seen_violation {
  contract_kind kind;
  std::uint64_t task_id;
  const void* address;
};
std::vector<seen_violation>* g_expected_sink = nullptr;

void contract_handler_abort(const contract_violation& v) {
  if (g_expected_sink != nullptr) {
    g_expected_sink->push_back({v.kind, v.object.task_id, v.object.address});
    return;  // the operation is skipped
  }
  diverge("unexpected contract violation (" + std::string(to_string(v.kind)) + "): " + v.message);
}

// Refcount warnings the model expects (the sink otherwise aborts).
bool g_expect_refcount_warning = false;

void refcount_sink_abort(const refcount_warning& w) {
  if (g_expect_refcount_warning) {
    if (w.message != refcount_warning_message(w.type)) {
      diverge("a refcount warning's message is not its type's");
    }
    return;
  }
  diverge("unexpected refcount warning: " + std::string(w.message));
}

// ---- the model
// -------------------------------------------------------------------------------------

// A pid namespace: cyclic allocation of 1 .. pid_max - 1 (idr_alloc_cyclic's end
// is exclusive) from last + 1, wrapping to reserved_pids once the cursor has
// passed it (alloc_pid's pid_min), else to 1.
struct model_ns {
  int parent = -1;
  unsigned level = 0;
  int last = 0;
  std::set<int> used;
  std::map<int, int> tasks;  // nr -> model task index, while hashed
  pid_namespace* real = nullptr;
};

struct model_task {
  task_struct* t = nullptr;
  int ns = 0;                                // its active namespace
  std::vector<std::pair<int, int>> numbers;  // (namespace, nr), root first
  int usage = 1;
  int rcu_users = 2;
  bool autoreap = false;
  int leader = -1;            // its thread group's leader (itself for a leader)
  bool zombie = false;        // EXIT_ZOMBIE, not yet claimed by a reaper
  bool parent_waits = false;  // retire found it a leader with live threads
  bool exited = false;
  bool switched = false;
  bool reaped = false;  // unhashed
  bool freed = false;
  std::uint64_t id = 0;  // task_id at fork
  int my_usage = 0;      // references the fuzzer holds
  int my_rcu = 0;
};

enum class pending_kind { delayed_put, deferred_free, failed_fork, map_memory };

class model {
 public:
  int pid_max = 0;
  int reserved = 1;
  semantics_profile profile = semantics_profile::current;
  bool deferred = false;
  bool memcg = true;
  std::vector<model_ns> ns;
  std::vector<model_task> tasks;
  std::vector<std::pair<pending_kind, int>> queued;  // callbacks waiting for a grace period
  std::size_t freed = 0;

  bool acquire_on_usage() const { return profile == semantics_profile::usage_based; }

  int alloc(int n) {
    model_ns& s = ns[static_cast<std::size_t>(n)];
    const int pid_min = s.last > reserved ? reserved : 1;
    for (int nr = s.last + 1; nr < pid_max; ++nr) {
      if (!s.used.contains(nr)) {
        return take(s, nr);
      }
    }
    for (int nr = pid_min; nr <= s.last && nr < pid_max; ++nr) {
      if (!s.used.contains(nr)) {
        return take(s, nr);
      }
    }
    return -1;
  }
  static int take(model_ns& s, int nr) {
    s.used.insert(nr);
    s.last = nr;
    return nr;
  }
  void free_numbers(const model_task& m) {
    for (const auto& [n, nr] : m.numbers) {
      ns[static_cast<std::size_t>(n)].used.erase(nr);
    }
  }
  void unhash(int i) {
    model_task& m = tasks[static_cast<std::size_t>(i)];
    for (const auto& [n, nr] : m.numbers) {
      ns[static_cast<std::size_t>(n)].tasks.erase(nr);
    }
    free_numbers(m);
    m.reaped = true;
  }
  // No thread of the group but the leader is still listed (threads leave the
  // list when they are released).
  bool group_empty(int l) const {
    for (std::size_t j = 0; j < tasks.size(); ++j) {
      if (static_cast<int>(j) != l && tasks[j].leader == l && !tasks[j].reaped) {
        return false;
      }
    }
    return true;
  }
  // release_task: unhash, the reaper's drop; the last thread of a group whose
  // leader is a zombie releases the leader too when its parent ignores it
  // (autoreap) or waits for it (kernel/exit.c, zap_leader / do_notify_parent).
  void release_task(int i) {
    unhash(i);
    rcu_put(i);
    const int l = tasks[static_cast<std::size_t>(i)].leader;
    if (l != i && group_empty(l)) {
      model_task& lt = tasks[static_cast<std::size_t>(l)];
      if (lt.zombie && (lt.autoreap || lt.parent_waits)) {
        lt.zombie = false;
        release_task(l);
      }
    }
  }
  // exit_notify: a thread releases itself; a leader only when its group is empty
  // and its parent ignores it; else a zombie.
  void exit_notify(int i) {
    model_task& t = tasks[static_cast<std::size_t>(i)];
    t.exited = true;
    const bool leader = t.leader == i;
    if (leader ? t.autoreap && group_empty(i) : true) {
      release_task(i);
    } else {
      t.zombie = true;
    }
  }
  // wait_task_zombie's claim: a zombie, and not a leader whose group has threads.
  bool reapable(int i) const {
    const model_task& t = tasks[static_cast<std::size_t>(i)];
    return t.zombie && !(t.leader == i && !group_empty(i));
  }
  // A put of rcu_users by anyone.
  void rcu_put(int i) {
    model_task& m = tasks[static_cast<std::size_t>(i)];
    if (--m.rcu_users == 0) {
      queued.emplace_back(pending_kind::delayed_put, i);
    }
  }
  void usage_put(int i) {
    model_task& m = tasks[static_cast<std::size_t>(i)];
    if (--m.usage == 0) {
      if (deferred) {
        queued.emplace_back(pending_kind::deferred_free, i);
      } else {
        m.freed = true;
        ++freed;
      }
    }
  }
  // A grace period, then every callback it made ready (what they queue waits).
  void grace_period() {
    const auto ready = std::exchange(queued, {});
    for (const auto& [kind, i] : ready) {
      switch (kind) {
        case pending_kind::delayed_put:
          usage_put(i);
          break;
        case pending_kind::deferred_free: {
          model_task& m = tasks[static_cast<std::size_t>(i)];
          m.freed = true;
          ++freed;
          break;
        }
        case pending_kind::failed_fork:
        case pending_kind::map_memory:
          break;
      }
    }
  }
  // A program's acquire/release of a task, by profile.
  void acquire(int i) {
    model_task& m = tasks[static_cast<std::size_t>(i)];
    if (acquire_on_usage()) {
      ++m.usage;
    } else {
      ++m.rcu_users;
    }
  }
  void release(int i) {
    if (acquire_on_usage()) {
      usage_put(i);
    } else {
      rcu_put(i);
    }
  }
};

struct task_value {
  kptr<task_struct> task;
  kptr<task_struct> not_a_field;  // a kptr member the value does not list
  long tag = 7;                   // no kptr at all
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

constexpr std::size_t kMaxTasks = 24;
constexpr std::size_t kSlots = 4;
constexpr unsigned kMaxNsDepth = 3;

class harness {
 public:
  harness(bytes& in, std::vector<std::string>& trace) : in_(in), trace_(trace) {}

  void run() {
    setup();
    for (int ops = 0; ops < 256 && !in_.empty(); ++ops) {
      step();
      check();
      ++g_operations;
    }
    teardown();
  }

 private:
  // ---- setup and teardown ----------------------------------------------------------------------
  void setup() {
    const std::uint8_t h = in_.next();
    m_.profile = static_cast<semantics_profile>(h % semantics_profile_count);
    m_.deferred = (h & 0x10U) != 0;
    m_.memcg = (h & 0x20U) != 0;
    m_.pid_max = 8 + static_cast<int>(in_.next() % 56);
    m_.reserved = 1 + static_cast<int>(in_.next() % 4);
    kernel_config c;
    c.name = "fuzz";
    c.profile = m_.profile;
    c.final_put = m_.deferred ? final_put_mode::deferred : final_put_mode::immediate;
    c.memcg = m_.memcg;
    c.record_history = (h & 0x40U) != 0;
    c.history_capacity = 64;  // small: the oldest events are dropped
    c.track_holders = (h & 0x80U) != 0;
    tracked_ = c.track_holders;
    c.pid_max = m_.pid_max;
    c.reserved_pids = m_.reserved;
    c.rcu_backend_factory = deterministic_rcu_factory();
    k_.emplace(std::move(c));
    rc_ = as_deterministic(k_->rcu());
    map_ = std::make_unique<bpf_array_map<task_value>>(*k_, static_cast<std::uint32_t>(kSlots));
    storage_ = std::make_unique<bpf_task_storage_map<int>>(*k_, "fuzz_storage");
    slots_.assign(kSlots, -1);
    model_ns root;
    root.real = &k_->init_pid_ns();
    m_.ns.push_back(root);
    trace_.push_back(
        "setup profile=" + std::string(to_string(m_.profile)) +
        " deferred=" + std::to_string(m_.deferred) + " memcg=" + std::to_string(m_.memcg) +
        " pid_max=" + std::to_string(m_.pid_max) + " reserved=" + std::to_string(m_.reserved));
    prog_ = fork_one(-1, 0, fork_failure::none);  // the task programs run as
    if (prog_ < 0) {
      diverge("the first fork failed");
    }
  }

  void teardown() {
    trace_.push_back("teardown");
    // The fuzzer's references, the slots' (the map's destructor releases them),
    // then every task dies, then grace periods until nothing is pending.
    for (std::size_t i = 0; i < m_.tasks.size(); ++i) {
      model_task& mt = m_.tasks[i];
      while (mt.my_usage > 0) {
        --mt.my_usage;
        put_task_struct(mt.t);
        m_.usage_put(static_cast<int>(i));
      }
      while (mt.my_rcu > 0) {
        --mt.my_rcu;
        put_task_struct_rcu_user(mt.t);
        m_.rcu_put(static_cast<int>(i));
      }
    }
    map_.reset();
    m_.queued.emplace_back(pending_kind::map_memory, -1);  // its storage, after a grace period
    for (const int s : slots_) {
      if (s >= 0) {
        m_.release(s);
      }
    }
    // The task storage map: each value still stored is freed after a grace period.
    // A freed task's went with it, in free_task; a slot's release above may have
    // been a task's last usage reference (usage_based, an immediate final put), so
    // the model forgets only after it.
    forget_freed_storage();
    storage_.reset();
    for (std::size_t n = 0; n < stored_.size(); ++n) {
      m_.queued.emplace_back(pending_kind::map_memory, -1);
    }
    stored_.clear();
    check();
    // Every task exits and switches away, then the reaps, threads (forked after
    // their leaders) before leaders: a leader is reapable once its group is empty.
    for (std::size_t i = 0; i < m_.tasks.size(); ++i) {
      finish(static_cast<int>(i));
    }
    for (std::size_t i = m_.tasks.size(); i-- > 0;) {
      if (!m_.tasks[i].reaped) {
        reap(static_cast<int>(i));
      }
    }
    for (int round = 0; round < 4 && !m_.queued.empty(); ++round) {
      grace_period();
    }
    check();
    if (m_.freed != m_.tasks.size()) {
      diverge("teardown: " + std::to_string(m_.tasks.size() - m_.freed) + " task(s) never freed");
    }
    k_.reset();
    nat_.reset();
    if (other_) {
      if (!other_->retire(other_task_)) {
        diverge("the other kernel's task could not be retired");
      }
      other_->rcu().rcu_barrier();
      if (other_->stats().allocated() != 0) {
        diverge("the other kernel's task was never freed");
      }
      other_.reset();
    }
  }

  // Kills task i whatever its state, the legal way.
  void finish(int i) {
    model_task& mt = m_.tasks[static_cast<std::size_t>(i)];
    if (mt.freed) {
      return;
    }
    if (!mt.exited) {
      do_exit(i);
    }
    if (!mt.switched) {
      final_switch(i);
    }
  }

  // ---- the operations
  // ----------------------------------------------------------------------------
  void step() {
    switch (in_.pick(26)) {
      case 0:
      case 1: {
        const std::uint8_t flags = in_.next();
        const int parent = (flags & 1U) != 0 ? pick_live() : -1;
        const fork_failure fail = (flags & 0xc0U) == 0xc0U   ? fork_failure::after_pid_alloc
                                  : (flags & 0xc0U) == 0x80U ? fork_failure::before_pid_alloc
                                                             : fork_failure::none;
        if (m_.tasks.size() < kMaxTasks) {
          (void)fork_one(parent, flags, fail);
        }
        break;
      }
      case 2:
        if (const int i = pick_usage(); i >= 0) {
          trace("get_task_struct", i);
          check_ptr(get_task_struct(task(i)), task(i), "get_task_struct");
          ++mt(i).usage;
          ++mt(i).my_usage;
        }
        break;
      case 3:
        if (const int i = pick_if([](const model_task& t) { return t.my_usage > 0; }); i >= 0) {
          trace("put_task_struct", i);
          --mt(i).my_usage;
          put_task_struct(task(i));
          m_.usage_put(i);
        }
        break;
      case 4:  // a raw refcount op: no holder is recorded, so not with holder tracking
        if (const int i = pick_if(
                [this](const model_task& t) { return !tracked_ && !t.freed && t.rcu_users > 0; });
            i >= 0) {
          trace("refcount_inc_not_zero(rcu_users)", i);
          if (!refcount_inc_not_zero(&task(i)->rcu_users)) {
            diverge("refcount_inc_not_zero on rcu_users > 0 failed");
          }
          ++mt(i).rcu_users;
          ++mt(i).my_rcu;
        }
        break;
      case 5:
        if (const int i = pick_if([](const model_task& t) { return t.my_rcu > 0; }); i >= 0) {
          trace("put_task_struct_rcu_user", i);
          --mt(i).my_rcu;
          put_task_struct_rcu_user(task(i));
          m_.rcu_put(i);
        }
        break;
      case 6:
        if (const int i =
                pick_if([this](const model_task& t) { return !t.exited && t.t != task(prog_); });
            i >= 0) {
          do_exit(i);
        }
        break;
      case 7:
        if (const int i = pick_if([](const model_task& t) { return t.exited && !t.switched; });
            i >= 0) {
          final_switch(i);
        }
        break;
      case 8:
        if (const int i = pick_if([](const model_task& t) { return !t.freed && !t.reaped; });
            i >= 0) {
          reap(i);  // a live task's wait fails; a zombie's succeeds
        }
        break;
      case 9:
        if (const int i =
                pick_if([this](const model_task& t) { return !t.exited && t.t != task(prog_); });
            i >= 0) {
          trace("retire", i);
          if (!k_->retire(task(i))) {
            diverge("retire refused a live task");
          }
          // The model in the kernel's order: exit, the claim (a leader with live
          // threads is left to them: its parent waits), the final switch, the reap.
          do_exit(i, false);
          bool claimed = false;
          if (mt(i).zombie) {
            if (mt(i).leader == i && !m_.group_empty(i)) {
              mt(i).parent_waits = true;
            } else {
              mt(i).zombie = false;
              claimed = true;
            }
          }
          final_switch(i, false);
          if (claimed) {
            m_.release_task(i);
          }
        }
        break;
      case 10:
      case 11:
        grace_period();
        break;
      case 12:
        lookup();
        break;
      case 13:
      case 14:
        program();
        break;
      case 15:
        update_slot();
        break;
      case 16:
      case 17:
        misuse();
        break;
      case 18:
        queries();
        break;
      case 19:
        attached_program();
        break;
      case 20:
        rcu_ops();
        break;
      case 21:
        native_rcu_ops();
        break;
      case 22:
        refcount_ops();
        break;
      case 23:
      case 24:
        more_misuse();
        break;
      case 25:
        switch (in_.pick(3)) {
          case 0:
            task_ops();
            break;
          case 1:
            other_program();
            break;
          default:
            teardown_misuse();
            break;
        }
        break;
      default:
        break;
    }
  }

  // Runs `op`, which the model says is refused with one violation of `kind`
  // about `id` (0: about no task) and changes nothing.
  // With holders tracked the tracker speaks first: a release with no holder is
  // an over_release, or a double_release if a holder of that kind was dropped.
  template <class Op>
  void expect_refused(const char* what, contract_kind kind, std::uint64_t id, Op op,
                      const void* address = nullptr) {
    trace_.push_back(std::string("misuse: ") + what + " (" + std::string(to_string(kind)) + ")");
    std::vector<seen_violation> seen;
    const std::uint64_t before = contract_violations_seen();
    g_expected_sink = &seen;
    op();
    g_expected_sink = nullptr;
    if (contract_violations_seen() != before + seen.size()) {
      diverge(std::string(what) + ": contract_violations_seen() does not count what was reported");
    }
    if (!seen.empty() && explain(seen[0].kind) == "an unknown kind") {
      diverge(std::string(what) + ": a reported kind without an explanation");
    }
    const bool release = kind == contract_kind::over_release;
    const bool kind_ok =
        !seen.empty() && (seen[0].kind == kind ||
                          (release && tracked_ && seen[0].kind == contract_kind::double_release));
    if (seen.size() != 1 || !kind_ok || seen[0].task_id != id ||
        (address != nullptr && seen[0].address != address)) {
      diverge(std::string(what) + ": " + std::to_string(seen.size()) +
              " violation(s), the model says one of kind " + std::string(to_string(kind)) +
              (seen.empty() ? std::string() : ", got " + std::string(to_string(seen[0].kind))));
    }
  }

  // The references a task's own lifecycle still holds (the over-release floor).
  int rcu_floor(const model_task& t) const { return (t.switched ? 0 : 1) + (t.reaped ? 0 : 1); }
  bool group_holds_usage(int i) const {
    const model_task& t = m_.tasks[static_cast<std::size_t>(i)];
    if (t.rcu_users > 0) {
      return true;
    }
    for (const auto& [kind, j] : m_.queued) {
      if (kind == pending_kind::delayed_put && j == i) {
        return true;
      }
    }
    return false;
  }

  void misuse() {
    switch (in_.pick(6)) {
      case 0:  // a put of rcu_users nobody but the lifecycle holds
        if (const int i = pick_if([this](const model_task& t) {
              return !t.freed && t.rcu_users > 0 && t.rcu_users == rcu_floor(t);
            });
            i >= 0) {
          expect_refused("put_task_struct_rcu_user without a reference",
                         contract_kind::over_release, task_id(task(i)),
                         [&] { put_task_struct_rcu_user(task(i)); });
        }
        break;
      case 1: {  // a put of the rcu_users group's usage share
        std::vector<int> ok;
        for (std::size_t j = 0; j < m_.tasks.size(); ++j) {
          if (!m_.tasks[j].freed && m_.tasks[j].usage == 1 &&
              group_holds_usage(static_cast<int>(j))) {
            ok.push_back(static_cast<int>(j));
          }
        }
        if (!ok.empty()) {
          const int i = ok[in_.pick(ok.size())];
          expect_refused("put_task_struct of the group's share", contract_kind::over_release,
                         task_id(task(i)), [&] { put_task_struct(task(i)); });
        }
        break;
      }
      case 2:
        if (const int i = pick_usage(); i >= 0) {
          expect_refused("put_task_struct_many(t, 0)", contract_kind::invalid_argument,
                         task_id(task(i)), [&] { put_task_struct_many(task(i), 0); });
        }
        break;
      case 3:
        expect_refused("get_task_struct(NULL)", contract_kind::null_argument, 0,
                       [] { (void)get_task_struct(nullptr); });
        break;
      case 4: {
        task_struct fake;
        expect_refused("bpf_task_release_dtor(fake)", contract_kind::not_a_task, 0,
                       [&] { bpf_task_release_dtor(&fake); });
        break;
      }
      default: {  // an rcu_head queued twice: the second is refused
        trace_.push_back("call_rcu twice");
        k_->rcu().call_rcu(&heads_[next_head_ % heads_.size()], [](rcu_head*) {});
        m_.queued.emplace_back(pending_kind::map_memory, -1);
        rcu_head* h = &heads_[next_head_ % heads_.size()];
        ++next_head_;
        std::vector<seen_violation> seen;
        g_expected_sink = &seen;
        k_->rcu().call_rcu(h, [](rcu_head*) {});
        g_expected_sink = nullptr;
        if (seen.size() != 1 || seen[0].kind != contract_kind::already_queued ||
            seen[0].address != h) {
          diverge("call_rcu of a queued head was not refused with already_queued");
        }
        // Every head must have run before it is queued again: a grace period now.
        grace_period();
        break;
      }
    }
  }

  void queries() {
    trace_.push_back("queries");
    std::size_t unfreed = 0;
    for (const model_task& t : m_.tasks) {
      unfreed += t.freed ? 0U : 1U;
      if (!t.freed) {
        (void)k_->history(t.t);
        (void)k_->format_holders(t.t);
        if (k_->is_freed(t.t)) {
          diverge("is_freed of a task the model has not freed");
        }
      }
    }
    if (k_->allocated_tasks().size() != unfreed) {
      diverge("allocated_tasks() " + std::to_string(k_->allocated_tasks().size()) +
              ", the model says " + std::to_string(unfreed));
    }
    (void)k_->events();
    if (k_->stats().allocated() != unfreed) {
      diverge("stats().allocated() differs from the model's");
    }
    iterate_and_store();
  }

  // A freed task's storage went with its memory (free_task): none to model.
  void forget_freed_storage() {
    for (auto it = stored_.begin(); it != stored_.end();) {
      it = m_.tasks[static_cast<std::size_t>(it->first)].freed ? stored_.erase(it) : std::next(it);
    }
  }

  // The task iterator and task local storage, from a program (its implicit RCU
  // section), consuming no input: each flavor of the walk yields the tasks the
  // model has on the kernel's lists (not yet released), every one of which an
  // acquire takes; each task's storage holds what the model stored, creation is
  // refused once usage is 0, and a delete frees after a grace period.
  void iterate_and_store() {
    forget_freed_storage();
    ++queries_;
    const bool iter = kfunc_exists(m_.profile, kfunc_id::bpf_iter_task_new);
    const int self = prog_;
    bpf_prog prog(*k_, prog_type::tracing, "tp_btf/fuzz_iter", [&](task_struct* a) {
      if (iter) {
        check_walk(BPF_TASK_ITER_ALL_THREADS, nullptr, [](const model_task&, int) { return true; });
        check_walk(BPF_TASK_ITER_ALL_PROCS, nullptr,
                   [](const model_task& t, int i) { return t.leader == i; });
        const int group = mt(self).leader;
        check_walk(BPF_TASK_ITER_PROC_THREADS, a,
                   [group](const model_task& t, int) { return t.leader == group; });
      }
      if (kfunc_exists(m_.profile, kfunc_id::bpf_task_acquire_not_zero)) {
        // The legacy acquire (fca1aa75518c): on the running task, never exited,
        // inc_not_zero succeeds; once usage-based (156ed20d22ee) it always
        // returns NULL, on its way out.
        task_struct* ref = bpf_task_acquire_not_zero(a);
        check_ptr(ref, m_.acquire_on_usage() ? nullptr : a, "bpf_task_acquire_not_zero");
        if (ref != nullptr) {
          bpf_task_release(ref);
        }
      }
      for (std::size_t j = 0; j < m_.tasks.size(); ++j) {
        const int i = static_cast<int>(j);
        if (m_.tasks[j].freed) {
          continue;
        }
        store_one(i);
      }
      return 0;
    });
    const prog_run_result r = prog.run(task(prog_), task(prog_));
    if (!r.ok()) {
      diverge("the iterator and storage program: " + r.violations.front().message);
    }
    if (iter) {
      iterator_misuse(queries_ % 6U);
      iterator_contract(queries_ % 5U);
    }
  }

  // The iterator outside a program: the same rules as contract violations, each
  // refused (the iterator stays as it was).
  void iterator_contract(unsigned which) {
    const current_task_scope as = k_->run_as(task(prog_));
    bpf_iter_task it;
    switch (which) {
      case 0: {
        const rcu_read_guard guard(k_->rcu());
        expect_refused("bpf_iter_task_next without new", contract_kind::invalid_state, 0,
                       [&] { (void)bpf_iter_task_next(&it); });
        break;
      }
      case 1: {
        const rcu_read_guard guard(k_->rcu());
        if (bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS) != 0) {
          diverge("bpf_iter_task_new under RCU failed");
        }
        expect_refused("bpf_iter_task_new twice", contract_kind::invalid_state, 0,
                       [&] { (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS); });
        bpf_iter_task_destroy(&it);
        expect_refused("bpf_iter_task_destroy twice", contract_kind::invalid_state, 0,
                       [&] { bpf_iter_task_destroy(&it); });
        break;
      }
      case 2:
        expect_refused("bpf_iter_task_new outside RCU", contract_kind::missing_rcu_lock, 0,
                       [&] { (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS); });
        break;
      case 3: {
        const rcu_read_guard guard(k_->rcu());
        expect_refused("bpf_iter_task_new(NULL)", contract_kind::null_argument, 0,
                       [&] { (void)bpf_iter_task_new(nullptr, nullptr, BPF_TASK_ITER_ALL_PROCS); });
        expect_refused("bpf_iter_task_next(NULL)", contract_kind::null_argument, 0,
                       [&] { (void)bpf_iter_task_next(nullptr); });
        break;
      }
      default: {  // the other flavors, and the walk from a task of the root namespace
        const rcu_read_guard guard(k_->rcu());
        for (const unsigned flavor : {BPF_TASK_ITER_ALL_PROCS, BPF_TASK_ITER_PROC_THREADS}) {
          if (bpf_iter_task_new(&it, task(prog_), flavor) != 0) {
            diverge("bpf_iter_task_new of a live task failed");
          }
          std::size_t n = 0;
          while (bpf_iter_task_next(&it) != nullptr) {
            if (++n > kMaxTasks + 1) {
              diverge("bpf_iter_task_next does not end");
            }
          }
          bpf_iter_task_destroy(&it);
        }
        break;
      }
    }
  }

  // The verifier's iterator rules (iters_state_safety.c, task_iter.c), one per
  // query in turn: each program gets exactly the violation the rule says.
  void iterator_misuse(unsigned which) {
    std::vector<violation_kind> expected;
    int ret = 0;
    const bool sleepable = which == 4;
    bpf_prog prog(*k_, sleepable ? prog_type::syscall : prog_type::tracing,
                  sleepable ? "syscall" : "tp_btf/fuzz_iter_misuse", [&](task_struct*) {
                    bpf_iter_task it;
                    switch (which) {
                      case 0:  // created and never destroyed
                        (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_PROCS);
                        expected = {violation_kind::unreleased_ref};
                        break;
                      case 1:  // next without new
                        (void)bpf_iter_task_next(&it);
                        expected = {violation_kind::iter_state};
                        break;
                      case 2:  // destroyed twice
                        (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS);
                        bpf_iter_task_destroy(&it);
                        bpf_iter_task_destroy(&it);
                        expected = {violation_kind::iter_state};
                        break;
                      case 3:  // created twice
                        (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS);
                        (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS);
                        bpf_iter_task_destroy(&it);
                        expected = {violation_kind::iter_state};
                        break;
                      case 4:  // a sleepable program outside any RCU section
                        (void)bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_ALL_THREADS);
                        if (bpf_iter_task_next(&it) != nullptr) {
                          diverge("an iterator made outside RCU yielded a task");
                        }
                        bpf_iter_task_destroy(&it);
                        expected = {violation_kind::rcu_required};
                        break;
                      default:  // PROC_THREADS of NULL, and an unknown flavor: -EINVAL
                        ret = bpf_iter_task_new(&it, nullptr, BPF_TASK_ITER_PROC_THREADS);
                        if (bpf_iter_task_next(&it) != nullptr) {
                          diverge("a refused iterator yielded a task");
                        }
                        bpf_iter_task_destroy(&it);
                        ret = ret == -EINVAL ? bpf_iter_task_new(&it, nullptr, 7) : 0;
                        bpf_iter_task_destroy(&it);
                        break;
                    }
                    return 0;
                  });
    const prog_run_result r = prog.run(task(prog_), task(prog_));
    std::vector<violation_kind> got;
    for (const violation& v : r.violations) {
      got.push_back(v.kind);
    }
    // Outside RCU the checker reports the first use (newest: the new itself) and,
    // since a recording run goes on where the verifier would stop, each later use
    // of the iterator again: one or more, all of that kind.
    if (which == 4 && !got.empty() && std::all_of(got.begin(), got.end(), [](violation_kind k) {
          return k == violation_kind::rcu_required;
        })) {
      got = expected;
    }
    if (got != expected || (which == 5 && ret != -EINVAL)) {
      diverge("iterator rule " + std::to_string(which) + ": " + std::to_string(got.size()) +
              " violation(s)" +
              (got.empty() ? std::string() : " (" + r.violations.front().message + ")") +
              ", the model says " + std::to_string(expected.size()));
    }
  }

  template <class Pred>
  void check_walk(unsigned flavor, task_struct* arg, Pred listed) {
    std::multiset<const task_struct*> want;
    for (std::size_t j = 0; j < m_.tasks.size(); ++j) {
      const model_task& t = m_.tasks[j];
      if (!t.reaped && !t.freed && listed(t, static_cast<int>(j))) {
        want.insert(t.t);
      }
    }
    std::multiset<const task_struct*> got;
    bpf_iter_task it;
    if (bpf_iter_task_new(&it, arg, flavor) != 0) {
      diverge("bpf_iter_task_new refused flavor " + std::to_string(flavor));
    }
    while (task_struct* t = bpf_iter_task_next(&it)) {
      got.insert(t);
      if (got.size() > kMaxTasks + 1) {
        diverge("bpf_iter_task_next does not end");
      }
      // Listed, so the reaper's share of rcu_users is still held: the acquire succeeds.
      task_struct* ref = bpf_task_acquire(t);
      check_ptr(ref, t, "bpf_task_acquire of an iterated task");
      if (ref != nullptr) {
        bpf_task_release(ref);
      }
    }
    bpf_iter_task_destroy(&it);
    if (got != want) {
      diverge("the task iterator (flavor " + std::to_string(flavor) + ") yielded " +
              std::to_string(got.size()) + " task(s), the model lists " +
              std::to_string(want.size()));
    }
  }

  void store_one(int i) {
    task_struct* t = task(i);
    const auto it = stored_.find(i);
    int* v = bpf_task_storage_get(storage_.get(), t, nullptr, 0);
    if ((v != nullptr) != (it != stored_.end())) {
      diverge("bpf_task_storage_get of task " + std::to_string(i) +
              (v != nullptr ? " found a value the model has not stored" : " found no value"));
    }
    if (v != nullptr && *v != it->second) {
      diverge("bpf_task_storage_get of task " + std::to_string(i) + " read another value");
    }
    if (it != stored_.end()) {
      if ((queries_ + static_cast<unsigned>(i)) % 2U == 0) {
        if (bpf_task_storage_delete(storage_.get(), t) != 0) {
          diverge("bpf_task_storage_delete of a stored value failed");
        }
        stored_.erase(it);
        m_.queued.emplace_back(pending_kind::map_memory, -1);  // freed after a grace period
      }
      return;
    }
    if ((queries_ + static_cast<unsigned>(i)) % 3U == 0) {
      if (bpf_task_storage_delete(storage_.get(), t) != -ENOENT) {
        diverge("bpf_task_storage_delete of no value did not say -ENOENT");
      }
      return;
    }
    const int value = next_value_++;
    int* made = bpf_task_storage_get(storage_.get(), t, &value, BPF_LOCAL_STORAGE_GET_F_CREATE);
    // "only allocate new storage, when the task is refcounted".
    const bool refused = mt(i).usage == 0;
    if ((made == nullptr) != refused) {
      diverge("bpf_task_storage_get(F_CREATE) of task " + std::to_string(i) +
              (refused ? " created storage on a task with usage 0" : " refused a live task"));
    }
    if (made != nullptr) {
      if (*made != value) {
        diverge("bpf_task_storage_get(F_CREATE) did not copy the value");
      }
      stored_.emplace(i, value);
    }
  }

  // A program attached to task_newtask for the next fork: it acquires and
  // releases the new task, which must leave its counters as the model's.
  void attached_program() {
    trace_.push_back("attach to task_newtask, then fork");
    bool ran = false;
    bpf_prog prog(*k_, prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* t) {
      ran = true;
      task_struct* ref = bpf_task_acquire(t);
      if (ref != t) {
        diverge("an attached program's acquire of the new task failed");
      }
      bpf_task_release(ref);
      return 0;
    });
    bool violations = false;
    const bpf_link link =
        prog.attach(k_->task_newtask(), [&](const prog_run_result& r) { violations |= !r.ok(); });
    if (m_.tasks.size() < kMaxTasks && fork_one(-1, 0, fork_failure::none) >= 0 && !ran) {
      diverge("the attached program did not run at fork");
    }
    if (violations) {
      diverge("the attached program got a violation");
    }
  }

  int fork_one(int parent, std::uint8_t flags, fork_failure fail) {
    clone_args args;
    args.comm = "f";
    const bool can_nest =
        parent < 0 ? true : m_.ns[static_cast<std::size_t>(mt(parent).ns)].level < kMaxNsDepth;
    args.new_pid_ns = (flags & 2U) != 0 && can_nest && !((flags & 4U) != 0 && parent >= 0);
    args.thread = (flags & 4U) != 0 && parent >= 0;
    args.autoreap = (flags & 8U) != 0;
    args.fail = fail;
    trace_.push_back(
        "fork parent=" + std::to_string(parent) + " ns=" + std::to_string(args.new_pid_ns) +
        " thread=" + std::to_string(args.thread) + " autoreap=" + std::to_string(args.autoreap) +
        " fail=" + std::to_string(static_cast<int>(fail)));
    // The model's fork, first: the numbers it must get.
    int nsi = parent < 0 ? 0 : mt(parent).ns;
    std::vector<std::pair<int, int>> numbers;
    bool ok = true;
    int new_ns = -1;
    if (fail != fork_failure::before_pid_alloc) {
      if (args.new_pid_ns) {
        model_ns child;
        child.parent = nsi;
        child.level = m_.ns[static_cast<std::size_t>(nsi)].level + 1;
        m_.ns.push_back(child);
        new_ns = static_cast<int>(m_.ns.size()) - 1;
        nsi = new_ns;
      }
      for (int n = nsi; n >= 0; n = m_.ns[static_cast<std::size_t>(n)].parent) {
        const int nr = m_.alloc(n);
        if (nr < 0) {
          ok = false;
          break;
        }
        numbers.emplace(numbers.begin(), n, nr);
      }
      if (!ok || fail == fork_failure::after_pid_alloc) {
        for (const auto& [n, nr] : numbers) {
          m_.ns[static_cast<std::size_t>(n)].used.erase(nr);
        }
      }
    }
    const fork_result r = k_->fork(parent < 0 ? nullptr : task(parent), args);
    if (new_ns >= 0 && r) {
      // The namespace the kernel created for the child (a failed fork's is never
      // used again: no task is in it).
      m_.ns[static_cast<std::size_t>(new_ns)].real = task_active_pid_ns(r.task);
    }
    const bool expect_ok = ok && fail == fork_failure::none;
    if (static_cast<bool>(r) != expect_ok) {
      diverge("fork " + std::string(expect_ok ? "failed" : "succeeded") +
              " against the model (error " + std::to_string(r.error) + ")");
    }
    if (!expect_ok) {
      if (m_.memcg) {  // delayed_free_task: every failed copy_process, -EAGAIN too
        m_.queued.emplace_back(pending_kind::failed_fork, -1);
      }
      return -1;
    }
    model_task t;
    t.t = r.task;
    t.id = task_id(r.task);
    t.ns = nsi;
    t.numbers = numbers;
    t.autoreap = args.autoreap || args.thread;
    m_.tasks.push_back(t);
    const int i = static_cast<int>(m_.tasks.size()) - 1;
    m_.tasks.back().leader = args.thread ? mt(parent).leader : i;
    for (const auto& [n, nr] : numbers) {
      m_.ns[static_cast<std::size_t>(n)].tasks[nr] = i;
      if (task_pid_nr_ns(r.task, m_.ns[static_cast<std::size_t>(n)].real) != nr) {
        diverge("fork: number " +
                std::to_string(task_pid_nr_ns(r.task, m_.ns[static_cast<std::size_t>(n)].real)) +
                " at level " + std::to_string(m_.ns[static_cast<std::size_t>(n)].level) +
                ", the model says " + std::to_string(nr));
      }
    }
    if (r.task->pid != numbers.front().second) {
      diverge("fork: pid " + std::to_string(r.task->pid) + ", the model says " +
              std::to_string(numbers.front().second));
    }
    if (args.thread && r.task->tgid != task(parent)->tgid) {
      diverge("fork: a thread's tgid is not its parent's");
    }
    return i;
  }

  void do_exit(int i, bool call = true) {
    if (call) {
      trace("do_exit", i);
      k_->do_exit(task(i));
    }
    m_.exit_notify(i);
  }
  void final_switch(int i, bool call = true) {
    if (call) {
      trace("finish_task_switch", i);
      k_->finish_task_switch(task(i));
    }
    mt(i).switched = true;
    m_.rcu_put(i);  // the scheduler's drop
  }
  void reap(int i) {
    const bool reapable = m_.reapable(i);
    trace("wait_task_zombie", i);
    if (k_->wait_task_zombie(task(i)) != reapable) {
      diverge("wait_task_zombie's verdict differs from the model's");
    }
    if (reapable) {
      mt(i).zombie = false;
      m_.release_task(i);
    }
  }

  void grace_period() {
    trace_.push_back("grace period");
    rc_->advance_grace_period();
    rc_->run_callbacks();
    m_.grace_period();
  }

  void lookup() {
    const std::size_t n = in_.pick(m_.ns.size());
    model_ns& s = m_.ns[n];
    if (s.real == nullptr) {
      return;
    }
    const int nr = static_cast<int>(in_.next() % static_cast<unsigned>(m_.pid_max + 2)) - 1;
    trace_.push_back("find_task_by_pid_ns(" + std::to_string(nr) + ", level " +
                     std::to_string(s.level) + ")");
    const rcu_thread_registration reg(k_->rcu());
    const rcu_read_guard guard(k_->rcu());
    task_struct* found = find_task_by_pid_ns(nr, s.real);
    const auto it = s.tasks.find(nr);
    task_struct* expected = it == s.tasks.end() ? nullptr : task(it->second);
    check_ptr(found, expected, "find_task_by_pid_ns");
  }

  // A program run: kfuncs on the trusted argument, pids and the map's slots.
  void program() {
    const int arg = pick_if([](const model_task& t) { return !t.freed && t.rcu_users > 0; });
    if (arg < 0) {
      return;
    }
    const bool typed_api = (in_.next() & 1U) != 0 && info(m_.profile).inline_fast_path;
    std::vector<std::uint8_t> body;
    const std::size_t len = 1 + in_.pick(8);
    for (std::size_t j = 0; j < len; ++j) {
      body.push_back(in_.next());
    }
    trace("program" + std::string(typed_api ? " (typed)" : ""), arg);
    std::vector<violation_kind> expected;
    bpf_prog prog(*k_, prog_type::tracing, "tp_btf/fuzz", [&](task_struct* a) {
      if (typed_api) {
        typed_body(a, arg, body, expected);
      } else {
        raw_body(a, arg, body, expected);
      }
      return 0;
    });
    const prog_run_result r = prog.run(task(prog_), task(arg));
    for (const violation& v : r.violations) {
      trace_.push_back("  verdict: " + std::string(to_string(v.kind)));
    }
    if (r.violations.size() != expected.size()) {
      diverge("program: " + std::to_string(r.violations.size()) + " violation(s), the model says " +
              std::to_string(expected.size()) +
              (r.violations.empty() ? std::string() : ": " + r.violations.front().message));
    }
    for (std::size_t j = 0; j < expected.size(); ++j) {
      if (r.violations[j].kind != expected[j]) {
        diverge("program: violation " + std::string(to_string(r.violations[j].kind)) +
                ", the model says " + std::string(to_string(expected[j])));
      }
    }
  }

  void raw_body(task_struct* a, int arg, const std::vector<std::uint8_t>& body,
                std::vector<violation_kind>& expected) {
    std::vector<int> held;   // model task indices of the references held
    std::set<int> released;  // released (not moved) in this run
    bool forget = false;
    bool open_rcu = false;  // a bpf_rcu_read_lock of the program's own, not yet unlocked
    for (const std::uint8_t op : body) {
      switch (op % 8) {
        case 0: {  // acquire the argument
          // Earlier operations of this body may have released the last rcu_users
          // reference (a slot's, taken out and released): the argument is still
          // allocated, but its rcu_users is 0. Since v6.4 (d02c48fa1139) the acquire is
          // refcount_inc_not_zero(&p->rcu_users) and returns NULL then (the
          // reason it is KF_RET_NULL); the Nov 2022 refcount_inc would WARN
          // (addition on 0), a case the fuzzer leaves alone.
          const int rcu = m_.tasks[static_cast<std::size_t>(arg)].rcu_users;
          if (rcu == 0 && m_.profile == semantics_profile::rcu_users_inc) {
            break;
          }
          const bool refused = rcu == 0 && !m_.acquire_on_usage();
          task_struct* ref = bpf_task_acquire(a);
          check_ptr(ref, refused ? nullptr : a, "bpf_task_acquire");
          if (!refused) {
            m_.acquire(arg);
            held.push_back(arg);
          }
          break;
        }
        case 1:  // release the newest reference
          if (!held.empty()) {
            const int i = held.back();
            held.pop_back();
            bpf_task_release(task(i));
            m_.release(i);
            released.insert(i);
          }
          break;
        case 2: {  // from_pid: a hashed task of the root namespace, or none
          const int nr = static_cast<int>((op >> 3U) % static_cast<unsigned>(m_.pid_max + 1));
          const auto it = m_.ns[0].tasks.find(nr);
          task_struct* ref = bpf_task_from_pid(nr);
          check_ptr(ref, it == m_.ns[0].tasks.end() ? nullptr : task(it->second),
                    "bpf_task_from_pid");
          if (ref != nullptr) {
            m_.acquire(it->second);
            held.push_back(it->second);
          }
          break;
        }
        case 3: {  // xchg the newest reference (or NULL) into a slot
          const std::size_t s = (op >> 3U) % kSlots;
          task_value* v = map_->lookup_elem(static_cast<std::uint32_t>(s));
          const int in = held.empty() || (op & 0x80U) != 0 ? -1 : held.back();
          if (in >= 0) {
            held.pop_back();
          }
          task_struct* old = bpf_kptr_xchg(&v->task, in < 0 ? nullptr : task(in));
          check_ptr(old, slots_[s] < 0 ? nullptr : task(slots_[s]), "bpf_kptr_xchg");
          if (slots_[s] >= 0) {
            held.push_back(slots_[s]);
          }
          slots_[s] = in;
          break;
        }
        case 4:  // the legacy kptr_get
          if (m_.profile == semantics_profile::rcu_users_inc) {
            const std::size_t s = (op >> 3U) % kSlots;
            task_value* v = map_->lookup_elem(static_cast<std::uint32_t>(s));
            task_struct* ref = bpf_task_kptr_get(&v->task);
            const int in = slots_[s];
            check_ptr(ref, in < 0 ? nullptr : task(in), "bpf_task_kptr_get");
            if (in >= 0) {
              m_.acquire(in);
              held.push_back(in);
            }
          }
          break;
        case 5:  // leave the references for the runner: Unreleased reference
          forget = true;
          break;
        case 6:  // a double release of something released in this run
          if (!released.empty()) {
            const int i = *released.begin();
            if (std::count(held.begin(), held.end(), i) == 0) {
              bpf_task_release(task(i));
              // A released reference and no live one: a double release, whatever
              // else the value is (the trusted argument included).
              expected.push_back(violation_kind::double_release);
            }
          }
          break;
        default:
          raw_extra(op, a, arg, held, released, open_rcu, expected);
          break;
      }
    }
    if (forget) {
      for (const int i : held) {
        expected.push_back(violation_kind::unreleased_ref);
        m_.release(i);  // the runner releases them
      }
    } else {
      while (!held.empty()) {
        const int i = held.back();
        held.pop_back();
        bpf_task_release(task(i));
        m_.release(i);
      }
    }
    if (open_rcu) {  // reported after the references; the runner unlocks it
      expected.push_back(violation_kind::rcu_lock_missing);
    }
  }

  // The rest of the kfuncs a program may call (op % 8 == 7; the other bits pick).
  void raw_extra(std::uint8_t op, task_struct* a, int arg, std::vector<int>& held,
                 const std::set<int>& released, bool& open_rcu,
                 std::vector<violation_kind>& expected) {
    switch ((op >> 3U) % 8) {
      case 0:
        if (bpf_get_current_task_btf() != task(prog_)) {
          diverge("bpf_get_current_task_btf is not current");
        }
        break;
      case 1: {  // from_vpid: current's namespace is the root one (the program task's)
        const int nr = static_cast<int>((op >> 5U) % static_cast<unsigned>(m_.pid_max + 1));
        if (!kfunc_exists(m_.profile, kfunc_id::bpf_task_from_vpid)) {
          expect_refused("bpf_task_from_vpid outside its profiles", contract_kind::not_in_profile,
                         0, [&] { check_ptr(bpf_task_from_vpid(nr), nullptr, "from_vpid"); });
          break;
        }
        const auto it = m_.ns[0].tasks.find(nr);
        task_struct* ref = bpf_task_from_vpid(nr);
        check_ptr(ref, it == m_.ns[0].tasks.end() ? nullptr : task(it->second),
                  "bpf_task_from_vpid");
        if (ref != nullptr) {
          m_.acquire(it->second);
          held.push_back(it->second);
        }
        break;
      }
      case 2:  // a nested, balanced RCU read section of the program's own
        if (open_rcu) {
          break;
        }
        bpf_rcu_read_lock();
        if (!k_->rcu().rcu_read_lock_held()) {
          diverge("bpf_rcu_read_lock left no read section held");
        }
        bpf_rcu_read_unlock();
        break;
      case 5:  // a task argument the verifier refuses by its type (the high bits pick)
        bad_task_arg(op >> 6U, arg, held, released, expected);
        break;
      case 6:  // a release of the trusted argument, never acquired in this run
        if (std::count(held.begin(), held.end(), arg) == 0 && !released.contains(arg)) {
          bpf_task_release(a);
          expected.push_back(violation_kind::release_unacquired);
        }
        break;
      case 7:  // an RCU unlock without a lock, or a lock left open
        if (open_rcu) {
          bpf_rcu_read_unlock();
          open_rcu = false;
        } else if ((op & 0x80U) != 0) {
          bpf_rcu_read_lock();
          open_rcu = true;
        } else {
          bpf_rcu_read_unlock();
          expected.push_back(violation_kind::rcu_unlock_unmatched);
        }
        break;
      case 3: {  // bpf_strncmp on current's comm ("f", as every fork names it)
        const task_struct* cur = task(prog_);
        const long same = bpf_strncmp(cur->comm, TASK_COMM_LEN, "f");
        const long other = bpf_strncmp(cur->comm, TASK_COMM_LEN, "g");
        if (same != 0 || other >= 0) {
          diverge("bpf_strncmp: " + std::to_string(same) + ", " + std::to_string(other) +
                  " against the model's 0 and < 0");
        }
        break;
      }
      default: {  // bpf_probe_read_kernel of current's pid; the helpers' memory rules
        if ((op & 0x40U) != 0) {  // write into the trusted argument: BTF memory is read-only
          const pid_t before = a->pid;
          const pid_t zero = 0;
          check_bool(bpf_probe_read_kernel(&a->pid, sizeof(zero), &zero) != 0, true,
                     "probe_read into a task");
          expected.push_back(violation_kind::arg_type_mismatch);
          if (a->pid != before) {
            diverge("a refused bpf_probe_read_kernel wrote into the task");
          }
          break;
        }
        if ((op & 0x80U) != 0) {  // past the end of comm
          check_bool(bpf_strncmp(a->comm, TASK_COMM_LEN + 4, "f") == -EINVAL, true,
                     "strncmp past comm");
          expected.push_back(violation_kind::access_beyond_member);
          break;
        }
        pid_t pid = -1;
        const task_struct* cur = task(prog_);
        if (bpf_probe_read_kernel(&pid, sizeof(pid), &cur->pid) != 0 ||
            pid != mt(prog_).numbers.front().second) {
          diverge("bpf_probe_read_kernel of current's pid differs from the model's");
        }
        break;
      }
    }
  }

  // Task arguments the verifier refuses by their type, each vetoed (NULL, nothing
  // done): NULL to a trusted argument (its first test); a pointer that is no task (the
  // stack's fp) to bpf_task_acquire and to the storage helper, whose NULL task is
  // allowed (ARG_PTR_TO_BTF_ID_OR_NULL); a reference this run released, a scalar by
  // then, to the storage helper.
  void bad_task_arg(unsigned which, int arg, const std::vector<int>& held,
                    const std::set<int>& released, std::vector<violation_kind>& expected) {
    long on_stack[32] = {};
    auto* fake = reinterpret_cast<task_struct*>(on_stack);
    // The unchecked tier keeps no registry of tasks: there the stack pointer would be
    // taken for a task (docs/verifier.md), so those cases are for checked builds.
    const unsigned variant = contract_checks_enabled || which % 4U == 3U ? which % 4U : 0U;
    trace_.push_back("  bad task argument " + std::to_string(variant));
    switch (variant) {
      case 0:
        check_ptr(bpf_task_acquire(nullptr), nullptr, "bpf_task_acquire(NULL)");
        expected.push_back(violation_kind::null_arg);
        break;
      case 1:
        check_ptr(bpf_task_acquire(fake), nullptr, "bpf_task_acquire(a stack pointer)");
        expected.push_back(violation_kind::arg_type_mismatch);
        break;
      case 2:
        check_bool(bpf_task_storage_get(storage_.get(), nullptr, nullptr,
                                        BPF_LOCAL_STORAGE_GET_F_CREATE) == nullptr,
                   true, "bpf_task_storage_get(NULL task)");
        check_bool(bpf_task_storage_get(storage_.get(), fake, nullptr,
                                        BPF_LOCAL_STORAGE_GET_F_CREATE) == nullptr,
                   true, "bpf_task_storage_get(a stack pointer)");
        expected.push_back(violation_kind::arg_type_mismatch);
        break;
      default:
        // Not the argument nor current, which stay trusted whatever was released.
        for (const int i : released) {
          if (i != arg && i != prog_ && std::count(held.begin(), held.end(), i) == 0) {
            trace("  its released reference to bpf_task_storage_delete:", i);
            check_bool(bpf_task_storage_delete(storage_.get(), task(i)) == -EINVAL, true,
                       "bpf_task_storage_delete of a released reference");
            expected.push_back(violation_kind::use_after_release);
            break;
          }
        }
        break;
    }
  }

  // The argument's last rcu_users reference may have been released by this body
  // (a slot's, taken out and released): its acquire then returns NULL (since v6.4,
  // d02c48fa1139, refcount_inc_not_zero). True when it did.
  bool typed_arg_gone(const trusted_ptr<task_struct>& p, int arg) {
    if (mt(arg).rcu_users != 0) {
      return false;
    }
    const maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
    if (r) {
      diverge("typed acquire of an argument without rcu_users did not return NULL");
    }
    return true;
  }

  void typed_body(task_struct* a, int arg, const std::vector<std::uint8_t>& body,
                  std::vector<violation_kind>& expected) {
    const trusted_ptr<task_struct> p = trusted_ptr<task_struct>::from_prog_arg(a);
    for (const std::uint8_t op : body) {
      switch (op % 7) {
        case 0:
          check_ptr(typed::bpf_get_current_task_btf().get(), task(prog_), "typed current");
          break;
        case 1: {
          if (typed_arg_gone(p, arg)) {
            break;
          }
          maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
          if (!r) {
            diverge("typed acquire of a live argument returned NULL");
          }
          m_.acquire(arg);
          owned_ref<task_struct> ref = std::move(r).take();
          check_ptr(ref.get(), a, "typed acquire");
          typed::bpf_task_release(std::move(ref));
          m_.release(arg);
          break;
        }
        case 2: {  // from_pid: a root-namespace number, found or not
          const int nr = static_cast<int>((op >> 3U) % static_cast<unsigned>(m_.pid_max + 1));
          const auto it = m_.ns[0].tasks.find(nr);
          task_struct* const want = it == m_.ns[0].tasks.end() ? nullptr : task(it->second);
          maybe_ref<task_struct> r = typed::bpf_task_from_pid(nr);
          if (!r) {
            check_ptr(nullptr, want, "typed bpf_task_from_pid");
            break;
          }
          m_.acquire(it->second);
          owned_ref<task_struct> ref = std::move(r).take();
          check_ptr(ref.get(), want, "typed bpf_task_from_pid");
          typed::bpf_task_release(std::move(ref));
          m_.release(it->second);
          break;
        }
        case 3: {  // the group leader through btf_walk, acquired when it can be
          const rcu_guard guard;
          const checked_rcu_ptr<task_struct> leader =
              typed::btf_walk(p, &task_struct::group_leader, guard);
          const int l = mt(arg).leader;
          check_ptr(leader.get(), task(l), "typed btf_walk(group_leader)");
          if (mt(l).rcu_users > 0) {
            maybe_ref<task_struct> r = typed::bpf_task_acquire(leader);
            if (!r) {
              diverge("typed acquire of a live leader returned NULL");
            }
            m_.acquire(l);
            typed::bpf_task_release(std::move(r).take());
            m_.release(l);
          }
          break;
        }
        case 4: {  // an owned reference dropped: the run's violation, released for it
          if (typed_arg_gone(p, arg)) {
            break;
          }
          maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
          if (!r) {
            diverge("typed acquire of a live argument returned NULL");
          }
          m_.acquire(arg);
          { const owned_ref<task_struct> dropped = std::move(r).take(); }
          expected.push_back(violation_kind::unreleased_ref);
          m_.release(arg);
          break;
        }
        case 5: {  // an owned reference into a slot; the old one comes back
          const std::size_t s = (op >> 3U) % kSlots;
          if (typed_arg_gone(p, arg)) {
            break;
          }
          maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
          if (!r) {
            diverge("typed acquire of a live argument returned NULL");
          }
          m_.acquire(arg);
          task_value* v = map_->lookup_elem(static_cast<std::uint32_t>(s));
          maybe_ref<task_struct> old = typed::bpf_kptr_xchg(&v->task, std::move(r).take());
          const int was = std::exchange(slots_[s], arg);
          if (!old) {
            check_ptr(nullptr, was < 0 ? nullptr : task(was), "typed bpf_kptr_xchg");
            break;
          }
          owned_ref<task_struct> back = std::move(old).take();
          check_ptr(back.get(), was < 0 ? nullptr : task(was), "typed bpf_kptr_xchg");
          typed::bpf_task_release(std::move(back));
          m_.release(was);
          break;
        }
        default: {  // a moved-from reference into a slot: refused, the slot untouched
          if (typed_arg_gone(p, arg)) {
            break;
          }
          maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
          if (!r) {
            diverge("typed acquire of a live argument returned NULL");
          }
          m_.acquire(arg);
          owned_ref<task_struct> first = std::move(r).take();
          owned_ref<task_struct> second = std::move(first);
          typed::bpf_task_release(std::move(second));
          m_.release(arg);
          task_value* v = map_->lookup_elem(static_cast<std::uint32_t>((op >> 3U) % kSlots));
          expect_refused(
              "typed bpf_kptr_xchg of a moved-from reference", contract_kind::moved_from, 0, [&] {
                // NOLINTNEXTLINE(bugprone-use-after-move): the misuse under test
                maybe_ref<task_struct> old = typed::bpf_kptr_xchg(&v->task, std::move(first));
                check_bool(static_cast<bool>(old), false, "moved-from xchg");
              });
          break;
        }
      }
    }
  }

  // A program of another type or section: what the verifier makes of its
  // argument (kprobe: the task kfuncs are not registered for it; fentry: an
  // untrusted argument since c6b0337f0120; syscall: no BTF argument; lsm/task_free:
  // trusted but not RCU-safe).
  void other_program() {
    const int arg = pick_if([](const model_task& t) { return !t.freed && t.rcu_users > 0; });
    if (arg < 0) {
      return;
    }
    struct kind {
      prog_type type;
      const char* section;
      violation_kind verdict;
    };
    static constexpr kind kinds[] = {
        {prog_type::kprobe, "kprobe/fuzz", violation_kind::kfunc_not_allowed},
        {prog_type::kretprobe, "kretprobe/fuzz", violation_kind::kfunc_not_allowed},
        {prog_type::tracing, "fentry/fuzz", violation_kind::untrusted_arg},
        {prog_type::syscall, "syscall", violation_kind::untrusted_arg},
        {prog_type::lsm, "lsm/task_free", violation_kind::untrusted_arg},
    };
    if ((in_.next() & 3U) == 0) {  // checker_mode::throw_error: the first violation ends it
      trace("program (throw_error) releasing its unacquired argument", arg);
      bool after = false;
      bpf_prog prog(
          *k_, prog_type::tracing, "tp_btf/fuzz",
          [&](task_struct* a) {
            bpf_task_release(a);
            after = true;  // not reached: the verifier's error unwinds the body
            return 0;
          },
          checker_mode::throw_error);
      bool thrown = false;
      try {
        (void)prog.run(task(prog_), task(arg));
      } catch (const verifier_error& e) {  // out of run(), after its cleanup
        thrown =
            e.info().kind == violation_kind::release_unacquired && e.info().argument == task(arg);
      }
      if (after || !thrown) {
        diverge("a throw_error program: not ended by a verifier_error for its release_unacquired");
      }
      return;
    }
    const kind& k = kinds[in_.pick(std::size(kinds))];
    trace("program " + std::string(k.section) + " (" + std::string(to_string(k.type)) +
              ") acquiring its argument",
          arg);
    bpf_prog prog(*k_, k.type, k.section, [&](task_struct* a) {
      check_ptr(bpf_task_acquire(a), nullptr, "a refused bpf_task_acquire");
      return 0;
    });
    const prog_run_result r = prog.run(task(prog_), task(arg));
    if (r.violations.size() != 1 || r.violations[0].kind != k.verdict) {
      diverge(std::string("program ") + k.section + ": " + std::to_string(r.violations.size()) +
              " violation(s), the model says one " + std::string(to_string(k.verdict)) +
              (r.violations.empty() ? std::string()
                                    : ", got " + std::string(to_string(r.violations[0].kind))));
    }
  }

  // A map update: the slot's reference is released by its destructor.
  void update_slot() {
    const std::size_t s = in_.pick(kSlots);
    trace_.push_back("bpf_map_update_elem(" + std::to_string(s) + ")");
    if (map_->update_elem(static_cast<std::uint32_t>(s), task_value{}, BPF_ANY) != 0) {
      diverge("array update failed");
    }
    if (slots_[s] >= 0) {
      m_.release(slots_[s]);
      slots_[s] = -1;
    }
  }

  // ---- RCU: the deterministic domain's controls, the native domain -----------------------------

  // Grace periods the other ways: synchronize_rcu, a grace period taken step by
  // step with this thread as the reader in its way, and rcu_barrier.
  void rcu_ops() {
    const std::uint64_t before = rc_->completed_grace_periods();
    if (rc_->queued_callbacks() != m_.queued.size()) {
      diverge("queued_callbacks() " + std::to_string(rc_->queued_callbacks()) +
              ", the model says " + std::to_string(m_.queued.size()));
    }
    switch (in_.pick(9)) {
      case 7:
        other_reader_in_the_way();
        break;
      case 8: {  // a simulated thread (another reader identity) ends inside its section
        trace_.push_back("another reader identity ends inside a read section");
        other_reader(true);
        expect_refused("a reader gone inside a read section", contract_kind::exit_in_read_section,
                       0, [&] {
                         detail::deterministic_rcu_access::reader_gone(*rc_, &other_identity_,
                                                                       "a fuzzed thread exits");
                       });
        check_bool(rc_->readers_inside() == 0, true, "the gone reader is still inside");
        // Its registration with the domain (not the backend's, which is gone) ends.
        const void* prev = detail::set_reader_identity(&other_identity_);
        k_->rcu().unregister_thread(std::source_location::current());
        detail::set_reader_identity(prev);
        break;
      }
      case 3: {  // a callback that throws: reported, the domain goes on
        trace_.push_back("call_rcu of a throwing callback, a grace period");
        rcu_head* h = &heads_[next_head_++ % heads_.size()];
        k_->rcu().call_rcu(h, [](rcu_head*) { throw std::runtime_error("fuzz"); });
        m_.queued.emplace_back(pending_kind::map_memory, -1);
        expect_refused("a throwing RCU callback", contract_kind::callback_failed, 0,
                       [&] { grace_period(); });
        break;
      }
      case 4: {  // a callback that calls rcu_barrier: refused, it would wait for itself
        trace_.push_back("call_rcu of a callback calling rcu_barrier, a grace period");
        g_barrier_domain = &k_->rcu();
        rcu_head* h = &heads_[next_head_++ % heads_.size()];
        k_->rcu().call_rcu(h, [](rcu_head*) { g_barrier_domain->rcu_barrier(); });
        m_.queued.emplace_back(pending_kind::map_memory, -1);
        expect_refused("rcu_barrier from a callback", contract_kind::wait_in_read_section, 0,
                       [&] { grace_period(); });
        break;
      }
      case 5: {  // call_rcu of NULL: refused, nothing queued
        const bool head = (in_.next() & 1U) != 0;
        expect_refused("call_rcu of NULL", contract_kind::null_argument, 0, [&] {
          if (head) {
            k_->rcu().call_rcu(nullptr, [](rcu_head*) {});
          } else {
            k_->rcu().call_rcu(&heads_[next_head_ % heads_.size()], nullptr);
          }
        });
        break;
      }
      case 6: {  // a registration ended inside a read section
        std::optional<rcu_thread_registration> reg;
        reg.emplace(k_->rcu());
        k_->rcu().rcu_read_lock();
        expect_refused("unregistering inside a read section", contract_kind::exit_in_read_section,
                       0, [&] { reg.reset(); });
        k_->rcu().rcu_read_unlock();  // the deterministic backend kept the section
        check_bool(k_->rcu().rcu_read_lock_held(), false, "a read section after its unlock");
        break;
      }
      case 0:
        trace_.push_back("synchronize_rcu, run_callbacks");
        k_->rcu().synchronize_rcu();
        if (rc_->completed_grace_periods() <= before) {
          diverge("synchronize_rcu returned before a grace period");
        }
        if (rc_->ready_callbacks() != m_.queued.size()) {
          diverge("after synchronize_rcu not every queued callback is ready");
        }
        rc_->run_callbacks();
        m_.grace_period();
        break;
      case 1: {
        trace_.push_back("grace period step by step, a reader in its way");
        {
          const rcu_thread_registration reg(k_->rcu());
          const rcu_read_guard guard(k_->rcu());
          if (!rc_->start_grace_period() || !rc_->grace_period_in_progress()) {
            diverge("start_grace_period did not start one");
          }
          if (rc_->readers_inside() != 1 || rc_->can_end_grace_period() ||
              rc_->try_end_grace_period()) {
            diverge("a grace period ended under a reader that was in its way");
          }
          if (rc_->ready_callbacks() != 0) {
            diverge("a callback is ready before its grace period ended");
          }
        }
        if (rc_->readers_inside() != 0 || !rc_->can_end_grace_period() ||
            !rc_->try_end_grace_period() || rc_->grace_period_in_progress()) {
          diverge("the grace period did not end once its reader left");
        }
        if (rc_->completed_grace_periods() != before + 1) {
          diverge("one grace period step by step is not one completed grace period");
        }
        if (rc_->callbacks_need_grace_period() || rc_->ready_callbacks() != m_.queued.size()) {
          diverge("after the grace period the model's callbacks are not all ready");
        }
        rc_->run_callbacks();
        m_.grace_period();
        break;
      }
      default:
        trace_.push_back("rcu_barrier");
        k_->rcu().rcu_barrier();
        while (!m_.queued.empty()) {  // every callback, and the ones they queue
          m_.grace_period();
        }
        break;
    }
  }

  // Another reader identity on this OS thread (as the explorer's simulated
  // threads) enters (true) or leaves (false) a read section of the kernel's domain.
  void other_reader(bool enter) {
    rcu_domain& d = k_->rcu();
    const void* prev = detail::set_reader_identity(&other_identity_);
    if (enter) {
      d.register_thread(std::source_location::current());
      d.rcu_read_lock();
    } else {
      d.rcu_read_unlock();
      d.unregister_thread(std::source_location::current());
    }
    detail::set_reader_identity(prev);
  }

  // synchronize_rcu with only that reader in the way: without a wait hook it
  // would wait forever (reported, not waited); a hook that lets the reader go
  // lets it finish; a hook that throws is reported too.
  void other_reader_in_the_way() {
    const std::size_t how = in_.pick(3);
    trace_.push_back("synchronize_rcu, another reader identity in the way, hook " +
                     std::to_string(how));
    other_reader(true);
    const std::uint64_t before = rc_->completed_grace_periods();
    using kinds = std::vector<std::pair<contract_kind, std::uint64_t>>;
    if (how == 0) {
      expect_violations("synchronize_rcu that would wait forever",
                        kinds{{contract_kind::wait_forever, 0}},
                        [&] { k_->rcu().synchronize_rcu(); });
      other_reader(false);
    } else if (how == 1) {
      rc_->set_wait_hook([this] {
        other_reader(false);
        return true;
      });
      k_->rcu().synchronize_rcu();
      rc_->set_wait_hook(nullptr);
      if (rc_->completed_grace_periods() <= before) {
        diverge("synchronize_rcu returned before a grace period, the hook having let it end");
      }
    } else {
      rc_->set_wait_hook([]() -> bool { throw std::runtime_error("fuzz hook"); });
      expect_violations(
          "synchronize_rcu with a throwing wait hook",
          kinds{{contract_kind::callback_failed, 0}, {contract_kind::wait_forever, 0}},
          [&] { k_->rcu().synchronize_rcu(); });
      rc_->set_wait_hook(nullptr);
      other_reader(false);
    }
    // The grace period synchronize_rcu started ends now that the reader is gone.
    rc_->advance_grace_period();
    rc_->run_callbacks();
    m_.grace_period();
  }

  // A native (liburcu memb) domain beside the kernel's: nested read sections,
  // synchronize_rcu, call_rcu and rcu_barrier, and its misuses.
  void native_rcu_ops() {
    if (!nat_) {
      nat_ = std::make_unique<rcu_domain>("fuzz-native");
    }
    rcu_domain& d = *nat_;
    switch (in_.pick(6)) {
      case 5: {  // a registration ended inside a read section: liburcu's section is ended too
        if (rcu_native_backend_info().flavor != "memb") {
          diverge("the native backend is not liburcu's memb flavor");
        }
        std::optional<rcu_thread_registration> reg;
        reg.emplace(d);
        d.rcu_read_lock();
        expect_refused("native: unregistering inside a read section",
                       contract_kind::exit_in_read_section, 0, [&] { reg.reset(); });
        check_bool(d.rcu_read_lock_held(), false, "native: a section after a forced unregister");
        check_bool(d.thread_registered(), false, "native: registered after a forced unregister");
        expect_refused("native: the unlock of a section already ended",
                       contract_kind::unbalanced_unlock, 0, [&] { d.rcu_read_unlock(); });
        break;
      }
      case 0: {
        const unsigned depth = 1 + static_cast<unsigned>(in_.pick(3));
        trace_.push_back("native: read sections nested " + std::to_string(depth));
        const rcu_thread_registration reg(d);
        if (!d.thread_registered() || d.live_registrations() != 1) {
          diverge("native: the registration is not counted");
        }
        for (unsigned j = 0; j < depth; ++j) {
          d.rcu_read_lock();
        }
        if (!d.rcu_read_lock_held()) {
          diverge("native: no read section held inside one");
        }
        for (unsigned j = 0; j < depth; ++j) {
          d.rcu_read_unlock();
        }
        if (d.rcu_read_lock_held()) {
          diverge("native: a read section held after its last unlock");
        }
        break;
      }
      case 1: {
        const std::size_t n = 1 + in_.pick(native_heads_.size());
        trace_.push_back("native: call_rcu x" + std::to_string(n) + ", rcu_barrier");
        const std::uint64_t done = g_native_callbacks;
        for (std::size_t j = 0; j < n; ++j) {
          d.call_rcu(&native_heads_[j], [](rcu_head*) { ++g_native_callbacks; });
        }
        d.rcu_barrier();
        if (g_native_callbacks != done + n || d.stats().pending() != 0) {
          diverge("native: rcu_barrier returned before its callbacks ran");
        }
        break;
      }
      case 2: {
        trace_.push_back("native: synchronize_rcu");
        const std::uint64_t calls = d.stats().synchronize_calls;
        d.synchronize_rcu();
        if (d.stats().synchronize_calls != calls + 1) {
          diverge("native: synchronize_rcu not counted");
        }
        break;
      }
      case 3: {
        const rcu_thread_registration reg(d);
        const rcu_read_guard guard(d);
        expect_refused("native: synchronize_rcu inside a read section",
                       contract_kind::wait_in_read_section, 0, [&] { d.synchronize_rcu(); });
        expect_refused("native: rcu_barrier inside a read section",
                       contract_kind::wait_in_read_section, 0, [&] { d.rcu_barrier(); });
        break;
      }
      default:
        expect_refused("native: rcu_read_lock unregistered", contract_kind::unregistered_reader, 0,
                       [&] { d.rcu_read_lock(); });
        if (d.rcu_read_lock_held()) {
          diverge("native: a refused read lock was taken");
        }
        expect_refused("native: unbalanced rcu_read_unlock", contract_kind::unbalanced_unlock, 0,
                       [&] { d.rcu_read_unlock(); });
        break;
    }
  }

  // ---- refcount_t on its own, against an int ---------------------------------------------------

  // A counter of the fuzzer's own (not a task's): every operation, and the
  // warnings of the misuses (each saturates the counter, as the kernel's).
  void refcount_ops() {
    const int op = static_cast<int>(in_.pick(14));
    const int n = 1 + static_cast<int>(in_.pick(3));
    int& v = rc_model_;
    const auto saturate_expected = [&](refcount_saturation_type type, const char* what,
                                       const auto& call) {
      trace_.push_back(std::string("refcount warning: ") + what);
      const std::uint64_t seen = refcount_warnings_seen(type);
      g_expect_refcount_warning = true;
      call();
      g_expect_refcount_warning = false;
      if (refcount_warnings_seen(type) != seen + 1) {
        diverge(std::string(what) + ": no warning of its type");
      }
      v = REFCOUNT_SATURATED;
    };
    trace_.push_back("refcount op " + std::to_string(op) + " n=" + std::to_string(n) + " on " +
                     std::to_string(v));
    bool got = false;
    bool want = false;
    switch (op) {
      case 0:
        refcount_set(&counter_, n);
        v = n;
        break;
      case 1:
        if (v == 0) {
          saturate_expected(REFCOUNT_ADD_UAF, "refcount_inc on 0",
                            [&] { refcount_inc(&counter_); });
        } else if (v > 0 && v < 1000) {
          refcount_add(n, &counter_);
          v += n;
        }
        break;
      case 2:
        want = v > 0;
        if (v >= 0 && v < 1000) {
          got = refcount_inc_not_zero(&counter_);
          v += want ? 1 : 0;
          check_bool(got, want, "refcount_inc_not_zero");
        }
        break;
      case 3:
        want = v > 0;
        if (v >= 0 && v < 1000) {
          got = refcount_add_not_zero(n, &counter_);
          v += want ? n : 0;
          check_bool(got, want, "refcount_add_not_zero");
        }
        break;
      case 4:
        if (v >= n) {
          got = refcount_sub_and_test(n, &counter_);
          check_bool(got, v == n, "refcount_sub_and_test");
          v -= n;
        } else if (v >= 0) {
          saturate_expected(REFCOUNT_SUB_UAF, "refcount_sub_and_test below 0", [&] {
            check_bool(refcount_sub_and_test(v + 1, &counter_), false, "sub");
          });
        }
        break;
      case 5:
        if (v > 1) {
          refcount_dec(&counter_);
          --v;
        } else if (v == 1) {
          saturate_expected(REFCOUNT_DEC_LEAK, "refcount_dec to 0",
                            [&] { refcount_dec(&counter_); });
        }
        break;
      case 6:
        if (v >= 0) {
          got = refcount_dec_if_one(&counter_);
          check_bool(got, v == 1, "refcount_dec_if_one");
          v = v == 1 ? 0 : v;
        }
        break;
      case 7:
        if (v > 0) {
          got = refcount_dec_not_one(&counter_);
          check_bool(got, v != 1, "refcount_dec_not_one");
          v -= v != 1 ? 1 : 0;
        }
        break;
      case 8:
        if (v > 0) {
          std::mutex lock;
          got = refcount_dec_and_lock(&counter_, &lock);
          check_bool(got, v == 1, "refcount_dec_and_lock");
          if (got) {
            lock.unlock();  // it returns holding the lock when the count reached 0
          }
          --v;
        }
        break;
      case 9:
        if (v > 0) {
          saturate_expected(REFCOUNT_ADD_OVF, "refcount_add past INT_MAX", [&] {
            refcount_set(&counter_, INT_MAX - 1);
            refcount_add(2, &counter_);
          });
        } else {
          saturate_expected(REFCOUNT_ADD_NOT_ZERO_OVF, "refcount_add_not_zero past INT_MAX", [&] {
            refcount_set(&counter_, INT_MAX);
            check_bool(refcount_add_not_zero(1, &counter_), true, "add_not_zero");
          });
        }
        break;
      case 10: {
        const std::size_t which = in_.pick(4);
        expect_refused("a refcount operation on NULL", contract_kind::null_argument, 0, [&] {
          switch (which) {
            case 0:
              refcount_inc(nullptr);
              break;
            case 1:
              check_bool(refcount_dec_if_one(nullptr), false, "dec_if_one(NULL)");
              break;
            case 2:
              check_bool(refcount_dec_not_one(nullptr), false, "dec_not_one(NULL)");
              break;
            default:
              check_bool(refcount_dec_and_lock(&counter_, nullptr), false, "dec_and_lock(NULL)");
              break;
          }
        });
        break;
      }
      case 12:  // dec_not_one below 0: a warning, the counter left as it is
        if (v == 0) {
          const std::uint64_t seen = refcount_warnings_seen(REFCOUNT_SUB_UAF);
          g_expect_refcount_warning = true;
          const bool r = refcount_dec_not_one(&counter_);
          g_expect_refcount_warning = false;
          check_bool(r, true, "refcount_dec_not_one(0)");
          if (refcount_warnings_seen(REFCOUNT_SUB_UAF) != seen + 1) {
            diverge("refcount_dec_not_one(0): no warning");
          }
        }
        break;
      case 13:  // a saturated counter: dec_not_one leaves it saturated
        refcount_set(&counter_, REFCOUNT_SATURATED);
        check_bool(refcount_dec_not_one(&counter_), true, "dec_not_one(saturated)");
        v = REFCOUNT_SATURATED;
        break;
      default:
        if (v > 0 && v < 1000) {  // the acquire variants, with a limit
          const int limit = v + static_cast<int>(in_.pick(3));
          want = v + n <= limit;
          got = refcount_add_not_zero_limited_acquire(n, &counter_, limit);
          v += want ? n : 0;
          check_bool(got, want, "refcount_add_not_zero_limited_acquire");
        }
        break;
    }
    if (static_cast<int>(refcount_read(&counter_)) != v) {
      diverge("refcount " + std::to_string(static_cast<int>(refcount_read(&counter_))) +
              ", the model says " + std::to_string(v));
    }
    if (v == REFCOUNT_SATURATED) {  // a saturated counter stays so: start afresh
      refcount_set(&counter_, 1);
      v = 1;
    }
  }

  static void check_bool(bool got, bool want, const char* what) {
    if (got != want) {
      diverge(std::string(what) + " returned " + (got ? "true" : "false") + " against the model");
    }
  }

  // ---- more misuse: NULL, fake and foreign objects, RCU, sizes ---------------------------------

  void more_misuse() {
    switch (in_.pick(16)) {
      case 12: {  // the lifecycle out of order
        const std::size_t which = in_.pick(4);
        if (which == 0) {
          if (const int i = pick_if([](const model_task& t) { return t.exited && !t.freed; });
              i >= 0) {
            expect_refused("a second do_exit", contract_kind::invalid_state, mt(i).id,
                           [&] { k_->do_exit(task(i)); });
          }
        } else if (which == 1) {
          if (const int i = pick_if([](const model_task& t) { return !t.exited; }); i >= 0) {
            expect_refused("finish_task_switch of a live task", contract_kind::invalid_state,
                           mt(i).id, [&] { k_->finish_task_switch(task(i)); });
          }
        } else if (which == 2) {
          if (const int i = pick_if([](const model_task& t) { return t.switched && !t.freed; });
              i >= 0) {
            expect_refused("a second final switch", contract_kind::double_release, mt(i).id,
                           [&] { k_->finish_task_switch(task(i)); });
          }
        } else if (const int i = pick_if([](const model_task& t) { return t.exited && !t.freed; });
                   i >= 0) {
          expect_refused("retire of an exited task", contract_kind::invalid_state, mt(i).id,
                         [&] { check_bool(k_->retire(task(i)), false, "retire of an exited"); });
        }
        break;
      }
      case 13: {  // a kfunc's task argument outside a program: NULL, fake, foreign
        other_kernel();
        const std::size_t which = in_.pick(3);
        task_struct fake;
        const current_task_scope scope = k_->run_as(task(prog_));
        const rcu_thread_registration reg(k_->rcu());
        const rcu_read_guard guard(k_->rcu());
        if (which == 0) {
          expect_refused("bpf_task_acquire(NULL)", contract_kind::null_argument, 0,
                         [&] { check_ptr(bpf_task_acquire(nullptr), nullptr, "acquire(NULL)"); });
        } else if (which == 1) {
          expect_refused(
              "bpf_task_acquire of a never-forked task", contract_kind::not_a_task, 0,
              [&] { check_ptr(bpf_task_acquire(&fake), nullptr, "acquire(fake)"); }, &fake);
        } else {
          expect_refused("bpf_task_acquire of another kernel's task", contract_kind::foreign_object,
                         task_id(other_task_), [&] {
                           check_ptr(bpf_task_acquire(other_task_), nullptr, "acquire(foreign)");
                         });
        }
        break;
      }
      case 14:  // bpf_task_release_dtor where it does not exist (before v6.8)
        if (!kfunc_exists(m_.profile, kfunc_id::bpf_task_release_dtor)) {
          if (const int i = pick_usage(); i >= 0) {
            expect_refused("bpf_task_release_dtor outside its profiles",
                           contract_kind::not_in_profile, mt(i).id,
                           [&] { bpf_task_release_dtor(task(i)); });
          }
        }
        break;
      case 15: {  // btf_walk of NULL; find_task_by_vpid with no current
        if ((in_.next() & 1U) != 0) {
          expect_refused("btf_walk(NULL)", contract_kind::null_argument, 0, [&] {
            check_ptr(btf_walk(nullptr, &task_struct::real_parent), nullptr, "btf_walk(NULL)");
          });
        } else {
          const rcu_thread_registration reg(k_->rcu());
          const rcu_read_guard guard(k_->rcu());
          expect_refused("find_task_by_vpid without current", contract_kind::no_current, 0,
                         [&] { check_ptr(find_task_by_vpid(1), nullptr, "find_task_by_vpid"); });
        }
        break;
      }
      case 0:
        if (const int i = pick_usage(); i >= 0) {
          expect_refused("put_task_struct_many(t, -5)", contract_kind::invalid_argument,
                         task_id(task(i)), [&] { put_task_struct_many(task(i), -5); });
        }
        break;
      case 1: {  // NULL to the callbacks, destructors, queries and history
        const std::size_t which = in_.pick(10);
        expect_refused("NULL to a task function", contract_kind::null_argument, 0, [&] {
          switch (which) {
            case 0:
              task_kptr_dtor(nullptr);
              break;
            case 1:
              bpf_task_release_dtor(nullptr);
              break;
            case 2:
              delayed_put_task_struct(nullptr);
              break;
            case 3:
              __put_task_struct_rcu_cb(nullptr);
              break;
            case 4:
              __put_task_struct(nullptr);
              break;
            case 5:
              k_->trace_task(nullptr);
              break;
            case 6:
              (void)k_->history(static_cast<const task_struct*>(nullptr));
              break;
            case 7:
              if (task_active_pid_ns(nullptr) != nullptr) {
                diverge("task_active_pid_ns(NULL) is not NULL");
              }
              break;
            case 8:
              (void)task_pid_nr_ns(nullptr, &k_->init_pid_ns());
              break;
            default: {
              const rcu_thread_registration reg(k_->rcu());
              const rcu_read_guard guard(k_->rcu());
              check_ptr(find_task_by_pid_ns(1, nullptr), nullptr, "find_task_by_pid_ns(NULL)");
              break;
            }
          }
        });
        break;
      }
      case 2: {  // a never-forked task
        task_struct fake;
        const std::size_t which = in_.pick(7);
        expect_refused(
            "a never-forked task", contract_kind::not_a_task, 0,
            [&] {
              switch (which) {
                case 0:
                  (void)task_pid_nr_ns(&fake, &k_->init_pid_ns());
                  break;
                case 1:
                  (void)task_active_pid_ns(&fake);
                  break;
                case 2:
                  task_kptr_dtor(&fake);
                  break;
                case 3:
                  k_->trace_task(&fake);
                  break;
                case 4:
                  (void)k_->history(&fake);
                  break;
                case 5:
                  delayed_put_task_struct(&fake.rcu);
                  break;
                default:
                  __put_task_struct_rcu_cb(&fake.rcu);
                  break;
              }
            },
            &fake);
        break;
      }
      case 3: {  // another kernel's task to this kernel's lifecycle
        other_kernel();
        task_struct* tb = other_task_;
        const std::size_t which = in_.pick(6);
        expect_refused("another kernel's task", contract_kind::foreign_object, task_id(tb), [&] {
          switch (which) {
            case 0:
              if (k_->fork(tb)) {
                diverge("fork under a foreign parent succeeded");
              }
              break;
            case 1:
              k_->do_exit(tb);
              break;
            case 2:
              k_->finish_task_switch(tb);
              break;
            case 3:
              check_bool(k_->wait_task_zombie(tb), false, "foreign wait_task_zombie");
              break;
            case 4:
              check_bool(k_->retire(tb), false, "foreign retire");
              break;
            default: {
              const current_task_scope scope = k_->run_as(tb);
              check_ptr(get_current(), nullptr, "run_as(foreign)");
              break;
            }
          }
        });
        if (tb->exit_state.load() != 0 || refcount_read(&tb->rcu_users) != 2U) {
          diverge("another kernel's task was changed by a refused operation");
        }
        break;
      }
      case 4: {
        other_kernel();
        pid_namespace* got = nullptr;
        trace_.push_back("misuse: create_pid_namespace(another kernel's)");
        std::vector<seen_violation> seen;
        g_expected_sink = &seen;
        got = &k_->create_pid_namespace(other_->init_pid_ns());
        g_expected_sink = nullptr;
        if (seen.size() != 1 || seen[0].kind != contract_kind::foreign_object ||
            got != &other_->init_pid_ns()) {
          diverge("create_pid_namespace of a foreign parent was not refused");
        }
        break;
      }
      case 5: {  // RCU misuse on the kernel's (deterministic) domain
        rcu_domain& d = k_->rcu();
        const rcu_thread_registration reg(d);
        switch (in_.pick(4)) {
          case 0: {
            const rcu_read_guard guard(d);
            expect_refused("synchronize_rcu inside a read section",
                           contract_kind::wait_in_read_section, 0, [&] { d.synchronize_rcu(); });
            break;
          }
          case 1: {
            const rcu_read_guard guard(d);
            expect_refused("rcu_barrier inside a read section", contract_kind::wait_in_read_section,
                           0, [&] { d.rcu_barrier(); });
            break;
          }
          case 2:
            expect_refused("unbalanced rcu_read_unlock", contract_kind::unbalanced_unlock, 0,
                           [&] { d.rcu_read_unlock(); });
            break;
          default: {
            const task_struct* t = task(prog_);
            expect_refused(
                "find_task outside rcu_read_lock", contract_kind::missing_rcu_lock, 0,
                [&] { check_ptr(k_->init_pid_ns().find_task(t->pid), nullptr, "find"); });
            break;
          }
        }
        break;
      }
      case 6:
        expect_refused("rcu_read_lock unregistered", contract_kind::unregistered_reader, 0,
                       [&] { k_->rcu().rcu_read_lock(); });
        break;
      case 7: {  // bpf_kptr_xchg into a value's field that is no kptr field
        const current_task_scope scope = k_->run_as(task(prog_));
        const rcu_thread_registration reg(k_->rcu());
        const rcu_read_guard guard(k_->rcu());
        task_value* v = map_->lookup_elem(static_cast<std::uint32_t>(in_.pick(kSlots)));
        const bool tag = (in_.next() & 1U) != 0;
        auto* slot = tag ? reinterpret_cast<kptr<task_struct>*>(&v->tag) : &v->not_a_field;
        expect_refused(
            "bpf_kptr_xchg into no kptr field", contract_kind::foreign_object, 0,
            [&] { check_ptr(bpf_kptr_xchg(slot, nullptr), nullptr, "xchg"); }, slot);
        if (v->tag != 7) {
          diverge("a refused bpf_kptr_xchg wrote the field");
        }
        break;
      }
      case 8: {  // maps of no entries or too many
        const bool none = (in_.next() & 1U) != 0;
        const std::uint32_t entries = none ? 0U : UINT32_MAX;
        const contract_kind kind =
            none ? contract_kind::invalid_argument : contract_kind::limit_exceeded;
        if ((in_.next() & 1U) != 0) {
          std::optional<bpf_array_map<task_value>> m;
          expect_refused("an array map of a bad size", kind, 0,
                         [&] { m.emplace(*k_, entries, "bad"); });
          check_bool(m->update_elem(0, task_value{}, BPF_ANY) == -E2BIG, true, "bad map update");
        } else {
          std::optional<bpf_hash_map<int, task_value>> m;
          expect_refused("a hash map of a bad size", kind, 0,
                         [&] { m.emplace(*k_, entries, "bad"); });
          check_bool(m->update_elem(1, task_value{}, BPF_ANY) == -E2BIG, true, "bad map update");
        }
        m_.queued.emplace_back(pending_kind::map_memory, -1);  // the map's storage, after a GP
        break;
      }
      case 9: {  // a kernel of a bad pid_max
        static constexpr int bad[] = {-2, 0, 1, PID_MAX_LIMIT + 1, INT_MAX};
        kernel_config c;
        c.name = "bad-pid-max";
        c.pid_max = bad[in_.pick(std::size(bad))];
        c.rcu_backend_factory = deterministic_rcu_factory();
        std::optional<kernel> k;
        expect_refused("pid_max out of range", contract_kind::invalid_argument, 0,
                       [&] { k.emplace(std::move(c)); });
        if (k->init_pid_ns().pid_max() != PID_MAX_DEFAULT) {
          diverge("a refused pid_max is not PID_MAX_DEFAULT");
        }
        break;
      }
      case 10: {  // pid namespaces nested past MAX_PID_NS_LEVEL
        kernel_config c;
        c.name = "deep";
        c.rcu_backend_factory = deterministic_rcu_factory();
        kernel k(std::move(c));
        pid_namespace* ns = &k.init_pid_ns();
        for (unsigned j = 0; j < MAX_PID_NS_LEVEL; ++j) {
          ns = &k.create_pid_namespace(*ns);
        }
        expect_refused("a pid namespace nested too deep", contract_kind::limit_exceeded, 0,
                       [&] { ns = &k.create_pid_namespace(*ns); });
        if (ns->level() != MAX_PID_NS_LEVEL) {
          diverge("a namespace deeper than MAX_PID_NS_LEVEL");
        }
        break;
      }
      default:
        expect_refused("a kfunc outside a program", contract_kind::no_current, 0,
                       [&] { check_ptr(bpf_task_from_pid(1), nullptr, "from_pid outside"); });
        break;
    }
  }

  // The second kernel, for foreign objects: one task, retired at teardown.
  void other_kernel() {
    if (other_) {
      return;
    }
    kernel_config c;
    c.name = "other";
    c.rcu_backend_factory = deterministic_rcu_factory();
    other_.emplace(std::move(c));
    other_task_ = other_->fork(nullptr, {.comm = "of-other"}).task;
    if (other_task_ == nullptr) {
      diverge("the other kernel's fork failed");
    }
  }

  // ---- teardown mistakes (once an input: what they leave is kept until exit) ------------------

  // Runs `op` and compares the violations it raises, as (kind, task id) pairs in
  // any order, with `want`.
  template <class Op>
  void expect_violations(const char* what,
                         std::vector<std::pair<contract_kind, std::uint64_t>> want, Op op) {
    trace_.push_back(std::string("misuse: ") + what);
    std::vector<seen_violation> seen;
    g_expected_sink = &seen;
    op();
    g_expected_sink = nullptr;
    std::vector<std::pair<contract_kind, std::uint64_t>> got;
    for (const seen_violation& v : seen) {
      got.emplace_back(v.kind, v.task_id);
    }
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    if (got != want) {
      std::string list;
      for (const auto& [kind, id] : got) {
        list += " " + std::string(to_string(kind)) + "/" + std::to_string(id);
      }
      diverge(std::string(what) + ": " + std::to_string(got.size()) + " violation(s) (" + list +
              " ), the model says " + std::to_string(want.size()));
    }
  }

  static kernel_config throwaway(const char* name) {
    kernel_config c;
    c.name = name;
    c.rcu_backend_factory = deterministic_rcu_factory();
    return c;
  }

  void teardown_misuse() {
    if (teardown_misused_) {
      return;
    }
    teardown_misused_ = true;
    using kinds = std::vector<std::pair<contract_kind, std::uint64_t>>;
    switch (in_.pick(6)) {
      case 0: {  // a task still referenced at its kernel's teardown: a tombstone
        auto k = std::make_unique<kernel>(throwaway("leaky"));
        task_struct* t = k->fork(nullptr, {.comm = "held"}).task;
        const std::uint64_t id = task_id(t);
        (void)get_task_struct(t);
        expect_violations("a kernel torn down under a reference", kinds{{contract_kind::leak, id}},
                          [&] { k.reset(); });
        const std::size_t which = in_.pick(4);
        expect_violations("a tombstone's later use", kinds{{contract_kind::teardown_order, id}},
                          [&] {
                            switch (which) {
                              case 0:
                                put_task_struct(t);
                                break;
                              case 1:
                                (void)get_task_struct(t);
                                break;
                              case 2:
                                put_task_struct_rcu_user(t);
                                break;
                              default:
                                check_bool(task_pid_nr(t) == 0, true, "tombstone pid");
                                break;
                            }
                          });
        break;
      }
      case 1: {  // a map outliving its kernel with a task stashed
        auto k = std::make_unique<kernel>(throwaway("mapless"));
        task_struct* prog = k->fork(nullptr, {.comm = "prog"}).task;
        task_struct* t = k->fork(nullptr, {.comm = "stashed"}).task;
        const std::uint64_t id = task_id(t);
        auto map = std::make_unique<bpf_array_map<task_value>>(*k, 2, "stash");
        {
          const current_task_scope scope = k->run_as(prog);
          const rcu_thread_registration reg(k->rcu());
          const rcu_read_guard guard(k->rcu());
          task_struct* ref = bpf_task_acquire(t);
          check_ptr(ref, t, "bpf_task_acquire before the teardown");
          check_ptr(bpf_kptr_xchg(&map->lookup_elem(0)->task, ref), nullptr, "xchg");
        }
        expect_violations("a kernel torn down under its map",
                          kinds{{contract_kind::teardown_order, 0},
                                {contract_kind::leak, task_id(prog)},
                                {contract_kind::leak, id}},
                          [&] { k.reset(); });
        expect_violations("an orphaned map's update", kinds{{contract_kind::teardown_order, 0}},
                          [&] {
                            check_bool(map->update_elem(0, task_value{}, BPF_ANY) == -EINVAL, true,
                                       "orphaned update");
                          });
        expect_violations("an orphaned map's destructor",
                          kinds{{contract_kind::teardown_order, id}}, [&] { map.reset(); });
        break;
      }
      case 2: {  // a kernel torn down while this thread runs as its task
        auto k = std::make_unique<kernel>(throwaway("scoped"));
        task_struct* t = k->fork(nullptr, {.comm = "me"}).task;
        const std::uint64_t id = task_id(t);
        std::optional<current_task_scope> scope;
        scope.emplace(t);
        expect_violations("a kernel torn down under a scope",
                          kinds{{contract_kind::teardown_order, 0},
                                {contract_kind::teardown_order, 0},
                                {contract_kind::leak, id}},
                          [&] { k.reset(); });
        check_ptr(get_current(), nullptr, "current after the teardown");
        expect_violations("a kfunc after the teardown", kinds{{contract_kind::no_current, 0}},
                          [&] { check_ptr(bpf_task_acquire(t), nullptr, "acquire"); });
        scope.reset();
        break;
      }
      case 3: {  // a kernel torn down under a registration with its domain
        auto k = std::make_unique<kernel>(throwaway("registered"));
        std::optional<rcu_thread_registration> reg;
        reg.emplace(k->rcu());
        expect_violations("a kernel torn down under a registration",
                          kinds{{contract_kind::teardown_order, 0}}, [&] { k.reset(); });
        reg.reset();
        break;
      }
      case 4: {  // a domain of one's own destroyed under a registration
        auto d = std::make_unique<rcu_domain>("mine", std::make_unique<deterministic_rcu>());
        rcu_backend* const backend = d->backend();
        std::optional<rcu_thread_registration> reg;
        reg.emplace(*d);
        expect_violations("a domain destroyed under a registration",
                          kinds{{contract_kind::teardown_order, 0}}, [&] { d.reset(); });
        reg.reset();
        check_bool(backend->thread_registered(), false, "registered after the registration ended");
        break;
      }
      default:  // a freed task used while in the quarantine
        if constexpr (debug_checks_enabled) {
          if (const int i = pick_if([](const model_task& t) { return t.freed; }); i >= 0) {
            expect_violations("a freed task's get_task_struct",
                              kinds{{contract_kind::use_after_free, mt(i).id}},
                              [&] { (void)get_task_struct(task(i)); });
          }
        }
        break;
    }
  }

  // ---- task queries and lookups as current -----------------------------------------------------

  void task_ops() {
    switch (in_.pick(4)) {
      case 0:
        if (const int i = pick_if([](const model_task& t) { return !t.freed; }); i >= 0) {
          trace("tryget_task_struct", i);
          if (mt(i).usage == 0) {  // its free waits for a grace period: no reference to take
            check_ptr(tryget_task_struct(task(i)), nullptr, "tryget_task_struct of usage 0");
            break;
          }
          check_ptr(tryget_task_struct(task(i)), task(i), "tryget_task_struct");
          ++mt(i).usage;
          ++mt(i).my_usage;
        }
        // put_task_struct_many of two of the fuzzer's references: never deferred.
        if (const int i = pick_if([](const model_task& t) { return t.my_usage >= 2; }); i >= 0) {
          trace("put_task_struct_many(2)", i);
          put_task_struct_many(task(i), 2);
          mt(i).my_usage -= 2;
          mt(i).usage -= 2;
          if (mt(i).usage == 0) {
            mt(i).freed = true;
            ++m_.freed;
          }
        }
        break;
      case 1: {  // lookups in current's namespace, as the program task
        const int nr = static_cast<int>(in_.next() % static_cast<unsigned>(m_.pid_max + 1));
        trace_.push_back("find_task_by_vpid(" + std::to_string(nr) + ") as the program task");
        const current_task_scope scope = k_->run_as(task(prog_));
        const rcu_thread_registration reg(k_->rcu());
        const rcu_read_guard guard(k_->rcu());
        const auto it = m_.ns[0].tasks.find(nr);
        check_ptr(find_task_by_vpid(nr), it == m_.ns[0].tasks.end() ? nullptr : task(it->second),
                  "find_task_by_vpid");
        for (std::size_t j = 0; j < m_.tasks.size(); ++j) {
          const model_task& t = m_.tasks[j];
          if (!t.freed && !t.reaped && t.ns == 0 && task_pid_vnr(t.t) != t.numbers.front().second) {
            diverge("task_pid_vnr differs from the model's number");
          }
        }
        break;
      }
      case 2: {  // numbers allocated per namespace
        trace_.push_back("nr_allocated");
        for (const model_ns& n : m_.ns) {
          if (n.real != nullptr && n.real->nr_allocated() != n.used.size()) {
            diverge("nr_allocated " + std::to_string(n.real->nr_allocated()) + " at level " +
                    std::to_string(n.level) + ", the model says " + std::to_string(n.used.size()));
          }
        }
        break;
      }
      default: {  // tracing one task on and off; the leak report's view
        if (const int i = pick_usage(); i >= 0) {
          trace("trace_task on, a get and a put seen by a listener, off", i);
          k_->trace_task(task(i), true);
          check_bool(task(i)->traced.load(), true, "trace_task on");
          std::uint64_t heard = 0;
          k_->set_event_listener([&heard](const task_event&) { ++heard; });
          (void)get_task_struct(task(i));
          put_task_struct(task(i));  // usage > 0 before the get: never the last
          k_->set_event_listener(nullptr);
          if (heard < 2) {
            diverge("the event listener heard " + std::to_string(heard) +
                    " event(s) of a traced task's get and put");
          }
          if (k_->history(task_id(task(i))).empty()) {
            diverge("a traced task's history is empty after a get and a put");
          }
          k_->trace_task(task(i), false);
          check_bool(task(i)->traced.load(), false, "trace_task off");
        }
        if (tracked_) {  // every reference the fuzzer holds is a holder
          for (const model_task& t : m_.tasks) {
            if (!t.freed &&
                k_->holders(t.t).size() < static_cast<std::size_t>(t.my_usage + t.my_rcu)) {
              diverge("holders() lists fewer holders than the fuzzer's references");
            }
          }
        }
        std::size_t unfreed = 0;
        for (const model_task& t : m_.tasks) {
          unfreed += t.freed ? 0U : 1U;
        }
        if (k_->allocated_tasks_with_holders().size() != unfreed) {
          diverge("allocated_tasks_with_holders() differs from the model's");
        }
        break;
      }
    }
  }

  // ---- checks
  // ------------------------------------------------------------------------------------
  void check() {
    for (std::size_t i = 0; i < m_.tasks.size(); ++i) {
      const model_task& t = m_.tasks[i];
      if (k_->is_allocated(t.t) == t.freed) {
        diverge("task " + std::to_string(i) + (t.freed ? " is still allocated" : " was freed") +
                " against the model");
      }
      if (t.freed) {
        continue;
      }
      const int usage = static_cast<int>(refcount_read(&t.t->usage));
      if (usage != t.usage) {
        diverge("task " + std::to_string(i) + ": usage " + std::to_string(usage) +
                ", the model says " + std::to_string(t.usage));
      }
      // Once at 0, rcu_users is the union's storage in the early profiles.
      if (t.rcu_users > 0 || !rcu_users_in_union(m_.profile)) {
        const int rcu = static_cast<int>(refcount_read(&t.t->rcu_users));
        if (rcu != t.rcu_users) {
          diverge("task " + std::to_string(i) + ": rcu_users " + std::to_string(rcu) +
                  ", the model says " + std::to_string(t.rcu_users));
        }
      }
      if (k_->is_hashed(t.t) == t.reaped) {
        diverge("task " + std::to_string(i) + ": hashed state differs from the model's");
      }
    }
    const kernel_stats s = k_->stats();
    if (s.freed != m_.freed) {
      diverge("freed " + std::to_string(s.freed) + ", the model says " + std::to_string(m_.freed));
    }
    const std::uint64_t pending = k_->rcu().stats().pending();
    std::uint64_t model_pending = m_.queued.size();
    if (pending != model_pending) {
      diverge("pending callbacks " + std::to_string(pending) + ", the model says " +
              std::to_string(model_pending));
    }
  }

  static void check_ptr(const task_struct* got, const task_struct* want, const char* what) {
    if (got != want) {
      diverge(std::string(what) + " returned another task than the model's");
    }
  }

  // ---- choices
  // -----------------------------------------------------------------------------------
  template <class Pred>
  int pick_if(Pred p) {
    std::vector<int> ok;
    for (std::size_t i = 0; i < m_.tasks.size(); ++i) {
      if (p(m_.tasks[i])) {
        ok.push_back(static_cast<int>(i));
      }
    }
    return ok.empty() ? -1 : ok[in_.pick(ok.size())];
  }
  int pick_live() {
    return pick_if([](const model_task& t) { return !t.exited; });
  }
  int pick_usage() {
    return pick_if([](const model_task& t) { return !t.freed && t.usage > 0; });
  }
  model_task& mt(int i) { return m_.tasks[static_cast<std::size_t>(i)]; }
  task_struct* task(int i) { return m_.tasks[static_cast<std::size_t>(i)].t; }
  void trace(const std::string& op, int i) { trace_.push_back(op + " task " + std::to_string(i)); }

  bytes& in_;
  std::vector<std::string>& trace_;
  model m_;
  std::optional<kernel> k_;
  deterministic_rcu* rc_ = nullptr;
  std::unique_ptr<bpf_array_map<task_value>> map_;
  std::unique_ptr<bpf_task_storage_map<int>> storage_;  // task local storage
  std::map<int, int> stored_;                           // its model: model task index -> value
  int next_value_ = 1;
  unsigned queries_ = 0;
  std::vector<int> slots_;  // the model task whose reference each slot holds, or -1
  int prog_ = -1;
  bool tracked_ = false;  // holders are tracked: a release without a holder is theirs to report
  std::vector<rcu_head> heads_ = std::vector<rcu_head>(4);
  std::size_t next_head_ = 0;
  std::unique_ptr<rcu_domain> nat_;  // the native domain, made at its first operation
  std::vector<rcu_head> native_heads_ = std::vector<rcu_head>(3);
  refcount_t counter_{};         // the fuzzer's own counter
  int rc_model_ = 0;             // its model
  std::optional<kernel> other_;  // another kernel, for foreign objects
  task_struct* other_task_ = nullptr;
  bool teardown_misused_ = false;
  char other_identity_ = 0;  // the address is another reader identity's
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool installed = [] {
    set_contract_handler(&contract_handler_abort);
    set_refcount_warning_sink(&refcount_sink_abort);
    std::atexit([] {
      std::fprintf(stderr, "tasklife fuzz: %llu operations in %llu inputs, no divergence\n",
                   static_cast<unsigned long long>(g_operations),
                   static_cast<unsigned long long>(g_inputs));
    });
    return true;
  }();
  (void)installed;
  std::vector<std::string> trace;
  g_trace = &trace;
  ++g_inputs;
  bytes in(data, size);
  harness h(in, trace);
  h.run();
  g_trace = nullptr;
  if (std::getenv("TASKLIFE_FUZZ_TRACE") != nullptr) {  // what an input did
    for (const std::string& op : trace) {
      std::fprintf(stderr, "  %s\n", op.c_str());
    }
  }
  return 0;
}
