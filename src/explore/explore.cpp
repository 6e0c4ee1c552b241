// The explorer (explore.hpp): simulated threads on fibers, the scheduler, the
// strategies, replay strings, minimisation and the timeline.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <tasklife/current.hpp>
#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/explore.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/refcount.hpp>

#include "../observer.hpp"
#include "../thread_state.hpp"
#include "fiber.hpp"

namespace tasklife {

namespace detail {
constinit thread_local sim_thread* tls_sim = nullptr;
}  // namespace detail

namespace explore {
namespace {

constexpr std::string_view kUncontrolled =
    "the model, or something it depends on that the explorer does not control (a clock, an "
    "unordered container's order, a real thread, state kept across executions), has changed";

// FNV-1a, for the schedule's signature and the event log's hash.
struct hasher {
  std::uint64_t h = 1469598103934665603ULL;
  void add(std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xffU;
      h *= 1099511628211ULL;
    }
  }
  void add(std::string_view s) noexcept {
    for (const char c : s) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ULL;
    }
    add(s.size());
  }
};

}  // namespace

std::string_view to_string(strategy s) noexcept {
  switch (s) {
    case strategy::dfs:
      return "dfs";
    case strategy::random:
      return "random";
    case strategy::pct:
      return "pct";
  }
  return "?";
}

std::string_view to_string(failure_kind k) noexcept {
  switch (k) {
    case failure_kind::use_after_free:
      return "use_after_free";
    case failure_kind::leak:
      return "leak";
    case failure_kind::contract_violation:
      return "contract_violation";
    case failure_kind::refcount_warning:
      return "refcount_warning";
    case failure_kind::verifier_violation:
      return "verifier_violation";
    case failure_kind::invariant:
      return "invariant";
    case failure_kind::deadlock:
      return "deadlock";
    case failure_kind::step_limit:
      return "step_limit";
    case failure_kind::exception:
      return "exception";
    case failure_kind::nondeterminism:
      return "nondeterminism";
    case failure_kind::usage:
      return "usage";
  }
  return "?";
}

// ---- choices ---------------------------------------------------------------------------------

namespace {

// What can happen next at a scheduling node.
enum class action_kind : std::uint8_t { thread, gp_start, gp_end, callback };

struct option {
  action_kind kind;
  unsigned index;  // the thread, or the backend
  // The object the step begins with (nullptr: conflicts with everything), and
  // whether it only reads it.
  const void* object;
  bool reads_only;
  bool preempts;  // a switch away from a thread that could have gone on
  // A key that names the option across executions (the sleep sets store keys).
  unsigned key() const noexcept {
    return kind == action_kind::thread ? index : 1000U + index * 4U + static_cast<unsigned>(kind);
  }
};

bool independent(const option& a, const option& b) noexcept {
  if (a.object == nullptr || b.object == nullptr) {
    return false;
  }
  if (a.object != b.object) {
    return true;
  }
  return a.reads_only && b.reads_only;
}

// One decision of an execution, as the search keeps it across executions.
struct node {
  bool null_path = false;         // a {real, NULL} decision, else a scheduling one
  unsigned count = 0;             // options at the node
  unsigned chosen = 0;            // the option taken
  std::vector<unsigned> keys;     // scheduling nodes: each option's key
  std::vector<unsigned> allowed;  // option indices the search may take (bound, sleep set)
  std::vector<unsigned> tried;    // option indices already explored (dfs)
  std::vector<unsigned> sleep;    // keys asleep at this node
  unsigned preemptions = 0;       // on the path before this node
  std::uint64_t events_hash = 0;  // what had happened when the node was reached
  bool split = false;             // the shard split happens here (dfs with shards)
};

// The decisions of one execution: replayed from a prefix, then made by the strategy.
// What the search knows about the last scheduling decision of this execution,
// for the reduction: its node and the options it had.
struct parent_info {
  const struct node* at = nullptr;
  const std::vector<option>* options = nullptr;
};

class chooser {
 public:
  virtual ~chooser() = default;
  // The option to take at a new node, given what the execution offers; -1: every
  // option is asleep (the rest of this execution is redundant).
  virtual unsigned choose(node& fresh, const std::vector<option>& options, parent_info parent) = 0;
};

}  // namespace

// ---- the execution ---------------------------------------------------------------------------

}  // namespace explore

namespace detail {

// Fibers are reused across executions (a stack is an mmap and a guard page; a
// new pair per thread per execution would cost more than the execution). One pool
// per OS thread, so parallel jobs never share one.
class fiber_pool {
 public:
  std::unique_ptr<fiber> take(std::size_t stack_size) {
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->first == stack_size) {
        std::unique_ptr<fiber> f = std::move(it->second);
        free_.erase(it);
        return f;
      }
    }
    return std::make_unique<fiber>(stack_size);
  }
  void give_back(std::size_t stack_size, std::unique_ptr<fiber> f) {
    if (free_.size() < 64) {
      free_.emplace_back(stack_size, std::move(f));
    }
  }

 private:
  std::vector<std::pair<std::size_t, std::unique_ptr<fiber>>> free_;
};
thread_local fiber_pool tls_fibers;

class sim_thread {
 public:
  sim_thread(explore::execution_state& exec, unsigned index, std::string name,
             std::function<void()> body, std::size_t stack_size)
      : exec_(exec),
        index_(index),
        name_(std::move(name)),
        body_(std::move(body)),
        stack_size_(stack_size),
        fiber_owner_(tls_fibers.take(stack_size)),
        fiber_(*fiber_owner_) {}
  ~sim_thread() {
    // A fiber is reusable only if its function ended (it switched away for good).
    if (finished_ || !started_) {
      tls_fibers.give_back(stack_size_, std::move(fiber_owner_));
    } else {
      fiber_owner_->abandon();  // suspended for good: its frames are never unwound
    }
  }
  sim_thread(const sim_thread&) = delete;
  sim_thread& operator=(const sim_thread&) = delete;

  explore::execution_state& exec_;
  unsigned index_;
  std::string name_;
  std::function<void()> body_;
  std::size_t stack_size_;
  std::unique_ptr<fiber> fiber_owner_;
  fiber& fiber_;
  bool started_ = false;
  bool finished_ = false;
  bool abandoned_ = false;                   // a deadlock or the step limit: never resumed
  deterministic_rcu* blocked_on_ = nullptr;  // waiting in synchronize_rcu / rcu_barrier
  // Waiting in sched_wait (explore::wait_until, a second rcu_barrier): enabled
  // again once wait_ready_(wait_arg_) holds.
  sched_ready_fn wait_ready_ = nullptr;
  const void* wait_arg_ = nullptr;
  // The announcement it is paused at.
  sched_op op_ = sched_op::yield;
  const void* object_ = nullptr;
  std::string_view what_ = "start";
  std::size_t steps_ = 0;
  // Its share of the OS thread's thread-local state, while it is not running.
  current_context ctx_{nullptr, nullptr, semantics_profile::current, false, nullptr, nullptr, {}};
  rcu_thread_state rcu_{};
  typed_thread_state typed_{};
  exception_state eh_{};
};

std::uint32_t sim_thread_number(const sim_thread& t) noexcept {
  return t.index_ + 1;
}

}  // namespace detail

namespace explore {

class execution_state {
 public:
  execution_state(const options& o, chooser& c, std::vector<node>& path)
      : opt_(o), chooser_(c), path_(path) {}
  ~execution_state() { *alive_ = nullptr; }
  execution_state(const execution_state&) = delete;
  execution_state& operator=(const execution_state&) = delete;

  // ---- what the model declares -----------------------------------------------------------
  kernel_config config(kernel_config c) {
    c.record_history = true;
    // A kernel the model keeps past this execution outlives it: every hook goes
    // through alive_ and does nothing once the execution is gone.
    c.event_listener = [alive = alive_](const task_event& e) {
      if (execution_state* x = *alive) {
        x->on_event(e);
      }
    };
    c.rcu_backend_factory = [alive = alive_]() -> std::unique_ptr<rcu_backend> {
      auto b = std::make_unique<deterministic_rcu>();
      execution_state* owner = *alive;
      if (owner == nullptr) {
        return b;  // a kernel made from a stale configuration: no explorer behind it
      }
      deterministic_rcu* raw = b.get();
      // The backend may outlive this execution (a kernel the model keeps) or die
      // inside it (a kernel a thread destroys): both hooks go through alive.
      raw->set_wait_hook([alive, raw] {
        execution_state* x = *alive;
        return x != nullptr && x->wait_hook(raw);
      });
      detail::deterministic_rcu_access::on_destroy(*raw, [alive, raw] {
        if (execution_state* x = *alive) {
          x->backend_gone(raw);
        }
      });
      owner->backends_.push_back(raw);
      return b;
    };
    return c;
  }
  void thread(std::string name, std::function<void()> body) {
    if (running_ || ran_) {
      fail(failure_kind::exception, "execution::thread() after run(): declare threads first");
      return;
    }
    if (detail::fiber::abandoned_stacks() > opt_.max_abandoned_stacks) {
      fail(failure_kind::exception,
           fmt::format("simulated thread '{}' is not started: this process already keeps {} stacks "
                       "of threads abandoned by earlier executions (a deadlock or the step limit; "
                       "options::max_abandoned_stacks is {})",
                       name, detail::fiber::abandoned_stacks(), opt_.max_abandoned_stacks));
      return;
    }
    threads_.push_back(
        std::make_unique<detail::sim_thread>(*this, static_cast<unsigned>(threads_.size()),
                                             std::move(name), std::move(body), opt_.stack_size));
  }
  void invariant(std::string name, std::function<bool()> holds) {
    invariants_.emplace_back(std::move(name), std::move(holds));
  }
  void check(bool ok, std::string_view message) {
    if (!ok) {
      fail(failure_kind::invariant, fmt::format("check failed: {}", message));
    }
  }
  void run();

  // ---- the hooks -----------------------------------------------------------------------------
  void on_event(const task_event& e) {
    if (!timeline_.empty()) {
      timeline_.back().events.push_back(e);
    }
    // Counter values past 0xffff are no counts: a saturated counter, the poison of
    // a freed task, or (the v5.4 .. v6.3 union) the low half of a callback head's
    // address, which differs between executions. Only their class is hashed.
    auto count = [](unsigned v) -> std::uint64_t {
      return v < 0x10000U ? v : (v == 0x6b6b6b6bU ? 0x6b6b6b6bU : 0xffffffffU);
    };
    events_.add(static_cast<std::uint64_t>(e.kind));
    events_.add(e.task_id);
    events_.add(count(e.usage));
    events_.add(count(e.rcu_users));
    events_.add(e.detail);
  }
  void on_contract(const contract_violation& v) {
    failure_kind kind = failure_kind::contract_violation;
    if (v.kind == contract_kind::use_after_free) {
      kind = failure_kind::use_after_free;
    } else if (v.kind == contract_kind::leak) {
      kind = failure_kind::leak;
    }
    fail(kind, fmt::format("{} ({} at {}:{})", v.message, v.component, v.where.file_name(),
                           v.where.line()));
  }
  void on_refcount(const refcount_warning& w) {
    fail(failure_kind::refcount_warning,
         fmt::format("{} (at {}:{})", w.message, w.where.file_name(), w.where.line()));
  }
  void on_verifier(const violation& v) {
    fail(failure_kind::verifier_violation,
         fmt::format("{}: {} (at {}:{})", tasklife::to_string(v.kind), v.message,
                     v.where.file_name(), v.where.line()));
  }
  // A simulated thread reached a scheduling point.
  // Counted when free-running too: a loop that never ends must not hang it.
  void count_step(detail::sim_thread& t) {
    if (++t.steps_ > opt_.max_steps) {
      fail(failure_kind::step_limit,
           fmt::format("simulated thread '{}' took more than {} steps: a loop that never ends?",
                       t.name_, opt_.max_steps));
      abandon(t);
    }
    if (t.wait_ready_ != nullptr) {
      // A scheduling point inside a wait's condition (evaluated on the thread
      // while free-running): the condition must only read.
      fail(failure_kind::exception,
           fmt::format("simulated thread '{}' reached a scheduling point inside the condition "
                       "of explore::wait_until (a condition must only read)",
                       t.name_));
    }
  }
  void point(detail::sim_thread& t, sched_op op, const void* object, std::string_view what) {
    count_step(t);
    if (free_running_) {
      return;
    }
    t.op_ = op;
    t.object_ = object;
    t.what_ = what.empty() ? to_string(op) : what;
    switch_to_scheduler(t);
  }
  // A simulated thread waits until ready(arg): it is no option of the scheduler
  // until then (enabled()), and a switch away from it is no preemption.
  void wait(detail::sim_thread& t, sched_op op, const void* object, std::string_view what,
            detail::sched_ready_fn ready, const void* arg) {
    count_step(t);
    t.wait_ready_ = ready;
    t.wait_arg_ = arg;
    t.op_ = op;
    t.object_ = object;
    t.what_ = what.empty() ? to_string(op) : what;
    if (!free_running_) {
      switch_to_scheduler(t);  // resumed once ready(arg) holds (chosen), or free-running
    }
    // Free-running (after a failure or a deadlock): round-robin until it holds.
    while (free_running_ && !ready(arg)) {
      switch_to_scheduler(t);
    }
    t.wait_ready_ = nullptr;
    t.wait_arg_ = nullptr;
  }
  // A possibly-NULL result: true if this path takes NULL.
  bool null_path(std::string_view what) {
    if (!opt_.null_paths || free_running_ || detail::tls_sim == nullptr ||
        (opt_.max_null_paths >= 0 && nulls_taken_ >= static_cast<unsigned>(opt_.max_null_paths)) ||
        (preemptions_ > 0 && !opt_.null_paths_with_preemptions)) {
      return false;
    }
    node fresh;
    fresh.null_path = true;
    fresh.count = 2;
    fresh.allowed = {0, 1};
    const unsigned c = decide(fresh, {});
    if (c == 1) {
      ++nulls_taken_;
      if (!timeline_.empty()) {
        timeline_.back().detail += fmt::format(" [{} is NULL on this path]", what);
      }
    }
    return c == 1;
  }

  // ---- results ------------------------------------------------------------------------------
  const options& opt_;
  chooser& chooser_;
  std::vector<node>& path_;
  std::size_t depth_ = 0;  // nodes passed in this execution
  std::vector<std::unique_ptr<detail::sim_thread>> threads_;
  std::vector<std::pair<std::string, std::function<bool()>>> invariants_;
  std::vector<deterministic_rcu*> backends_;  // the model's kernels' backends, while they live
  // This execution while it lives (nullptr after): what its backends' hooks reach.
  std::shared_ptr<execution_state*> alive_ = std::make_shared<execution_state*>(this);
  std::vector<step> timeline_;
  hasher events_;
  hasher signature_;  // the option counts along the path
  std::optional<failure> failure_;
  bool pruned_ = false;  // every option at some node was asleep: redundant execution
  bool diverged_ = false;
  bool running_ = false;
  bool ran_ = false;
  bool free_running_ = false;  // after a failure that leaves threads stuck: no more choices
  unsigned preemptions_ = 0;
  unsigned nulls_taken_ = 0;
  int current_ = -1;  // the thread that ran the last step
  bool last_step_rcu_ = false;
  detail::fiber main_;

 private:
  void fail(failure_kind kind, std::string message) {
    if (!failure_ && !pruned_) {
      failure f;
      f.kind = kind;
      f.message = std::move(message);
      failure_ = std::move(f);
      // On the model's own context while an exception unwinds its frame (a
      // kernel's teardown reporting the leaks of an interrupted setup): the
      // exception, once caught, is the failure to report (model_threw).
      failure_while_unwinding_ = detail::tls_sim == nullptr && std::uncaught_exceptions() > 0;
    }
  }

 public:
  // The model function threw: the failure, unless one came before the throw.
  void model_threw(std::string message) {
    if (failure_ && failure_while_unwinding_ && !pruned_) {
      failure_.reset();
    }
    fail(failure_kind::exception, std::move(message));
  }

 private:
  bool failure_while_unwinding_ = false;
  // The running simulated thread `t` stops here for good: its read-side sections
  // are ended (so that the others and the teardown can go on) and its fiber is
  // kept suspended until the execution is destroyed (fiber.hpp: abandoned).
  [[noreturn]] void abandon(detail::sim_thread& t) {
    mark_abandoned(t);
    switch_to_scheduler(t);
    std::abort();  // never resumed
  }
  void mark_abandoned(detail::sim_thread& t) {
    t.abandoned_ = true;
    thread_ended(t);
  }
  // A kernel's backend is destroyed (a kernel a thread made and dropped). Its slot
  // stays, empty, so that the RCU options of the others keep their keys. A thread
  // still waiting inside it (a synchronize_rcu or rcu_barrier of that kernel) would
  // resume in freed memory: reported, and abandoned where it waits.
  void backend_gone(deterministic_rcu* b) noexcept {
    std::replace(backends_.begin(), backends_.end(), b, static_cast<deterministic_rcu*>(nullptr));
    for (const auto& t : threads_) {
      if (t->blocked_on_ == b) {
        t->blocked_on_ = nullptr;
        fail(failure_kind::contract_violation,
             fmt::format("a kernel's RCU was destroyed while simulated thread '{}' waited in its "
                         "synchronize_rcu or rcu_barrier",
                         t->name_));
        mark_abandoned(*t);  // never resumed: its frames are inside the freed backend
      }
    }
  }
  bool wait_hook(deterministic_rcu* b) {
    detail::sim_thread* t = detail::tls_sim;
    if (t == nullptr) {
      return false;  // the main context (teardown) blocks normally
    }
    // A simulated thread never blocks the OS thread: the reader it waits for is
    // another fiber, which only the scheduler can run (also when free-running).
    t->blocked_on_ = b;
    t->op_ = sched_op::synchronize_rcu;
    t->object_ = b;
    t->what_ = "waits for a grace period";
    switch_to_scheduler(*t);
    t->blocked_on_ = nullptr;
    return true;
  }

  static void swap_state(detail::sim_thread& t) noexcept {
    std::swap(detail::tls_ctx, t.ctx_);
    detail::swap_rcu_thread_state(t.rcu_);
    detail::swap_typed_thread_state(t.typed_);
    detail::swap_exception_state(t.eh_);
  }
  void switch_to_thread(detail::sim_thread& t) {
    swap_state(t);
    detail::tls_sim = &t;
    detail::set_reader_identity(&t);
    detail::fiber::switch_to(main_, t.fiber_);
    detail::set_reader_identity(nullptr);
    detail::tls_sim = nullptr;
    swap_state(t);
  }
  void switch_to_scheduler(detail::sim_thread& t) { detail::fiber::switch_to(t.fiber_, main_); }

  static void thread_entry(void* arg) noexcept {
    auto& t = *static_cast<detail::sim_thread*>(arg);
    try {
      t.body_();
    } catch (const std::exception& e) {
      t.exec_.fail(failure_kind::exception,
                   fmt::format("simulated thread '{}' threw: {}", t.name_, e.what()));
    } catch (...) {
      t.exec_.fail(failure_kind::exception, fmt::format("simulated thread '{}' threw", t.name_));
    }
    t.finished_ = true;
    t.exec_.thread_ended(t);
    detail::fiber::finish_to(t.fiber_, t.exec_.main_);
  }
  void thread_ended(detail::sim_thread& t) {
    // A thread that ends inside a read-side section (or still registered) would
    // hold every later grace period up: reported, and its sections ended.
    for (deterministic_rcu* b : backends_) {
      if (b != nullptr) {
        detail::deterministic_rcu_access::reader_gone(
            *b, &t, fmt::format("simulated thread '{}' ends", t.name_));
      }
    }
  }

  bool enabled(const detail::sim_thread& t) const {
    if (t.finished_ || t.abandoned_) {
      return false;
    }
    if (t.blocked_on_ != nullptr) {
      return t.blocked_on_->can_end_grace_period() || !t.blocked_on_->grace_period_in_progress();
    }
    if (t.wait_ready_ != nullptr) {
      return t.wait_ready_(t.wait_arg_);
    }
    return true;
  }

  // The object a thread's next step begins with, for the reduction; nullptr (it
  // commutes with nothing) before it started and for steps that reach beyond it.
  static const void* thread_object(const detail::sim_thread& t) {
    if (!t.started_ || info(t.op_).reaches_beyond) {
      return nullptr;
    }
    return t.object_;
  }

  std::vector<option> options_now() const {
    std::vector<option> out;
    const bool current_enabled =
        current_ >= 0 && enabled(*threads_[static_cast<std::size_t>(current_)]);
    // The running thread first: "go on" is option 0 when it can.
    if (current_enabled) {
      const auto& t = *threads_[static_cast<std::size_t>(current_)];
      out.push_back(option{action_kind::thread, t.index_, thread_object(t),
                           t.started_ && info(t.op_).reads_only, false});
    }
    for (const auto& tp : threads_) {
      const auto& t = *tp;
      if (static_cast<int>(t.index_) == current_ || !enabled(t)) {
        continue;
      }
      out.push_back(option{action_kind::thread, t.index_, thread_object(t),
                           t.started_ && info(t.op_).reads_only, current_enabled});
    }
    // The RCU machinery is one more "thread": stepping in while the running thread
    // could go on is a preemption, a run of RCU steps counts once.
    const bool rcu_preempts = current_enabled && !last_step_rcu_;
    for (unsigned b = 0; b < backends_.size(); ++b) {
      if (backends_[b] == nullptr) {
        continue;  // destroyed (backend_gone)
      }
      deterministic_rcu& r = *backends_[b];
      if (!r.grace_period_in_progress() && r.callbacks_need_grace_period()) {
        out.push_back(option{action_kind::gp_start, b, &r, false, rcu_preempts});
      }
      if (r.can_end_grace_period()) {
        out.push_back(option{action_kind::gp_end, b, &r, false, rcu_preempts});
      }
      if (r.ready_callbacks() > 0) {
        out.push_back(option{action_kind::callback, b, nullptr, false, rcu_preempts});
      }
    }
    return out;
  }

  // Makes one decision: replayed from the path, or new.
  unsigned decide(node& fresh, const std::vector<option>& opts) {
    signature_.add(fresh.count);
    signature_.add(fresh.null_path ? 1U : 0U);
    fresh.preemptions = preemptions_;
    fresh.events_hash = events_.h;
    unsigned c = 0;
    if (depth_ < path_.size()) {
      node& old = path_[depth_];
      const bool mismatch = replaying_
                                ? old.chosen >= fresh.count
                                : (old.count != fresh.count || old.null_path != fresh.null_path ||
                                   old.events_hash != fresh.events_hash);
      if (mismatch) {
        diverged_ = true;
        fail(failure_kind::nondeterminism,
             replaying_
                 ? fmt::format("the schedule does not match the model: decision {} takes option {} "
                               "of {}; {}",
                               depth_, old.chosen, fresh.count, kUncontrolled)
                 : fmt::format(
                       "decision {} differs from the last execution that reached it ({} options "
                       "now, {} then; event hash {:016x} now, {:016x} then): something the "
                       "explorer does not control (a clock, an unordered container, a real "
                       "thread, state kept across executions) changed what happened",
                       depth_, fresh.count, old.count, fresh.events_hash, old.events_hash));
        free_running_ = true;
        c = 0;
      } else {
        c = old.chosen;
        if (replaying_) {
          old.count = fresh.count;
          old.null_path = fresh.null_path;
        }
      }
      ++depth_;
      return finish_decision(c, opts, depth_ - 1);
    }
    if (replaying_) {
      fail(failure_kind::nondeterminism,
           fmt::format("the schedule ends after {} decisions but the model makes more; {}", depth_,
                       kUncontrolled));
      replaying_ = false;
      free_running_ = true;
      ++depth_;
      return 0;
    }
    // The parent is looked up now: path_ may have grown (and moved) since.
    const parent_info parent{parent_index_ < path_.size() ? &path_[parent_index_] : nullptr,
                             parent_index_ < path_.size() ? &parent_opts_ : nullptr};
    c = chooser_.choose(fresh, opts, parent);
    if (c == static_cast<unsigned>(-1)) {  // every option asleep: redundant from here on
      pruned_ = true;
      free_running_ = true;
      ++depth_;
      return 0;
    }
    fresh.chosen = c;
    path_.push_back(std::move(fresh));
    ++depth_;
    return finish_decision(c, opts, path_.size() - 1);
  }
  unsigned finish_decision(unsigned c, const std::vector<option>& opts, std::size_t index) {
    if (path_[index].null_path) {
      return c;
    }
    if (c < opts.size() && opts[c].preempts) {
      ++preemptions_;
    }
    parent_opts_ = opts;
    parent_index_ = index;
    return c;
  }

  // The last scheduling decision of this execution (an index: path_ grows).
  std::size_t parent_index_ = static_cast<std::size_t>(-1);
  std::vector<option> parent_opts_;

 public:
  bool replaying_ = false;

 private:
  void run_step(const option& o);
  void check_invariants();
  void free_run();
};

void execution_state::run() {
  if (ran_) {
    fail(failure_kind::exception, "execution::run() called twice");
    return;
  }
  ran_ = true;
  running_ = true;
  // Every thread's prologue (up to its first scheduling point) runs now, in
  // order, without a decision: before its first announcement a thread touches
  // nothing the others can see through tasklife, so the order of prologues
  // cannot matter, and a search that began with "who starts first" would only
  // multiply the schedules.
  for (const auto& t : threads_) {
    timeline_.push_back(step{timeline_.size(), t->name_, "start", "", false, {}});
    t->started_ = true;
    t->fiber_.start(&thread_entry, t.get());
    current_ = static_cast<int>(t->index_);
    switch_to_thread(*t);
  }
  current_ = -1;
  for (;;) {
    const std::vector<option> opts = options_now();
    if (opts.empty()) {
      break;
    }
    unsigned c = 0;
    if (free_running_ || opts.size() == 1) {
      c = 0;
      if (!free_running_ && opts.size() == 1) {
        // A forced step is no decision; still counted for the signature.
        signature_.add(1);
      }
    } else {
      node fresh;
      fresh.count = static_cast<unsigned>(opts.size());
      for (const option& o : opts) {
        fresh.keys.push_back(o.key());
      }
      c = decide(fresh, opts);
    }
    run_step(opts[c]);
    if (!free_running_) {
      check_invariants();
    }
  }
  const bool stuck = std::any_of(threads_.begin(), threads_.end(),
                                 [](const auto& t) { return !t->finished_ && !t->abandoned_; });
  if (stuck) {
    std::string who;
    for (const auto& t : threads_) {
      if (!t->finished_ && !t->abandoned_) {
        who += fmt::format("{}'{}' ({})", who.empty() ? "" : ", ", t->name_, t->what_);
      }
    }
    fail(failure_kind::deadlock,
         fmt::format("simulated threads are left that can never run again: {}", who));
    free_run();
  }
  running_ = false;
  if (!free_running_) {
    check_invariants();
  }
}

void execution_state::run_step(const option& o) {
  step s;
  s.index = timeline_.size();
  s.preemption = o.preempts;
  last_step_rcu_ = o.kind != action_kind::thread;
  switch (o.kind) {
    case action_kind::thread: {
      detail::sim_thread& t = *threads_[o.index];
      s.thread = t.name_;
      s.action = t.started_ ? std::string(to_string(t.op_)) : "start";
      s.detail = t.started_ ? std::string(t.what_) : "";
      timeline_.push_back(std::move(s));
      events_.add(o.index);
      current_ = static_cast<int>(o.index);
      if (!t.started_) {
        t.started_ = true;
        t.fiber_.start(&thread_entry, &t);
      }
      switch_to_thread(t);
      return;
    }
    case action_kind::gp_start:
    case action_kind::gp_end:
    case action_kind::callback: {
      deterministic_rcu& b = *backends_[o.index];
      s.thread = "rcu";
      if (o.kind == action_kind::callback) {
        s.action = "callback";
        s.detail = fmt::format("rcu {} runs its oldest ready callback", o.index);
      } else {
        const bool start = o.kind == action_kind::gp_start;
        s.action = start ? "gp_start" : "gp_end";
        s.detail = fmt::format("grace period {} of rcu {} {}", b.completed_grace_periods() + 1,
                               o.index, start ? "starts" : "ends");
      }
      timeline_.push_back(std::move(s));
      if (o.kind == action_kind::gp_start) {
        b.start_grace_period();
      } else if (o.kind == action_kind::gp_end) {
        b.try_end_grace_period();
      } else {
        b.run_one_callback();
      }
      break;
    }
  }
  events_.add(1000U + static_cast<unsigned>(o.kind));
}

void execution_state::check_invariants() {
  for (const auto& [name, holds] : invariants_) {
    bool ok = false;
    std::string why;
    try {
      ok = holds();
    } catch (const std::exception& e) {
      why = fmt::format(" (it threw: {})", e.what());
    } catch (...) {
      why = " (it threw)";
    }
    if (!ok) {
      fail(failure_kind::invariant, fmt::format("invariant '{}' does not hold after step {}{}",
                                                name, timeline_.size(), why));
    }
  }
}

void execution_state::free_run() {
  // Round-robin without decisions until every thread has ended, so that what they
  // hold (read sections, scopes) is released before the model's teardown.
  free_running_ = true;
  for (int round = 0; round < 1000; ++round) {
    bool any = false;
    for (const auto& t : threads_) {
      if (!t->finished_ && !t->abandoned_) {
        any = true;
        if (!t->started_) {
          t->started_ = true;
          t->fiber_.start(&thread_entry, t.get());
        }
        switch_to_thread(*t);
      }
    }
    if (!any) {
      return;
    }
    for (deterministic_rcu* b : backends_) {
      if (b != nullptr) {
        b->advance_grace_period();
        b->run_callbacks();
      }
    }
  }
  // Still stuck (each waits for another): abandoned where they are. The failure
  // (the deadlock) is reported with its schedule like any other.
  for (const auto& t : threads_) {
    if (!t->finished_ && !t->abandoned_) {
      mark_abandoned(*t);
    }
  }
}

// ---- strategies --------------------------------------------------------------------------------

namespace {

// Whether a bounded search on this thread left any option out because of the
// bound: if not, a higher bound would explore nothing new.
thread_local bool tls_bound_cut = false;

// The options a node may take: within the preemption bound, and not asleep.
void restrict(node& fresh, const std::vector<option>& opts, int bound, bool reduction,
              std::uint64_t& pruned) {
  fresh.allowed.clear();
  for (unsigned i = 0; i < opts.size(); ++i) {
    if (bound >= 0 && opts[i].preempts && fresh.preemptions >= static_cast<unsigned>(bound)) {
      tls_bound_cut = true;
      continue;
    }
    if (reduction &&
        std::find(fresh.sleep.begin(), fresh.sleep.end(), opts[i].key()) != fresh.sleep.end()) {
      ++pruned;
      continue;
    }
    fresh.allowed.push_back(i);
  }
}

// sleep(child) = { u in sleep(parent) + tried-before(parent) : u independent of
// the parent's chosen step }, with "independent" judged on the options as they
// were at the parent (a thread that did not move is still paused at the same
// operation), and only for options still offered now.
std::vector<unsigned> child_sleep(parent_info parent, const std::vector<option>& now) {
  std::vector<unsigned> out;
  if (parent.at == nullptr || parent.options == nullptr) {
    return out;
  }
  const std::vector<option>& then = *parent.options;
  if (parent.at->chosen >= then.size()) {
    return out;
  }
  const option& taken = then[parent.at->chosen];
  std::vector<unsigned> candidates = parent.at->sleep;
  for (unsigned i : parent.at->tried) {
    if (i != parent.at->chosen && i < parent.at->keys.size()) {
      candidates.push_back(parent.at->keys[i]);
    }
  }
  for (unsigned key : candidates) {
    const auto p =
        std::find_if(then.begin(), then.end(), [key](const option& o) { return o.key() == key; });
    const auto n =
        std::find_if(now.begin(), now.end(), [key](const option& o) { return o.key() == key; });
    if (p != then.end() && n != now.end() && independent(*p, taken) &&
        std::find(out.begin(), out.end(), key) == out.end()) {
      out.push_back(key);
    }
  }
  return out;
}

class dfs_chooser final : public chooser {
 public:
  dfs_chooser(const options& o, std::uint64_t& pruned, const std::vector<node>& path)
      : opt_(o), pruned_(pruned), path_(path) {}

  unsigned choose(node& fresh, const std::vector<option>& opts, parent_info parent) override {
    if (fresh.null_path) {
      fresh.tried = {0};
      return 0;
    }
    // Sleep sets are sound for the unbounded search only: under a preemption
    // bound the schedule a sleeping step stands for may need more preemptions
    // than the bound allows, and be cut (Coons, Musuvathi and McKinley, OOPSLA
    // 2013). Bounded searches therefore explore every order.
    const bool reduce = opt_.reduction && opt_.preemption_bound < 0;
    if (reduce) {
      fresh.sleep = child_sleep(parent, opts);
    }
    restrict(fresh, opts, opt_.preemption_bound, reduce, pruned_);
    if (!shard_filter(fresh)) {
      return static_cast<unsigned>(-1);
    }
    if (fresh.allowed.empty()) {
      return static_cast<unsigned>(-1);
    }
    fresh.tried = {fresh.allowed.front()};
    return fresh.allowed.front();
  }

  // Sharding: at the split_depth-th branching node of a path, only the options
  // this shard owns stay allowed; above it every shard explores (the prefixes are
  // few), below it only the owner. An execution that never reaches the split is
  // shard 0's.
  static constexpr unsigned split_depth = 2;

 private:
  bool shard_filter(node& fresh) {
    if (opt_.shards <= 1 || fresh.allowed.size() < 2) {
      return true;
    }
    unsigned branching = 0;
    hasher prefix;
    for (const node& n : path_) {
      if (n.split) {
        return true;  // the split is above: this subtree is already this shard's
      }
      branching += n.allowed.size() > 1 ? 1U : 0U;
      prefix.add(n.chosen);
    }
    if (branching + 1 < split_depth) {
      return true;
    }
    fresh.split = true;
    std::vector<unsigned> mine;
    for (unsigned i : fresh.allowed) {
      if ((prefix.h + i) % opt_.shards == opt_.shard) {
        mine.push_back(i);
      }
    }
    fresh.allowed = std::move(mine);
    return !fresh.allowed.empty();
  }

  const options& opt_;
  std::uint64_t& pruned_;
  const std::vector<node>& path_;
};

class random_chooser final : public chooser {
 public:
  random_chooser(const options& o, std::uint64_t seed) : opt_(o), rng_(seed) {}
  unsigned choose(node& fresh, const std::vector<option>& opts, parent_info) override {
    if (fresh.null_path) {
      return static_cast<unsigned>(rng_() % 2U);
    }
    std::uint64_t ignored = 0;
    restrict(fresh, opts, opt_.preemption_bound, false, ignored);
    if (fresh.allowed.empty()) {
      return 0;
    }
    return fresh.allowed[rng_() % fresh.allowed.size()];
  }

 private:
  const options& opt_;
  std::mt19937_64 rng_;
};

// PCT (Burckhardt et al., ASPLOS 2010): threads get distinct random priorities;
// the highest-priority enabled one runs; at d-1 random steps the running thread
// drops to a priority below all others. The RCU machinery is one more "thread".
class pct_chooser final : public chooser {
 public:
  pct_chooser(const options& o, std::uint64_t seed, std::size_t expected_steps)
      : opt_(o), rng_(seed) {
    const std::size_t k = std::max<std::size_t>(expected_steps, 1);
    for (unsigned i = 1; i < std::max(opt_.pct_depth, 1U); ++i) {
      change_points_.push_back(static_cast<std::size_t>(rng_() % k));
    }
  }
  unsigned choose(node& fresh, const std::vector<option>& opts, parent_info) override {
    if (fresh.null_path) {
      return static_cast<unsigned>(rng_() % 2U);
    }
    ++steps_;
    auto priority_of = [this](unsigned key) -> std::uint64_t {
      auto it = std::find_if(priorities_.begin(), priorities_.end(),
                             [key](const auto& p) { return p.first == key; });
      if (it == priorities_.end()) {
        priorities_.emplace_back(key, 1000 + rng_() % 1'000'000);
        return priorities_.back().second;
      }
      return it->second;
    };
    unsigned best = 0;
    std::uint64_t best_priority = 0;
    for (unsigned i = 0; i < opts.size(); ++i) {
      const unsigned key = opts[i].kind == action_kind::thread ? opts[i].key() : 999U;
      const std::uint64_t p = priority_of(key);
      if (p > best_priority) {
        best_priority = p;
        best = i;
      }
    }
    for (std::size_t c = 0; c < change_points_.size(); ++c) {
      if (change_points_[c] == steps_) {
        const unsigned key = opts[best].kind == action_kind::thread ? opts[best].key() : 999U;
        for (auto& [k, p] : priorities_) {
          if (k == key) {
            p = c;  // below every initial priority
          }
        }
      }
    }
    return best;
  }

 private:
  const options& opt_;
  std::mt19937_64 rng_;
  std::vector<std::size_t> change_points_;
  std::vector<std::pair<unsigned, std::uint64_t>> priorities_;
  std::size_t steps_ = 0;
};

// ---- replay strings ----------------------------------------------------------------------------
//
// "tl1-<signature>-<events>-<choices>": the hash of the option counts along the
// path, the hash of what happened, and one base-36 digit per decision (runs of a
// digit written as digit + "*" + count + "."). The hashes let a replay tell that
// the model no longer matches the schedule.

constexpr std::string_view kDigits = "0123456789abcdefghijklmnopqrstuvwxyz";

std::string encode_choices(const std::vector<node>& path) {
  std::string out;
  for (std::size_t i = 0; i < path.size();) {
    std::size_t j = i;
    while (j < path.size() && path[j].chosen == path[i].chosen) {
      ++j;
    }
    // One base-36 digit, or {n} for an option past the 36th (a node with many threads).
    const std::string d = path[i].chosen < kDigits.size() ? std::string(1, kDigits[path[i].chosen])
                                                          : fmt::format("{{{}}}", path[i].chosen);
    if (j - i > 3) {
      out += fmt::format("{}*{}.", d, j - i);
    } else {
      for (std::size_t k = i; k < j; ++k) {
        out += d;
      }
    }
    i = j;
  }
  return out;
}

std::optional<std::vector<unsigned>> decode_choices(std::string_view s) {
  std::vector<unsigned> out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    std::size_t d = kDigits.find(s[i]);
    if (s[i] == '{') {  // {n}: an option past the 36th
      const auto close = s.find('}', i + 1);
      if (close == std::string_view::npos || close == i + 1 || close - i > 8) {
        return std::nullopt;
      }
      d = 0;
      for (std::size_t k = i + 1; k < close; ++k) {
        if (s[k] < '0' || s[k] > '9') {
          return std::nullopt;
        }
        d = d * 10 + static_cast<std::size_t>(s[k] - '0');
      }
      i = close;
    } else if (d == std::string_view::npos) {
      return std::nullopt;
    }
    if (i + 1 < s.size() && s[i + 1] == '*') {
      const auto dot = s.find('.', i + 2);
      if (dot == std::string_view::npos || dot == i + 2 || dot - i > 9) {
        return std::nullopt;
      }
      std::size_t n = 0;
      for (std::size_t k = i + 2; k < dot; ++k) {
        if (s[k] < '0' || s[k] > '9') {
          return std::nullopt;
        }
        n = n * 10 + static_cast<std::size_t>(s[k] - '0');
      }
      if (n > 10'000'000) {
        return std::nullopt;
      }
      out.insert(out.end(), n, static_cast<unsigned>(d));
      i = dot;
    } else {
      out.push_back(static_cast<unsigned>(d));
    }
  }
  return out;
}

// The NULL-path options the decisions depend on, after '~': "0" (none), or "n",
// the most NULLs on a path ("x": any number), and "p" if NULL paths are explored
// under preemptions too. A replay takes them from the string.
std::string null_path_options(const options& o) {
  if (!o.null_paths) {
    return "0";
  }
  return fmt::format("n{}{}", o.max_null_paths < 0 ? "x" : std::to_string(o.max_null_paths),
                     o.null_paths_with_preemptions ? "p" : "");
}
bool parse_null_path_options(std::string_view s, options& o) {
  if (s == "0") {
    o.null_paths = false;
    return true;
  }
  if (s.size() < 2 || s[0] != 'n') {
    return false;
  }
  s.remove_prefix(1);
  o.null_paths_with_preemptions = !s.empty() && s.back() == 'p';
  if (o.null_paths_with_preemptions) {
    s.remove_suffix(1);
  }
  if (s == "x") {
    o.max_null_paths = -1;
  } else {
    if (s.empty() || s.size() > 6) {
      return false;
    }
    int n = 0;
    for (const char c : s) {
      if (c < '0' || c > '9') {
        return false;
      }
      n = n * 10 + (c - '0');
    }
    o.max_null_paths = n;
  }
  o.null_paths = true;
  return true;
}

std::string schedule_string(const execution_state& x) {
  return fmt::format("tl1-{:016x}-{:016x}-{}~{}", x.signature_.h, x.events_.h,
                     encode_choices(x.path_), null_path_options(x.opt_));
}

}  // namespace

// ---- one execution
// -------------------------------------------------------------------------------

namespace {

struct observer_scope {
  detail::thread_observer observer;
  const detail::thread_observer* previous;
  explicit observer_scope(execution_state& x)
      : observer{
            &x,
            [](void* c, const contract_violation& v) {
              static_cast<execution_state*>(c)->on_contract(v);
            },
            [](void* c, const refcount_warning& w) {
              static_cast<execution_state*>(c)->on_refcount(w);
            },
            [](void* c, const violation& v) { static_cast<execution_state*>(c)->on_verifier(v); }},
        previous(std::exchange(detail::tls_observer, &observer)) {}
  ~observer_scope() { detail::tls_observer = previous; }
  observer_scope(const observer_scope&) = delete;
  observer_scope& operator=(const observer_scope&) = delete;
};

struct execution_result {
  std::optional<explore::failure> failure;
  bool pruned = false;
  bool passed_split = false;
  std::size_t steps = 0;
  std::string schedule;
};

// ---- the stall watch -------------------------------------------------------------------------
//
// A simulated thread that blocks the OS thread (a mutex of its own held across a
// scheduling point, a condition variable, a real thread, I/O) stops every other
// one, and no scheduling point comes to undo it: without a watch the process
// would hang in silence. The watch is a thread of its own that wakes now and then;
// when no execution of its exploration has begun for options::stall_timeout it
// prints what it knows and aborts, the one way out of a frame that cannot be
// unwound.
class stall_watch {
 public:
  explicit stall_watch(std::chrono::milliseconds timeout) : timeout_(timeout), parent_(tls_watch) {
    if (timeout_.count() > 0) {
      thread_ = std::thread([this] { watch(); });
    }
    tls_watch = this;  // once constructed (std::thread may throw)
  }
  ~stall_watch() {
    if (thread_.joinable()) {
      {
        const detail::lock_guard lock(mutex_);
        done_ = true;
      }
      wake_.notify_one();
      thread_.join();
    }
    tls_watch = parent_;
  }
  stall_watch(const stall_watch&) = delete;
  stall_watch& operator=(const stall_watch&) = delete;

  // An execution begins on this OS thread: progress for this watch and those it
  // is nested in (an exploration inside a model).
  static void progress() noexcept {
    for (stall_watch* w = tls_watch; w != nullptr; w = w->parent_) {
      // Relaxed: a count that moves is all the watch reads; no data rides on it.
      w->executions_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // A parallel job's thread works for the watch of the thread that started it.
  struct adopt {
    explicit adopt(stall_watch* w) noexcept : previous(std::exchange(tls_watch, w)) {}
    ~adopt() { tls_watch = previous; }
    adopt(const adopt&) = delete;
    adopt& operator=(const adopt&) = delete;
    stall_watch* previous;
  };
  static stall_watch* current() noexcept { return tls_watch; }

 private:
  void watch() {
    using steady = std::chrono::steady_clock;
    const detail::lock_guard lock(mutex_);
    std::uint64_t seen = executions_.load(std::memory_order_relaxed);
    auto since = steady::now();
    const auto tick = std::max(std::chrono::milliseconds(10), timeout_ / 8);
    auto woke = steady::now();
    while (!done_) {
      wake_.wait_for(mutex_, tick);  // unlocks and relocks mutex_ itself
      const std::uint64_t now = executions_.load(std::memory_order_relaxed);
      const auto late = steady::now() - woke;
      woke = steady::now();
      if (now != seen || late > 4 * tick) {
        // Progress, or a wake-up far later than asked: the process was stopped
        // (a debugger, SIGSTOP, a suspended VM), and that time is not the model's.
        seen = now;
        since = steady::now();
      } else if (!done_ && steady::now() - since >= timeout_) {
        std::fputs(fmt::format("tasklife::explore: no execution has begun for {} ms ({} so far): "
                               "a simulated thread seems blocked outside tasklife (a mutex or "
                               "condition variable of its own held across a scheduling point, a "
                               "real thread, I/O) or runs on without reaching a scheduling "
                               "point. The explorer cannot unwind it: the process aborts. "
                               "options::stall_timeout sets the wait (0: wait forever).\n",
                               timeout_.count(), now)
                       .c_str(),
                   stderr);
        std::abort();
      }
    }
  }

  static thread_local stall_watch* tls_watch;
  std::chrono::milliseconds timeout_;
  stall_watch* parent_;
  std::atomic<std::uint64_t> executions_{0};
  detail::mutex mutex_;
  std::condition_variable_any wake_;
  bool done_ TASKLIFE_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};
thread_local stall_watch* stall_watch::tls_watch = nullptr;

execution_result run_once(const model& m, const options& o, chooser& c, std::vector<node>& path,
                          bool replaying = false) {
  stall_watch::progress();
  execution_state x(o, c, path);
  x.replaying_ = replaying;
  {
    const observer_scope observe(x);
    execution api(x);
    try {
      m(api);
    } catch (const std::exception& e) {
      x.model_threw(fmt::format("the model threw: {}", e.what()));
    } catch (...) {
      x.model_threw("the model threw");
    }
    if (!x.ran_) {
      x.check(false, "the model never called execution::run()");
    }
  }
  // Decisions recorded past the end of this execution belong to an earlier one.
  if (path.size() > x.depth_) {
    path.resize(x.depth_);
  }
  // The verdict is part of what happened: a failing schedule replayed on a model
  // that no longer fails there does not match (replay).
  if (x.failure_ && !x.pruned_) {
    x.events_.add(2000U + static_cast<unsigned>(x.failure_->kind));
  }
  execution_result r;
  r.pruned = x.pruned_;
  r.passed_split = std::any_of(path.begin(), path.end(), [](const node& n) { return n.split; });
  r.steps = x.timeline_.size();
  r.schedule = schedule_string(x);
  if (x.failure_ && !x.pruned_) {
    failure f = std::move(*x.failure_);
    f.schedule = r.schedule;
    f.timeline = std::move(x.timeline_);
    f.preemptions = x.preemptions_;
    f.steps = f.timeline.size();
    r.failure = std::move(f);
  }
  return r;
}

// DFS backtracking: the deepest node with an allowed option not yet tried.
bool backtrack(std::vector<node>& path) {
  while (!path.empty()) {
    node& n = path.back();
    for (unsigned i : n.allowed) {
      if (std::find(n.tried.begin(), n.tried.end(), i) == n.tried.end()) {
        n.tried.push_back(i);
        n.chosen = i;
        return true;
      }
    }
    if (n.null_path && n.tried.size() < 2) {
      n.tried.push_back(1);
      n.chosen = 1;
      return true;
    }
    path.pop_back();
  }
  return false;
}

}  // namespace

// ---- the search --------------------------------------------------------------------------------

namespace {

using clock = std::chrono::steady_clock;

struct search_limits {
  std::uint64_t max_executions;
  clock::time_point deadline;
  // Parallel jobs: set by the job that found a failure it stops at, read by all.
  std::atomic<bool>* stop = nullptr;
};

// replay() without a stall watch of its own: what explore() calls inside its watch.
report replay_once(const model& m, std::string_view schedule, const options& o);

// A report of a usage failure: nothing was run.
report usage_report(std::string message, std::string_view schedule) {
  report r;
  failure f;
  f.kind = failure_kind::usage;
  f.message = std::move(message);
  f.schedule = std::string(schedule);
  r.failure = std::move(f);
  r.failures = 1;
  r.stopped = stop_reason::usage;
  return r;
}

// What is wrong with the options, if anything: each names its field; and a call
// from a simulated thread (its thread-local state is the outer execution's).
std::optional<std::string> invalid_options(const options& o) {
  if (detail::tls_sim != nullptr) {
    return "explore() or replay() called from a simulated thread: explore a model from the "
           "model's own context (its setup) or from outside, never from inside a thread";
  }
  if (o.shards == 0) {
    return "invalid options: shards is 0 (1 explores the whole search)";
  }
  if (o.shard >= o.shards) {
    return fmt::format("invalid options: shard {} of {} (shards are numbered 0 to {})", o.shard,
                       o.shards, o.shards - 1);
  }
  if (o.jobs == 0) {
    return "invalid options: jobs is 0 (1 explores on the calling thread)";
  }
  if (o.stack_size < options::min_stack_size || o.stack_size > options::max_stack_size) {
    return fmt::format(
        "invalid options: stack_size {} is not between min_stack_size ({}) and "
        "max_stack_size ({} bytes)",
        o.stack_size, options::min_stack_size, options::max_stack_size);
  }
  if (o.preemption_bound < -1) {
    return fmt::format("invalid options: preemption_bound {} (-1 is unbounded)",
                       o.preemption_bound);
  }
  if (o.max_null_paths < -1) {
    return fmt::format("invalid options: max_null_paths {} (-1 is any number)", o.max_null_paths);
  }
  if (o.time_budget.count() <= 0) {
    return fmt::format("invalid options: time_budget {} ms explores nothing",
                       o.time_budget.count());
  }
  if (o.max_executions == 0) {
    return "invalid options: max_executions 0 explores nothing";
  }
  if (o.pct_depth == 0) {
    return "invalid options: pct_depth 0 (1 or more)";
  }
  return std::nullopt;
}

// start + budget, saturated (milliseconds::max() is a budget, not an overflow).
clock::time_point deadline_after(clock::time_point start, std::chrono::milliseconds budget) {
  const auto room =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock::time_point::max() - start);
  return budget >= room ? clock::time_point::max()
                        : start + std::chrono::duration_cast<clock::duration>(budget);
}

bool better(const failure& a, const failure& b) {
  return a.preemptions != b.preemptions ? a.preemptions < b.preemptions : a.steps < b.steps;
}

// One strategy over one shard, on this thread. `accept` sees every failing
// execution and says whether to stop.
report search(const model& m, const options& o, const search_limits& limits,
              const std::function<bool(const failure&)>& accept, std::string* first_out = nullptr) {
  report r;
  const auto start = clock::now();
  std::vector<node> path;
  std::string first_schedule;
  // random and pct: stop once 64 executions in a row brought no schedule not seen
  // before (a model with little to choose has been covered).
  std::unordered_set<std::string> seen;
  unsigned stale = 0;
  std::uint64_t pruned_options = 0;
  std::uint64_t pruned_executions = 0;
  std::size_t expected_steps = 0;
  for (;;) {
    if (r.executions >= limits.max_executions) {
      r.stopped = stop_reason::executions;
      break;
    }
    if (clock::now() >= limits.deadline) {
      r.stopped = stop_reason::time;
      break;
    }
    if (limits.stop != nullptr && limits.stop->load(std::memory_order_relaxed)) {
      r.stopped = stop_reason::failure;  // another job's
      break;  // relaxed: the flag carries no data, the joins publish the reports
    }
    execution_result e;
    if (o.strategy == strategy::dfs) {
      dfs_chooser c(o, pruned_options, path);
      e = run_once(m, o, c, path);
    } else if (o.strategy == strategy::random) {
      path.clear();
      random_chooser c(o, o.seed * 0x9e3779b97f4a7c15ULL + r.executions);
      e = run_once(m, o, c, path);
    } else {
      path.clear();
      pct_chooser c(o, o.seed * 0x9e3779b97f4a7c15ULL + r.executions, expected_steps);
      e = run_once(m, o, c, path);
      expected_steps = std::max(expected_steps, e.steps);
    }
    if (first_schedule.empty() && !e.pruned) {
      first_schedule = e.schedule;
      if (first_out != nullptr && first_out->empty()) {
        *first_out = first_schedule;
      }
    }
    const bool owned =
        o.strategy != strategy::dfs || o.shards <= 1 || e.passed_split || o.shard == 0;
    if (e.pruned) {
      ++pruned_executions;
    } else if (owned) {
      ++r.executions;
      if (e.failure) {
        ++r.failures;
        const bool stop = accept(*e.failure);
        if (!r.failure || better(*e.failure, *r.failure)) {
          r.failure = std::move(e.failure);
        }
        if (stop) {
          if (limits.stop != nullptr) {
            limits.stop->store(true, std::memory_order_relaxed);
          }
          r.stopped = stop_reason::failure;
          break;
        }
      }
    }
    if (o.strategy == strategy::dfs && !backtrack(path)) {
      r.exhausted = true;
      r.stopped = stop_reason::exhausted;
      break;
    }
    if (o.strategy != strategy::dfs) {
      stale = seen.insert(e.schedule).second ? 0U : stale + 1U;
      if (stale >= 64) {
        r.stopped = stop_reason::repeats;
        break;
      }
    }
  }
  r.pruned = pruned_options + pruned_executions;
  // Every execution replayed a prefix of an earlier one and compared it; the
  // first execution is replayed whole as well, since a change that only shows
  // after the last decision of each prefix escapes those comparisons.
  if (!first_schedule.empty() && !(r.failure && r.failure->kind == failure_kind::nondeterminism)) {
    const report check = replay_once(m, first_schedule, o);
    if (check.failure && check.failure->kind == failure_kind::nondeterminism) {
      r.failure = check.failure;
      ++r.failures;
    }
  }
  r.wall = clock::now() - start;
  return r;
}

// Fewest preemptions first (dfs at every smaller bound), then fewest steps
// (more failing executions at that bound), each within a budget of executions.
// No wall-clock sub-limits: on a loaded machine they cut the searches at other
// points, and the same model minimised to another schedule (only `deadline`, the
// whole exploration's guard, is a time).
failure minimise(const model& m, const options& o, failure found, clock::time_point deadline) {
  options mo = o;
  mo.strategy = strategy::dfs;
  mo.shards = 1;
  mo.shard = 0;
  mo.jobs = 1;
  const failure_kind kind = found.kind;
  for (unsigned b = 0; b < found.preemptions; ++b) {
    mo.preemption_bound = static_cast<int>(b);
    const search_limits limits{20'000, deadline};
    // Only a failure of the same kind may stand for the one found (the search's
    // own best may be of another kind).
    std::optional<failure> same;
    (void)search(m, mo, limits, [&](const failure& f) {
      if (f.kind == kind) {
        same = f;
      }
      return same.has_value();
    });
    if (same) {
      found = std::move(*same);
      break;
    }
  }
  mo.preemption_bound = static_cast<int>(found.preemptions);
  failure shortest = found;
  unsigned seen = 0;
  const search_limits limits{5'000, deadline};
  (void)search(m, mo, limits, [&](const failure& f) {
    if (f.kind == kind && f.preemptions <= shortest.preemptions && better(f, shortest)) {
      shortest = f;
    }
    return ++seen >= 64;
  });
  return shortest;
}

report merge(std::vector<report> parts) {
  report r;
  r.exhausted = !parts.empty();
  for (report& p : parts) {
    r.executions += p.executions;
    r.pruned += p.pruned;
    r.failures += p.failures;
    r.exhausted = r.exhausted && p.exhausted;
    // The reason of the merged search: a failure's, else the first part's that
    // did not exhaust its share.
    if (p.stopped == stop_reason::failure ||
        (!p.exhausted && r.stopped == stop_reason::exhausted)) {
      r.stopped = p.stopped;
    }
    r.wall = std::max(r.wall, p.wall);
    if (p.failure && (!r.failure || better(*p.failure, *r.failure))) {
      r.failure = std::move(p.failure);
    }
  }
  return r;
}

}  // namespace

report explore(const model& m, const options& given) {
  options o = given;
  if (o.strategy == strategy::dfs && o.preemption_bound < 0 && o.null_paths) {
    // Every schedule at all means every path in every interleaving. The reduction
    // needs it too: a step asleep in a sleep set stands for both of its paths
    // (NULL and not), sound only if both are offered wherever the step runs. The
    // replay string records it ('p').
    o.null_paths_with_preemptions = true;
  }
  const auto start = clock::now();
  if (std::optional<std::string> bad = invalid_options(o)) {
    return usage_report(std::move(*bad), {});
  }
  const stall_watch watch(o.stall_timeout);
  const search_limits limits{o.max_executions, deadline_after(start, o.time_budget)};
  auto accept = [&o](const failure&) { return o.stop_at_first_failure; };
  report r;
  report warm;
  if (o.strategy == strategy::dfs && o.pct_warmup > 0 && o.shards <= 1) {
    options wo = o;
    wo.strategy = strategy::pct;
    wo.jobs = 1;
    const search_limits wl{std::min(o.pct_warmup, o.max_executions), limits.deadline};
    warm = search(m, wo, wl, [](const failure&) { return true; });
  }
  const bool warm_failed = warm.failure.has_value();
  const std::uint64_t warm_executions = warm.executions;
  // The warm-up's executions count against the budget: the search gets the rest.
  const std::uint64_t after_warmup =
      o.max_executions > warm.executions ? o.max_executions - warm.executions : 0;
  if (warm_failed) {
    r = std::move(warm);
    r.exhausted = false;
  } else if (o.jobs <= 1 && o.strategy == strategy::dfs && o.preemption_bound > 0) {
    // Iterative preemption bounding (CHESS): every schedule with 0 preemptions,
    // then with at most 1, ... up to the bound. A failure is found with the
    // fewest preemptions it needs, and early: most need very few.
    std::vector<report> rounds;
    std::string first;  // the very first execution: replayed once more at the end
    bool complete = false;
    options bo = o;
    for (int b = 0; b <= o.preemption_bound; ++b) {
      bo.preemption_bound = b;
      search_limits bl = limits;
      std::uint64_t used = 0;
      for (const report& p : rounds) {
        used += p.executions;
      }
      bl.max_executions = used >= after_warmup ? 0 : after_warmup - used;
      tls_bound_cut = false;
      rounds.push_back(search(m, bo, bl, accept, &first));
      if (rounds.back().failure && o.stop_at_first_failure) {
        break;
      }
      if (!rounds.back().exhausted) {
        break;  // out of budget
      }
      if (!tls_bound_cut) {
        complete = true;  // nothing was left out: a higher bound adds nothing
        break;
      }
    }
    const bool all_bounds =
        complete || rounds.size() == static_cast<std::size_t>(o.preemption_bound) + 1;
    r = merge(std::move(rounds));
    r.exhausted = r.exhausted && all_bounds;
    if (!first.empty() && (!r.failure || r.failure->kind != failure_kind::nondeterminism)) {
      const report check = replay_once(m, first, o);
      if (check.failure && check.failure->kind == failure_kind::nondeterminism) {
        r.failure = check.failure;
        ++r.failures;
      }
    }
  } else if (o.jobs <= 1) {
    search_limits sl = limits;
    sl.max_executions = after_warmup;
    r = search(m, o, sl, accept);
  } else {
    // Worker j explores shard (shard * jobs + j) of (shards * jobs); the budget of
    // executions is shared out.
    // A job that stops at its failure stops the others too (the flag).
    std::vector<report> parts(o.jobs);
    std::vector<std::thread> workers;
    std::atomic<bool> stop{false};
    stall_watch* const watching = stall_watch::current();
    for (unsigned j = 0; j < o.jobs; ++j) {
      workers.emplace_back([&, j, watching] {
        const stall_watch::adopt progress_for(watching);
        options wo = o;
        wo.jobs = 1;
        wo.shards = o.shards * o.jobs;
        wo.shard = o.shard * o.jobs + j;
        wo.seed = o.seed + j;
        const search_limits wl{std::max<std::uint64_t>(1, after_warmup / o.jobs), limits.deadline,
                               &stop};
        parts[j] = search(m, wo, wl, accept);
      });
    }
    for (std::thread& w : workers) {
      w.join();
    }
    r = merge(std::move(parts));
  }
  if (!warm_failed) {
    r.executions += warm_executions;  // the warm-up's executions count too
  }
  if (r.failure && o.minimize && r.failure->kind != failure_kind::nondeterminism) {
    // The whole exploration's guard, with 10 s more for the minimisation.
    const clock::time_point end = deadline_after(start, o.time_budget);
    r.failure =
        minimise(m, o, std::move(*r.failure), deadline_after(end, std::chrono::seconds(10)));
  }
  if (r.failure && r.failure->kind != failure_kind::nondeterminism) {
    // What is printed must reproduce: the failure's schedule is replayed, three
    // times (a model that fails at random, one time in k, passes all three with
    // odds 1 in k^3 instead of 1 in k).
    const auto reproduces = [&r](const report& check) {
      return check.failure && check.failure->kind == r.failure->kind &&
             check.failure->schedule == r.failure->schedule;
    };
    report check = replay_once(m, r.failure->schedule, o);
    for (int i = 1; i < 3 && reproduces(check); ++i) {
      check = replay_once(m, r.failure->schedule, o);
    }
    if (!reproduces(check)) {
      failure f;
      f.kind = failure_kind::nondeterminism;
      f.message = fmt::format(
          "the failing schedule does not reproduce: replaying it {} (the first run failed with "
          "{}: '{}')",
          check.failure ? fmt::format("gave '{}'", check.failure->message)
                        : std::string("did not fail"),
          to_string(r.failure->kind), r.failure->message);
      f.schedule = r.failure->schedule;
      r.failure = std::move(f);
    }
  }
  if (r.failure) {
    r.stopped = stop_reason::failure;  // also one a final replay found
  }
  r.wall = clock::now() - start;
  return r;
}

namespace {

// A schedule string taken apart: the decisions, and the options it was made with
// (in `ro`); or what is wrong with its form.
struct parsed_schedule {
  std::vector<unsigned> choices;
  std::string problem;  // empty: well-formed
};
parsed_schedule parse_schedule(std::string_view schedule, options& ro) {
  parsed_schedule p;
  // tl1-<16 hex>-<16 hex>-<choices>
  if (schedule.size() < 38 || schedule.substr(0, 4) != "tl1-" || schedule[20] != '-' ||
      schedule[37] != '-') {
    p.problem = fmt::format("'{}' is not a tasklife schedule (tl1-<signature>-<events>-<choices>)",
                            schedule);
    return p;
  }
  auto hex = [](std::string_view h) -> std::optional<std::uint64_t> {
    std::uint64_t v = 0;
    for (const char c : h) {
      const auto d = std::string_view("0123456789abcdef").find(c);
      if (d == std::string_view::npos) {
        return std::nullopt;
      }
      v = (v << 4) | d;
    }
    return v;
  };
  const auto signature = hex(schedule.substr(4, 16));
  const auto events = hex(schedule.substr(21, 16));
  std::string_view rest = schedule.substr(38);
  // The NULL-path options the schedule was made with, if it says (a string from
  // before they were written has none: the caller's options then apply).
  if (const auto tilde = rest.find('~'); tilde != std::string_view::npos) {
    if (!parse_null_path_options(rest.substr(tilde + 1), ro)) {
      p.problem = fmt::format("'{}' is not a tasklife schedule: bad NULL-path options", schedule);
      return p;
    }
    rest = rest.substr(0, tilde);
  }
  auto choices = decode_choices(rest);
  if (!signature || !events || !choices) {
    p.problem = fmt::format("'{}' is not a tasklife schedule: bad hash or choices", schedule);
    return p;
  }
  p.choices = std::move(*choices);
  return p;
}

}  // namespace

std::optional<std::string> schedule_problem(std::string_view schedule) {
  options ignored;
  parsed_schedule p = parse_schedule(schedule, ignored);
  return p.problem.empty() ? std::nullopt : std::optional<std::string>(std::move(p.problem));
}

report replay(const model& m, std::string_view schedule, const options& o) {
  const stall_watch watch(o.stall_timeout);
  return replay_once(m, schedule, o);
}

namespace {
report replay_once(const model& m, std::string_view schedule, const options& o) {
  report r;
  const auto start = clock::now();
  r.stopped = stop_reason::replay;
  if (std::optional<std::string> bad = invalid_options(o)) {
    return usage_report(std::move(*bad), schedule);
  }
  auto fail_with = [&](std::string message, failure_kind kind = failure_kind::usage) {
    if (kind == failure_kind::usage) {
      return usage_report(std::move(message), schedule);
    }
    failure f;
    f.kind = kind;
    f.message = std::move(message);
    f.schedule = std::string(schedule);
    r.failure = std::move(f);
    r.failures = 1;
    r.wall = clock::now() - start;
    return r;
  };
  options ro = o;
  ro.shards = 1;
  ro.shard = 0;
  parsed_schedule parsed = parse_schedule(schedule, ro);
  if (!parsed.problem.empty()) {
    return fail_with(std::move(parsed.problem));
  }
  const std::vector<unsigned>& choices = parsed.choices;
  std::vector<node> path(choices.size());
  for (std::size_t i = 0; i < choices.size(); ++i) {
    path[i].chosen = choices[i];
  }
  std::uint64_t ignored = 0;
  dfs_chooser c(ro, ignored, path);
  execution_result e = run_once(m, ro, c, path, /*replaying=*/true);
  r.executions = 1;
  r.exhausted = false;
  // A nondeterministic model is reported as such; otherwise the replay must have
  // followed the schedule (a schedule string without its '~' options matches too).
  const bool nondeterministic = e.failure && e.failure->kind == failure_kind::nondeterminism;
  if (!nondeterministic && e.schedule != schedule &&
      e.schedule.substr(0, e.schedule.find('~')) != schedule) {
    return fail_with(fmt::format("replaying '{}' gave a different execution ('{}'): the schedule "
                                 "was made by another model or profile, or {}",
                                 schedule, e.schedule, kUncontrolled),
                     failure_kind::nondeterminism);
  }
  if (e.failure) {
    r.failure = std::move(e.failure);
    r.failures = 1;
  }
  r.wall = clock::now() - start;
  return r;
}

}  // namespace

// ---- the public entry points
// ---------------------------------------------------------------------

kernel_config execution::config(kernel_config c) const {
  return state_.config(std::move(c));
}
void execution::thread(std::string name, std::function<void()> body) {
  state_.thread(std::move(name), std::move(body));
}
void execution::invariant(std::string name, std::function<bool()> holds) {
  state_.invariant(std::move(name), std::move(holds));
}
void execution::check(bool ok, std::string_view message) {
  state_.check(ok, message);
}
void execution::run() {
  state_.run();
}

void yield(const void* object) {
  detail::sched_point(sched_op::yield, object, "explore::yield");
}

void wait_until(const std::function<bool()>& ready, const void* object) {
  // The explorer evaluates the condition on its own context: an exception from it
  // is kept (the thread is let go) and rethrown on the simulated thread.
  struct condition {
    const std::function<bool()>* ready;
    mutable std::exception_ptr error;
  };
  const condition c{&ready, nullptr};
  const detail::sched_ready_fn call = [](const void* arg) noexcept {
    const auto& cond = *static_cast<const condition*>(arg);
    if (cond.error) {
      return true;
    }
    try {
      return (*cond.ready)();
    } catch (...) {
      cond.error = std::current_exception();
      return true;
    }
  };
  if (detail::sched_wait(sched_op::yield, object, "explore::wait_until", call, &c)) {
    if (c.error) {
      std::rethrow_exception(c.error);
    }
    return;
  }
  if (detail::tls_observer != nullptr) {
    // The model's own context during an execution (its setup or teardown): no
    // simulated thread runs while it waits, so the condition could never change.
    throw std::logic_error(
        "explore::wait_until on the model's own context: only a simulated thread can wait for "
        "another");
  }
  while (!ready()) {  // not on a simulated thread: poll
    std::this_thread::yield();
  }
}

std::string_view to_string(stop_reason r) noexcept {
  switch (r) {
    case stop_reason::exhausted:
      return "space exhausted";
    case stop_reason::failure:
      return "a failure";
    case stop_reason::executions:
      return "max_executions";
    case stop_reason::time:
      return "time budget";
    case stop_reason::repeats:
      return "64 executions in a row repeated earlier schedules";
    case stop_reason::usage:
      return "invalid options or schedule";
    case stop_reason::replay:
      return "replay";
  }
  return "?";
}

std::string report::summary() const {
  const bool say_why = !exhausted && stopped != stop_reason::exhausted &&
                       stopped != stop_reason::failure && stopped != stop_reason::replay;
  return fmt::format("explored {} execution(s) ({} pruned by the reduction), space {}{}, {} ms{}",
                     executions, pruned, exhausted ? "exhausted" : "not exhausted",
                     say_why ? fmt::format(" (stopped: {})", to_string(stopped)) : "",
                     std::chrono::duration_cast<std::chrono::milliseconds>(wall).count(),
                     failure ? fmt::format(", failure: {}", to_string(failure->kind)) : "");
}

std::string failure::format_timeline() const {
  std::string out;
  for (const step& s : timeline) {
    out += fmt::format("  {:>4}  {:<10} {}{:<16} {}\n", s.index, s.thread, s.preemption ? "*" : " ",
                       s.action, s.detail);
    for (const task_event& e : s.events) {
      out += fmt::format("              pid {:<5} {:<14} usage={} rcu_users={}{}{}\n", e.pid,
                         tasklife::to_string(e.kind), static_cast<int>(e.usage),
                         static_cast<int>(e.rcu_users), e.detail.empty() ? "" : "  ", e.detail);
    }
  }
  return out;
}

}  // namespace explore

namespace detail {
void sched_point_slow(sched_op op, const void* object, std::string_view what) {
  sim_thread* t = tls_sim;
  t->exec_.point(*t, op, object, what);
}

void sched_wait_slow(sched_op op, const void* object, std::string_view what, sched_ready_fn ready,
                     const void* arg) {
  sim_thread* t = tls_sim;
  t->exec_.wait(*t, op, object, what, ready, arg);
}

bool null_path_slow(std::string_view what) {
  return tls_sim->exec_.null_path(what);
}
}  // namespace detail

}  // namespace tasklife
