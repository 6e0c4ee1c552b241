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
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
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

void refcount_sink_abort(const refcount_warning& w) {
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
  int my_usage = 0;  // references the fuzzer holds
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
    c.track_holders = (h & 0x80U) != 0;
    tracked_ = c.track_holders;
    c.pid_max = m_.pid_max;
    c.reserved_pids = m_.reserved;
    c.rcu_backend_factory = deterministic_rcu_factory();
    k_.emplace(std::move(c));
    rc_ = as_deterministic(k_->rcu());
    map_ = std::make_unique<bpf_array_map<task_value>>(*k_, static_cast<std::uint32_t>(kSlots));
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
    switch (in_.pick(20)) {
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
      default:
        break;
    }
  }

  // Runs `op`, which the model says is refused with one violation of `kind`
  // about `id` (0: about no task) and changes nothing.
  // With holders tracked the tracker speaks first: a release with no holder is
  // an over_release, or a double_release if a holder of that kind was dropped.
  template <class Op>
  void expect_refused(const char* what, contract_kind kind, std::uint64_t id, Op op) {
    trace_.push_back(std::string("misuse: ") + what);
    std::vector<seen_violation> seen;
    g_expected_sink = &seen;
    op();
    g_expected_sink = nullptr;
    const bool release = kind == contract_kind::over_release;
    const bool kind_ok =
        !seen.empty() && (seen[0].kind == kind ||
                          (release && tracked_ && seen[0].kind == contract_kind::double_release));
    if (seen.size() != 1 || !kind_ok || seen[0].task_id != id) {
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
        typed_body(a, arg, body);
      } else {
        raw_body(a, arg, body, expected);
      }
      return 0;
    });
    const prog_run_result r = prog.run(task(prog_), task(arg));
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
        default: {  // bpf_get_current_task_btf
          if (bpf_get_current_task_btf() != task(prog_)) {
            diverge("bpf_get_current_task_btf is not current");
          }
          break;
        }
      }
    }
    if (forget) {
      for (const int i : held) {
        expected.push_back(violation_kind::unreleased_ref);
        m_.release(i);  // the runner releases them
      }
      return;
    }
    while (!held.empty()) {
      const int i = held.back();
      held.pop_back();
      bpf_task_release(task(i));
      m_.release(i);
    }
  }

  void typed_body(task_struct* a, int arg, const std::vector<std::uint8_t>& body) {
    const trusted_ptr<task_struct> p = trusted_ptr<task_struct>::from_prog_arg(a);
    for (const std::uint8_t op : body) {
      if ((op & 1U) != 0) {
        maybe_ref<task_struct> r = typed::bpf_task_acquire(p);
        if (!r) {
          diverge("typed acquire of a live argument returned NULL");
        }
        m_.acquire(arg);
        owned_ref<task_struct> ref = std::move(r).take();
        if (ref.get() != a) {
          diverge("typed acquire returned another task");
        }
        typed::bpf_task_release(std::move(ref));
        m_.release(arg);
      } else {
        check_ptr(typed::bpf_get_current_task_btf().get(), task(prog_), "typed current");
      }
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
  std::vector<int> slots_;  // the model task whose reference each slot holds, or -1
  int prog_ = -1;
  bool tracked_ = false;  // holders are tracked: a release without a holder is theirs to report
  std::vector<rcu_head> heads_ = std::vector<rcu_head>(4);
  std::size_t next_head_ = 0;
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
