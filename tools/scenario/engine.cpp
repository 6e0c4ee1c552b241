// The scenario interpreter (scenario.hpp): the steps, the run engine (one OS
// thread per simulated thread, one step at a time in the scenario's order), the
// explorer model, and the expectations.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unistd.h>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "scenario.hpp"

namespace tasklife::scenario {

std::string step::describe() const {
  std::string out(info(kind).name);
  std::vector<std::string> args;
  auto add = [&](std::string_view k, const std::string& v) {
    if (!v.empty()) {
      args.push_back(fmt::format("{}={}", k, v));
    }
  };
  add("task", task);
  add("ref", ref);
  add("pid_of", pid_of);
  if (pid) {
    args.push_back(fmt::format("pid={}", *pid));
  }
  add("ns", ns);
  add("map", map);
  if (key) {
    args.push_back(fmt::format("key={}", *key));
  }
  add("elem", elem);
  add("counter", counter);
  add("parent", parent);
  add("name", name);
  if (usage) {
    args.push_back(fmt::format("usage={}", *usage));
  }
  if (rcu_users) {
    args.push_back(fmt::format("rcu_users={}", *rcu_users));
  }
  if (freed) {
    args.push_back(fmt::format("freed={}", *freed));
  }
  if (null) {
    args.push_back(fmt::format("null={}", *null));
  }
  if (!args.empty()) {
    out += "(" + fmt::format("{}", fmt::join(args, ", ")) + ")";
  }
  if (!into.empty()) {
    out += " -> " + into;
  }
  return out;
}

std::vector<variant> variants(const scenario& s) {
  std::vector<variant> out;
  for (const semantics_profile p : s.profiles) {
    for (const final_put_mode f : s.final_put) {
      variant v{p, f, std::string(to_string(p))};
      if (s.final_put.size() > 1) {
        v.label += f == final_put_mode::deferred ? ", final put deferred (v6.17+)"
                                                 : ", final put immediate (<= v6.16)";
      }
      out.push_back(std::move(v));
    }
  }
  return out;
}

bool needs_full_checks(const scenario& s) {
  return std::any_of(s.expectations.begin(), s.expectations.end(), [](const expectation& e) {
    return e.fails && e.failure == explore::failure_kind::use_after_free;
  });
}

namespace {

// The kernel keeps TASK_COMM_LEN - 1 bytes of a comm and cuts wherever that is;
// the interpreter cuts at the last whole UTF-8 character that fits, so that every
// output stays valid UTF-8.
std::string comm_of(const std::string& name) {
  return name.substr(0, utf8_prefix(name, TASK_COMM_LEN - 1));
}

// struct __tasks_kfunc_map_value of the kernel selftests: one task kptr.
struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};
using task_map = bpf_hash_map<std::int64_t, task_value>;

explore::failure_kind classify(const contract_violation& v) {
  if (v.kind == contract_kind::use_after_free) {
    return explore::failure_kind::use_after_free;
  }
  if (v.kind == contract_kind::leak) {
    return explore::failure_kind::leak;
  }
  return explore::failure_kind::contract_violation;
}

// ---- the world of one execution -----------------------------------------------------------------
class world {
 public:
  world(kernel& k, const scenario& s, const variant& v, bool exploring, recorder* rec)
      : k_(k), s_(s), v_(v), exploring_(exploring), rec_(rec) {}
  ~world() = default;
  world(const world&) = delete;
  world& operator=(const world&) = delete;

  // Namespaces, declared tasks, maps.
  void build() {
    ns_["root"] = &k_.init_pid_ns();
    for (const namespace_spec& n : s_.namespaces) {
      ns_[n.name] = &k_.create_pid_namespace(*ns_.at(n.parent.empty() ? "root" : n.parent));
    }
    for (const task_spec& t : s_.tasks) {
      step st;
      st.kind = step_kind::fork;
      st.task = t.name;
      st.parent = t.parent;
      st.comm = t.comm;
      st.ns = t.ns;
      st.thread = t.thread;
      st.autoreap = t.autoreap;
      st.new_pid_ns = t.new_pid_ns;
      st.error = t.error;
      st.pos = t.pos;
      rec_step(rec_ ? rec_->main_track() : 0, st);
    }
    for (const map_spec& m : s_.maps) {
      maps_[m.name] =
          std::make_unique<task_map>(k_, static_cast<std::uint32_t>(m.max_entries), m.name);
    }
  }

  // A step, with its record around it.
  void rec_step(unsigned track, const step& st) {
    if (exploring_ && st.kind == step_kind::expect) {
      return;  // the counters at a point differ between interleavings
    }
    if (!runs(st)) {
      return;
    }
    if (rec_ != nullptr) {
      rec_->step_begin(track, st.describe(), fmt::format("{}:{}", st.pos.file, st.pos.line));
    }
    exec(track, st);
    if (rec_ != nullptr) {
      rec_->step_end(track);
      rec_->observe(as_deterministic(k_.rcu()));
    }
  }

  // What is left at the end: teardown's own work.
  void finish() {
    // Every task the scenario did not kill dies now, children first.
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      if (killed_.count(*it) == 0) {
        step st;
        st.kind = step_kind::retire;
        st.task = *it;
        st.pos = {"(end of scenario)", 0, 0};
        rec_step(rec_ ? rec_->main_track() : 0, st);
      }
    }
    const bool record = rec_ != nullptr && !maps_.empty();
    if (record) {
      rec_->step_begin(rec_->main_track(), "the maps are destroyed (their slots released)", "");
    }
    maps_.clear();
    if (record) {
      rec_->step_end(rec_->main_track());
    }
  }

  // Runs `body` as the thread `th`: registered with the kernel's RCU, and with
  // its current task if it names one.
  template <class Fn>
  void with_identity(const thread_spec& th, Fn&& body) {
    task_struct* as = th.as.empty() ? nullptr : task_named(th.as);
    if (as != nullptr) {
      const current_task_scope scope(as);
      body();
    } else {
      const rcu_thread_registration reg(k_.rcu());
      body();
    }
  }
  // Setup and teardown: every step on the calling thread.
  void run_thread(const thread_spec& th, unsigned track) {
    with_identity(th, [&] {
      for (const step& st : th.steps) {
        rec_step(track, st);
      }
    });
  }

  std::vector<std::string>& point_failures() { return point_failures_; }
  const std::set<std::string>& killed() const { return killed_; }

 private:
  bool runs(const step& st) const {
    if (!st.profiles.empty() &&
        std::find(st.profiles.begin(), st.profiles.end(), v_.profile) == st.profiles.end()) {
      return false;
    }
    if (st.final_put && *st.final_put != v_.final_put) {
      return false;
    }
    if (!st.if_set.empty() && !is_set(st.if_set)) {
      return false;
    }
    if (!st.unless_set.empty() && is_set(st.unless_set)) {
      return false;
    }
    return true;
  }
  task_struct* var(const std::string& name) const {
    auto it = refs_.find(name);
    return it == refs_.end() ? nullptr : it->second;
  }
  // A condition's variable: a task pointer or a map element.
  bool is_set(const std::string& name) const {
    auto e = elems_.find(name);
    return e != elems_.end() ? e->second != nullptr : var(name) != nullptr;
  }
  task_struct* task_named(const std::string& name) const {
    auto it = tasks_.find(name);
    return it == tasks_.end() ? nullptr : it->second;
  }
  // The step's target: a declared task or a variable.
  task_struct* target(const step& st) const {
    return st.task.empty() ? var(st.ref) : task_named(st.task);
  }
  // May the interpreter hand `t` to the library? A freed task whose memory the
  // kernel still holds (quarantine) may: the library reports the use-after-free.
  // Memory that is gone may not: the interpreter reports it instead of touching it.
  bool usable(const task_struct* t, const step& st) {
    const bool ok = contract_checks_enabled ? k_.knows_task(t) : k_.is_allocated(t);
    if (!ok) {
      const std::string msg = fmt::format(
          "use-after-free: step {} at {}:{} would touch a freed "
          "task whose memory is gone",
          st.describe(), st.pos.file, st.pos.line);
      detail::report_contract_violation(contract_kind::use_after_free, "scenario",
                                        info(st.kind).name, {}, msg,
                                        std::source_location::current());
    }
    return ok;
  }
  pid_t pid_arg(const step& st, pid_namespace* ns) const {
    if (st.pid) {
      return static_cast<pid_t>(*st.pid);
    }
    task_struct* t = task_named(st.pid_of);
    auto it = pids_.find(st.pid_of);
    if (ns == &k_.init_pid_ns() || t == nullptr) {
      return it == pids_.end() ? 0 : it->second;
    }
    // A number in another namespace: remembered at fork for every level.
    auto lv = level_pids_.find({st.pid_of, ns});
    return lv == level_pids_.end() ? 0 : lv->second;
  }
  // The step's namespace: the root, or one a fork made. nullptr (a point failure
  // said why) when that fork failed or did not run.
  pid_namespace* ns_arg(const step& st) {
    if (st.ns.empty()) {
      return &k_.init_pid_ns();
    }
    auto it = ns_.find(st.ns);
    if (it == ns_.end()) {
      point_failure(st, fmt::format("namespace '{}' was never created: the fork that makes it "
                                    "failed or did not run",
                                    st.ns));
      return nullptr;
    }
    return it->second;
  }
  void set(const std::string& into, task_struct* t) {
    if (!into.empty()) {
      refs_[into] = t;
    }
  }
  task_value* elem(const std::string& name) const {
    auto it = elems_.find(name);
    return it == elems_.end() ? nullptr : it->second;
  }
  void point_failure(const step& st, const std::string& what) {
    point_failures_.push_back(fmt::format("{}:{}:{}: under {}: {}{}: {}", st.pos.file, st.pos.line,
                                          st.pos.column, v_.label, st.describe(),
                                          st.name.empty() ? "" : " ('" + st.name + "')", what));
  }
  // A step that can fail returned `rc` (0 or -errno): whether it is what the step
  // expects (`error`, or success), and if not a point failure saying so.
  bool as_expected(const step& st, std::string_view call, int rc) {
    if (rc == -st.error) {
      return true;
    }
    if (rc == 0) {
      point_failure(st, fmt::format("expected {} to fail with {}, it succeeded", call,
                                    errno_to_string(st.error)));
    } else {
      point_failure(
          st, fmt::format("{} failed with {} ({}){}", call, errno_to_string(rc), rc,
                          st.error != 0
                              ? fmt::format(", not {} as expected", errno_to_string(st.error))
                              : fmt::format("; error = \"{}\" expects it", errno_to_string(rc))));
    }
    return false;
  }
  void forked(const std::string& name, task_struct* t) {
    tasks_[name] = t;
    order_.push_back(name);
    pids_[name] = t->pid;
    for (const auto& [n, ns] : ns_) {
      level_pids_[{name, ns}] = task_pid_nr_ns(t, ns);
    }
    if (rec_ != nullptr) {
      rec_->name_task(t->priv.id, name, t->comm);
    }
  }

  void exec(unsigned track, const step& st) {
    switch (st.kind) {
      case step_kind::fork: {
        task_struct* parent = st.parent.empty() ? nullptr : task_named(st.parent);
        if (!st.parent.empty() && parent == nullptr) {
          point_failure(st, fmt::format("parent '{}' does not exist: its fork failed or did not "
                                        "run",
                                        st.parent));
          return;
        }
        if (parent != nullptr && !usable(parent, st)) {
          return;
        }
        clone_args a;
        const std::string comm = comm_of(st.comm.empty() ? st.task : st.comm);
        a.comm = comm.c_str();
        a.thread = st.thread;
        a.autoreap = st.autoreap;
        a.new_pid_ns = st.new_pid_ns;
        a.trace = true;
        const fork_result r = k_.fork(parent, a);
        as_expected(st, "fork", r ? 0 : r.error);
        if (!r) {
          return;
        }
        if (st.new_pid_ns) {
          ns_[st.ns] = task_active_pid_ns(r.task);
        }
        forked(st.task, r.task);
        return;
      }
      case step_kind::exit:
      case step_kind::final_switch:
      case step_kind::reap:
      case step_kind::retire: {
        task_struct* t = target(st);
        if (t == nullptr || !usable(t, st)) {
          return;
        }
        if (st.kind == step_kind::reap) {
          // wait(2) says ECHILD when there is no zombie to reap; the task then
          // lives on, and dies at the end like any other.
          const bool reaped = k_.wait_task_zombie(t);
          as_expected(st, "wait_task_zombie", reaped ? 0 : -ECHILD);
          if (reaped) {
            killed_.insert(st.task);
          }
          return;
        }
        killed_.insert(st.task);
        if (st.kind == step_kind::exit) {
          k_.do_exit(t);
        } else if (st.kind == step_kind::final_switch) {
          k_.finish_task_switch(t);
        } else {
          k_.retire(t);
        }
        return;
      }
      case step_kind::get_task_struct: {
        task_struct* t = target(st);
        if (t != nullptr && usable(t, st)) {
          set(st.into, get_task_struct(t));
        }
        return;
      }
      case step_kind::put_task_struct: {
        task_struct* t = target(st);
        if (t != nullptr && usable(t, st)) {
          put_task_struct(t);
        }
        return;
      }
      case step_kind::tryget_task_struct: {
        task_struct* t = target(st);
        set(st.into, t != nullptr && usable(t, st) ? tryget_task_struct(t) : nullptr);
        return;
      }
      case step_kind::refcount_inc_not_zero: {
        task_struct* t = target(st);
        bool ok = false;
        if (t != nullptr && usable(t, st)) {
          ok = refcount_inc_not_zero(st.counter == "usage" ? &t->usage : &t->rcu_users);
        }
        set(st.into, ok ? t : nullptr);
        return;
      }
      case step_kind::put_task_struct_rcu_user: {
        task_struct* t = target(st);
        if (t != nullptr && usable(t, st)) {
          put_task_struct_rcu_user(t);
        }
        return;
      }
      case step_kind::rcu_read_lock:
        k_.rcu().rcu_read_lock();
        if (rec_ != nullptr) {
          rec_->read_begin(track);
        }
        return;
      case step_kind::rcu_read_unlock:
        k_.rcu().rcu_read_unlock();
        if (rec_ != nullptr) {
          rec_->read_end(track);
        }
        return;
      case step_kind::bpf_rcu_read_lock:
        bpf_rcu_read_lock();
        if (rec_ != nullptr) {
          rec_->read_begin(track);
        }
        return;
      case step_kind::bpf_rcu_read_unlock:
        bpf_rcu_read_unlock();
        if (rec_ != nullptr) {
          rec_->read_end(track);
        }
        return;
      case step_kind::synchronize_rcu:
        k_.rcu().synchronize_rcu();
        return;
      case step_kind::rcu_barrier:
        k_.rcu().rcu_barrier();
        return;
      case step_kind::find_task_by_pid_ns: {
        pid_namespace* ns = ns_arg(st);
        set(st.into, ns == nullptr ? nullptr : find_task_by_pid_ns(pid_arg(st, ns), ns));
        return;
      }
      case step_kind::bpf_task_acquire: {
        task_struct* t = target(st);
        set(st.into, t != nullptr && usable(t, st) ? bpf_task_acquire(t) : nullptr);
        return;
      }
      case step_kind::bpf_task_release: {
        task_struct* t = var(st.ref);
        if (t == nullptr || usable(t, st)) {
          bpf_task_release(t);  // NULL: the profile decides (the verifier's error, or a no-op)
        }
        return;
      }
      case step_kind::bpf_task_from_pid:
        set(st.into, bpf_task_from_pid(pid_arg(st, &k_.init_pid_ns())));
        return;
      case step_kind::bpf_task_from_vpid: {
        task_struct* cur = get_current();
        pid_namespace* ns = cur != nullptr ? task_active_pid_ns(cur) : &k_.init_pid_ns();
        set(st.into, bpf_task_from_vpid(pid_arg(st, ns != nullptr ? ns : &k_.init_pid_ns())));
        return;
      }
      case step_kind::bpf_task_kptr_get: {
        task_value* e = elem(st.elem);
        set(st.into, e != nullptr ? bpf_task_kptr_get(&e->task) : nullptr);
        return;
      }
      case step_kind::map_update: {
        as_expected(
            st, "bpf_map_update_elem",
            static_cast<int>(maps_.at(st.map)->update_elem(*st.key, task_value{}, BPF_ANY)));
        return;
      }
      case step_kind::map_delete:
        maps_.at(st.map)->delete_elem(*st.key);
        return;
      case step_kind::map_lookup:
        elems_[st.into] = maps_.at(st.map)->lookup_elem(*st.key);
        return;
      case step_kind::kptr_xchg: {
        task_value* e = elem(st.elem);
        if (e == nullptr) {
          point_failure(st, "the element is NULL (map_lookup found nothing)");
          return;
        }
        task_struct* in = st.ref.empty() ? nullptr : var(st.ref);
        if (!st.ref.empty()) {
          refs_[st.ref] = nullptr;  // the reference moved into the slot
        }
        task_struct* old = bpf_kptr_xchg(&e->task, in);
        if (st.into.empty() && old != nullptr) {
          bpf_task_release(old);  // nobody keeps it: released at once
        } else {
          set(st.into, old);
        }
        return;
      }
      case step_kind::kptr_load: {
        task_value* e = elem(st.elem);
        set(st.into, e != nullptr ? e->task.get() : nullptr);
        return;
      }
      case step_kind::set: {
        task_struct*& slot = refs_[st.into];
        explore::yield(nullptr);  // shared with the other threads: a scheduling point (reads one,
                                  // writes another)
        slot = st.ref.empty() ? nullptr : var(st.ref);
        return;
      }
      case step_kind::mark:
        if (rec_ != nullptr) {
          rec_->mark(track, st.name);
        }
        return;
      case step_kind::expect:
        expect(track, st);
        return;
    }
  }

  void expect(unsigned track, const step& st) {
    if (rec_ != nullptr && !st.name.empty()) {
      rec_->mark(track, st.name, "expect");
    }
    task_struct* t = target(st);
    if (st.null) {
      if (*st.null != (t == nullptr)) {
        point_failure(st, fmt::format("expected '{}' to be {}, it is {}", st.ref,
                                      *st.null ? "NULL" : "a task", t ? "a task" : "NULL"));
      }
      if (*st.null) {
        return;
      }
    }
    if (t == nullptr) {
      point_failure(st, "no task to check (the variable is NULL)");
      return;
    }
    const bool live = k_.is_allocated(t);
    if (st.freed && *st.freed == live) {
      point_failure(st, live ? "expected the task freed, it is allocated"
                             : "expected the task allocated, it is freed");
      return;
    }
    if (!live) {
      if (st.usage || st.rcu_users || !st.comm.empty() || st.pid) {
        point_failure(st, "the task is freed: there is nothing left to check");
      }
      return;
    }
    const unsigned u = refcount_read(&t->usage);
    const unsigned r = refcount_read(&t->rcu_users);
    if (st.usage && static_cast<unsigned>(*st.usage) != u) {
      point_failure(st, fmt::format("expected usage={}, it is {}", *st.usage, u));
    }
    if (st.rcu_users && static_cast<unsigned>(*st.rcu_users) != r) {
      point_failure(st, fmt::format("expected rcu_users={}, it is {}", *st.rcu_users, r));
    }
    if (!st.comm.empty() && st.comm != t->comm) {
      point_failure(st, fmt::format("expected comm '{}', it is '{}'", st.comm, t->comm));
    }
    if (st.pid) {
      pid_namespace* ns = ns_arg(st);
      const pid_t got = ns == nullptr ? 0 : task_pid_nr_ns(t, ns);
      if (ns != nullptr && got != *st.pid) {
        point_failure(st, fmt::format("expected pid {} in {}, it is {}", *st.pid,
                                      st.ns.empty() ? "root" : st.ns, got));
      }
    }
  }

  kernel& k_;
  const scenario& s_;
  const variant& v_;
  const bool exploring_;
  recorder* rec_;
  std::map<std::string, pid_namespace*> ns_;
  std::map<std::string, task_struct*> tasks_;
  std::map<std::string, pid_t> pids_;
  std::map<std::pair<std::string, const pid_namespace*>, pid_t> level_pids_;
  std::vector<std::string> order_;
  std::set<std::string> killed_;
  std::map<std::string, task_struct*> refs_;
  std::map<std::string, task_value*> elems_;
  std::vector<std::string> point_failures_;
  // Last: destroyed first, before the kernel (a map must go before its kernel).
  std::map<std::string, std::unique_ptr<task_map>> maps_;
};

// The kernel's shutdown, recorded: on the deterministic backend the grace periods
// and callbacks it waits for are driven one by one, so that the trace shows them in
// order and the callbacks on their own track; then rcu_barrier and the leak check.
void shut_down(kernel& k, recorder* r) {
  if (r != nullptr) {
    r->step_begin(r->main_track(), "kernel shutdown: rcu_barrier, leaks reported", "");
    if (deterministic_rcu* d = as_deterministic(k.rcu())) {
      r->set_main_is_rcu(true);
      for (int round = 0; round < 10'000 && d->queued_callbacks() > 0; ++round) {
        d->start_grace_period();
        r->observe(d);
        if (!d->try_end_grace_period()) {
          break;  // a reader holds it up: rcu_barrier below reports or waits
        }
        r->observe(d);
        d->run_callbacks();
      }
      r->set_main_is_rcu(false);
    }
  }
  k.rcu().rcu_barrier();
  k.shutdown();
  if (r != nullptr) {
    r->step_end(r->main_track());
    r->observe(as_deterministic(k.rcu()));
  }
}

kernel_config base_config(const scenario& s, const variant& v) {
  kernel_config c;
  c.name = s.name;
  c.profile = v.profile;
  c.final_put = v.final_put;
  c.pid_max = s.pid_max;
  c.reserved_pids = s.reserved_pids;
  c.record_history = true;
  return c;
}

// Runs `body` registered with the kernel's RCU.
template <class Fn>
void registered(kernel& k, Fn&& body) {
  const rcu_thread_registration reg(k.rcu());
  body();
}

// ---- run: violations of one run go here ------------------------------------------------------
struct run_capture {
  std::mutex mutex;
  std::optional<explore::failure> first;
  void add(explore::failure_kind kind, std::string message) {
    const std::lock_guard lock(mutex);
    if (!first) {
      first = explore::failure{};
      first->kind = kind;
      first->message = std::move(message);
    }
  }
};
run_capture* g_capture = nullptr;  // set while a run is in progress (one at a time)
std::mutex g_run_mutex;

void capture_contract(const contract_violation& v) {
  if (g_capture != nullptr) {
    g_capture->add(classify(v), fmt::format("{} ({} at {}:{})", v.message, v.component,
                                            v.where.file_name(), v.where.line()));
  }
}
void capture_refcount(const refcount_warning& w) {
  if (g_capture != nullptr) {
    g_capture->add(explore::failure_kind::refcount_warning,
                   fmt::format("{} (at {}:{})", w.message, w.where.file_name(), w.where.line()));
  }
}

// One step at a time, in the order of the schedule; a step that waits for a
// grace period hands the turn on first.
class turnstile {
 public:
  void wait(std::size_t slot) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return turn_ == slot; });
  }
  void pass(std::size_t slot) {
    const std::lock_guard lock(mutex_);
    if (turn_ == slot) {
      ++turn_;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t turn_ = 0;
};

// The global order of the threads' steps: [run] order, then each thread to its end.
std::vector<std::vector<std::size_t>> slots_of(const scenario& s, std::string& problem) {
  std::vector<std::vector<std::size_t>> slots(s.threads.size());
  std::vector<std::size_t> next(s.threads.size(), 0);
  std::vector<std::size_t> owner;  // slot -> thread
  auto index_of = [&](const std::string& name) {
    for (std::size_t i = 0; i < s.threads.size(); ++i) {
      if (s.threads[i].name == name) {
        return i;
      }
    }
    return std::size_t{0};
  };
  for (const std::string& name : s.run_order) {
    const std::size_t t = index_of(name);
    slots[t].push_back(owner.size());
    owner.push_back(t);
    ++next[t];
  }
  for (std::size_t t = 0; t < s.threads.size(); ++t) {
    for (; next[t] < s.threads[t].steps.size(); ++next[t]) {
      slots[t].push_back(owner.size());
      owner.push_back(t);
    }
  }
  // A step that waits for a grace period ends only once every other thread's
  // section open at that moment has ended; its thread's next step must come later.
  std::vector<int> depth(s.threads.size(), 0);
  std::vector<std::size_t> pos(s.threads.size(), 0);
  for (std::size_t g = 0; g < owner.size(); ++g) {
    const std::size_t t = owner[g];
    const step& st = s.threads[t].steps[pos[t]];
    if (info(st.kind).waits && pos[t] + 1 < slots[t].size()) {
      const std::size_t mine_next = slots[t][pos[t] + 1];
      for (std::size_t u = 0; u < s.threads.size(); ++u) {
        if (u == t || depth[u] == 0) {
          continue;
        }
        // Where u's section ends.
        int d = depth[u];
        for (std::size_t i = pos[u]; i < s.threads[u].steps.size(); ++i) {
          const step_kind k = s.threads[u].steps[i].kind;
          d += (k == step_kind::rcu_read_lock || k == step_kind::bpf_rcu_read_lock) ? 1 : 0;
          d -= (k == step_kind::rcu_read_unlock || k == step_kind::bpf_rcu_read_unlock) ? 1 : 0;
          if (d == 0) {
            if (slots[u][i] > mine_next) {
              problem = fmt::format(
                  "{}:{}: the run order would never end: '{}' waits for a grace period that "
                  "thread '{}''s read-side section holds up, and that section ends only after "
                  "'{}''s next step",
                  st.pos.file, st.pos.line, s.threads[t].name, s.threads[u].name,
                  s.threads[t].name);
            }
            break;
          }
        }
      }
    }
    const step_kind k = st.kind;
    depth[t] += (k == step_kind::rcu_read_lock || k == step_kind::bpf_rcu_read_lock) ? 1 : 0;
    depth[t] -= (k == step_kind::rcu_read_unlock || k == step_kind::bpf_rcu_read_unlock) ? 1 : 0;
    ++pos[t];
  }
  return slots;
}

variant_result run_one(const scenario& s, const variant& v, const run_options& o) {
  variant_result res;
  res.v = v;
  res.how = mode::run;
  std::string problem;
  const auto slots = slots_of(s, problem);
  if (!problem.empty()) {
    res.failure = explore::failure{};
    res.failure->kind = explore::failure_kind::deadlock;
    res.failure->message = problem;
    res.trace.title = fmt::format("{} under {}", s.name, v.label);
    res.trace.outcome = "not run: " + problem;
    return res;
  }
  res.trace.title = fmt::format("{} under {}", s.name, v.label);
  std::optional<recorder> rec;
  if (o.trace) {
    rec.emplace(res.trace);
  }
  recorder* r = rec ? &*rec : nullptr;

  const std::lock_guard one_at_a_time(g_run_mutex);
  run_capture capture;
  g_capture = &capture;
  refcount_reset_warnings();
  const contract_handler old_handler = set_contract_handler(&capture_contract);
  const refcount_warning_sink old_sink = set_refcount_warning_sink(&capture_refcount);
  {
    kernel_config c = base_config(s, v);
    if (o.rcu == backend::deterministic) {
      c.rcu_backend_factory = deterministic_rcu_factory();
    }
    if (r != nullptr) {
      c.event_listener = [r](const task_event& e) { r->on_event(e); };
    }
    kernel k(c);
    {
      world w(k, s, v, false, r);
      registered(k, [&] { w.build(); });
      // Setup on the main thread.
      w.run_thread(s.setup, r ? r->main_track() : 0);
      // The threads, one OS thread each, one step at a time.
      turnstile turns;
      std::vector<unsigned> tracks;
      for (const thread_spec& th : s.threads) {
        tracks.push_back(r ? r->add_thread(th.name, th.as) : 0);
      }
      std::vector<std::thread> threads;
      for (std::size_t i = 0; i < s.threads.size(); ++i) {
        threads.emplace_back([&, i] {
          const thread_spec& th = s.threads[i];
          if (r != nullptr) {
            r->bind_thread(tracks[i], event_thread_id());
          }
          w.with_identity(th, [&] {
            for (std::size_t j = 0; j < th.steps.size(); ++j) {
              const step& st = th.steps[j];
              const std::size_t slot = slots[i][j];
              turns.wait(slot);
              if (info(st.kind).waits) {
                turns.pass(slot);
              }
              w.rec_step(tracks[i], st);
              turns.pass(slot);
            }
          });
        });
      }
      for (std::thread& t : threads) {
        t.join();
      }
      w.run_thread(s.teardown, r ? r->main_track() : 0);
      registered(k, [&] { w.finish(); });
      res.point_failures = std::move(w.point_failures());
    }
    shut_down(k, r);
  }
  set_contract_handler(old_handler);
  set_refcount_warning_sink(old_sink);
  g_capture = nullptr;
  res.failure = capture.first;
  if (o.trace) {
    conclude(res, "");
  }
  return res;
}

}  // namespace

void conclude(variant_result& res, const std::string& schedule) {
  if (res.failure) {
    // The call sites inside the interpreter say nothing to a scenario's reader:
    // " (at .../tools/scenario/x.cpp:N)" and " (task at ...)" go.
    std::string& m = res.failure->message;
    for (std::size_t at = m.find(" ("); at != std::string::npos; at = m.find(" (", at)) {
      const std::size_t end = m.find(')', at);
      const std::string_view inside =
          std::string_view(m).substr(at, end == std::string::npos ? 0 : end - at);
      if (end != std::string::npos && inside.find('(', 2) == std::string_view::npos &&
          (inside.rfind(" (at ", 0) == 0 || inside.rfind(" (task at ", 0) == 0) &&
          inside.find("tools/scenario/") != std::string_view::npos) {
        m.erase(at, end - at + 1);
      } else {
        at += 2;
      }
    }
    place_failure(res.trace, std::string(explore::to_string(res.failure->kind)),
                  res.failure->message);
    res.trace.outcome = fmt::format("fails: {}", explore::to_string(res.failure->kind));
  } else if (!res.point_failures.empty()) {
    // A step that did not do what it says (an expect, a step that failed): not clean.
    res.trace.outcome = fmt::format("fails: {} step{} not as expected", res.point_failures.size(),
                                    res.point_failures.size() == 1 ? "" : "s");
  } else {
    res.trace.outcome = "clean";
  }
  res.trace.schedule = schedule;
}

std::vector<variant_result> run(const scenario& s, const run_options& o,
                                const std::vector<variant>& which) {
  std::vector<variant_result> out;
  for (const variant& v : which) {
    out.push_back(run_one(s, v, o));
  }
  return out;
}

explore::model make_model(const scenario& s, const variant& v, trace_data* out) {
  return [&s, v, out](explore::execution& x) {
    std::optional<recorder> rec;
    if (out != nullptr) {
      *out = trace_data{};
      out->title = fmt::format("{} under {}", s.name, v.label);
      rec.emplace(*out);
    }
    recorder* r = rec ? &*rec : nullptr;
    kernel_config c = x.config(base_config(s, v));
    if (r != nullptr) {
      c.event_listener = [inner = c.event_listener, r](const task_event& e) {
        inner(e);
        r->on_event(e);
      };
    }
    kernel k(c);
    {
      world w(k, s, v, true, r);
      registered(k, [&] { w.build(); });
      w.run_thread(s.setup, r ? r->main_track() : 0);
      for (const thread_spec& th : s.threads) {
        const unsigned track = r ? r->add_thread(th.name, th.as) : 0;
        x.thread(th.name, [&w, &th, r, track] {
          if (r != nullptr) {
            r->bind_thread(track, event_thread_id());
          }
          w.with_identity(th, [&] {
            for (const step& st : th.steps) {
              w.rec_step(track, st);
            }
          });
        });
      }
      if (r != nullptr) {
        // An observer, not a check: after every step of the explorer's (a grace
        // period starting or ending among them) the trace looks at the backend.
        x.invariant("trace observer", [r, &k] {
          r->observe(as_deterministic(k.rcu()));
          return true;
        });
        r->set_main_is_rcu(true);
      }
      x.run();
      if (r != nullptr) {
        r->set_main_is_rcu(false);
      }
      w.run_thread(s.teardown, r ? r->main_track() : 0);
      registered(k, [&] { w.finish(); });
      for (const std::string& f : w.point_failures()) {
        x.check(false, f);
      }
    }
    shut_down(k, r);
  };
}

explore::options default_explore_options(const scenario& s) {
  explore::options o;
  o.preemption_bound = s.explore.preemption_bound;
  o.max_executions = s.explore.max_executions;
  o.null_paths = s.explore.null_paths;
  // The scenario's budget is its executions: a time budget would make "space
  // exhausted" depend on how loaded the machine is (`--time` still sets one).
  o.time_budget = std::chrono::hours(24);
  return o;
}

namespace {

// Why a search that did not cover the whole space stopped.
std::string why_stopped(const explore::report& rep, const explore::options& o) {
  if (rep.failure && o.stop_at_first_failure) {
    return "stopped at the first failure";
  }
  if (o.strategy != explore::strategy::dfs) {
    return fmt::format("{} samples schedules: it never proves every interleaving clean",
                       explore::to_string(o.strategy));
  }
  if (rep.exhausted) {
    return fmt::format("shard {} of {} only", o.shard, o.shards);
  }
  if (rep.wall >= o.time_budget) {
    return fmt::format("the time budget ran out ({} s)",
                       std::chrono::duration_cast<std::chrono::seconds>(o.time_budget).count());
  }
  return fmt::format("the execution budget ran out ({} executions{})", o.max_executions,
                     o.jobs > 1 ? fmt::format(", shared by {} jobs", o.jobs) : std::string());
}

}  // namespace

variant_result explore_variant(const scenario& s, const variant& v, const explore::options& o,
                               std::atomic<std::uint64_t>* executions) {
  variant_result res;
  res.v = v;
  res.how = mode::explore;
  explore::model m = make_model(s, v, nullptr);
  if (executions != nullptr) {
    m = [inner = std::move(m), executions](explore::execution& x) {
      executions->fetch_add(1, std::memory_order_relaxed);  // a statistic
      inner(x);
    };
  }
  explore::report rep = explore::explore(m, o);
  if (rep.failure) {
    // The trace is the minimised failing execution, replayed.
    const explore::report again =
        explore::replay(make_model(s, v, &res.trace), rep.failure->schedule, o);
    res.replayed = true;
    res.failure = rep.failure;
    if (again.failure && again.failure->kind == explore::failure_kind::nondeterminism) {
      res.failure = again.failure;
    }
    conclude(res, rep.failure->schedule);
  } else {
    // Clean: the trace is the search's first execution (each thread to its end,
    // in order), run once more.
    explore::options one = o;
    one.strategy = explore::strategy::dfs;
    one.preemption_bound = 0;
    one.pct_warmup = 0;
    one.max_executions = 1;
    one.jobs = 1;
    one.shard = 0;
    one.shards = 1;
    one.null_paths = false;
    const explore::report first = explore::explore(make_model(s, v, &res.trace), one);
    if (first.failure) {
      res.failure = first.failure;  // cannot differ from the search's answer, but say so if it does
    }
    conclude(res, "");
  }
  res.complete = rep.exhausted && o.strategy == explore::strategy::dfs && o.shards <= 1;
  if (!res.complete) {
    res.stopped = why_stopped(rep, o);
  }
  res.report = std::move(rep);
  return res;
}

variant_result replay_variant(const scenario& s, const variant& v, std::string_view schedule,
                              const explore::options& o) {
  variant_result res;
  res.v = v;
  res.how = mode::explore;
  res.replayed = true;
  explore::report rep = explore::replay(make_model(s, v, &res.trace), schedule, o);
  res.failure = rep.failure;
  conclude(res, std::string(schedule));
  res.report = std::move(rep);
  return res;
}

std::vector<std::string> check(const scenario& s, mode m,
                               const std::vector<variant_result>& results) {
  std::vector<std::string> out;
  for (const variant_result& r : results) {
    bool covered = false;
    for (const expectation& e : s.expectations) {
      if (e.when != m ||
          (!e.profiles.empty() &&
           std::find(e.profiles.begin(), e.profiles.end(), r.v.profile) == e.profiles.end()) ||
          (!e.final_put.empty() &&
           std::find(e.final_put.begin(), e.final_put.end(), r.v.final_put) == e.final_put.end())) {
        continue;
      }
      covered = true;
      const std::string at = fmt::format("{}:{}:{}", e.pos.file, e.pos.line, e.pos.column);
      const std::string got =
          r.failure ? fmt::format("{}: {}", explore::to_string(r.failure->kind), r.failure->message)
                    : std::string("no failure");
      if (!e.fails && r.failure) {
        out.push_back(fmt::format("{}: expected {} clean under {}, got {}", at, to_string(m),
                                  r.v.label, got));
      } else if (!e.fails && m == mode::explore && !r.complete) {
        out.push_back(
            fmt::format("{}: expected no failure in any interleaving under {}, but the "
                        "search did not cover them all: {}",
                        at, r.v.label, r.stopped));
      } else if (e.fails && !r.failure) {
        out.push_back(fmt::format(
            "{}: expected {} to fail{} under {}, got no failure", at, to_string(m),
            e.failure ? fmt::format(" ({})", explore::to_string(*e.failure)) : std::string(),
            r.v.label));
      } else if (e.fails && e.failure && r.failure->kind != *e.failure) {
        out.push_back(fmt::format("{}: expected failure {} under {}, got {}", at,
                                  explore::to_string(*e.failure), r.v.label, got));
      } else if (e.fails && !e.message.empty() &&
                 r.failure->message.find(e.message) == std::string::npos) {
        out.push_back(fmt::format("{}: expected a failure mentioning '{}' under {}, got {}", at,
                                  e.message, r.v.label, got));
      }
    }
    if (!covered && r.failure) {
      out.push_back(fmt::format("{}: no expectation for {} under {}, and it failed: {}: {}", s.file,
                                to_string(m), r.v.label, explore::to_string(r.failure->kind),
                                r.failure->message));
    }
    if (m == mode::run) {
      out.insert(out.end(), r.point_failures.begin(), r.point_failures.end());
    }
  }
  return out;
}

const builtin* find_builtin(const std::string& name_or_path) {
  const std::string_view n(name_or_path);
  if (n.find('/') != std::string_view::npos ||
      (n.size() >= 5 && n.substr(n.size() - 5) == ".toml")) {
    return nullptr;  // a path
  }
  for (const builtin& b : builtins()) {
    if (b.name == name_or_path) {
      return &b;
    }
  }
  return nullptr;
}

scenario find(const std::string& name_or_path) {
  if (const builtin* b = find_builtin(name_or_path)) {
    scenario s = parse(b->text, fmt::format("scenarios/{}.toml", b->name));
    s.builtin = true;
    return s;
  }
  if (::access(name_or_path.c_str(), F_OK) == 0) {
    return load(name_or_path);
  }
  throw parse_error({name_or_path, 0, 0},
                    "no built-in scenario and no file of that name (`tasklife list` lists the "
                    "built-in ones; a path with '/' or ending in .toml is always a file)");
}

}  // namespace tasklife::scenario
