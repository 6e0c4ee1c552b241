// The simulated kernel as a composition of its parts: construction and
// namespaces, the history and holder views, accounting and teardown. The
// lifecycle itself is in fork.cpp and exit.cpp.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>

#include "event_log.hpp"
#include "holder_tracker.hpp"
#include "quarantine.hpp"
#include "task_internal.hpp"

namespace tasklife {

// ---- the kernels of this process ---------------------------------------------------------------
//
// Every live kernel, so a diagnostic about a pointer can say whose task it is (a
// task of another kernel, or no task at all) and a refcount warning can name the
// task its counter belongs to. Registered by the constructor, removed by the
// destructor after shutdown; read only on diagnostic paths.

namespace {
detail::mutex g_kernels_mutex;
std::vector<const kernel*> g_kernels TASKLIFE_GUARDED_BY(g_kernels_mutex);
// The dependents (maps) of every live kernel.
std::vector<std::pair<const kernel*, detail::kernel_dependent*>> g_dependents
    TASKLIFE_GUARDED_BY(g_kernels_mutex);

// What a kernel destroyed too early leaves behind for those still using it: its
// RCU domain and its scope anchor. Kept until the process exits (never destroyed).
struct parked_parts {
  detail::mutex m;
  std::vector<std::unique_ptr<rcu_domain>> domains TASKLIFE_GUARDED_BY(m);
  std::vector<std::unique_ptr<detail::scope_anchor>> anchors TASKLIFE_GUARDED_BY(m);
};
parked_parts& parked() {
  static parked_parts* p = new parked_parts;  // NOLINT: deliberately never destroyed
  return *p;
}

void resolve_refcount_owner(const refcount_t* r, diagnostic_object& object,
                            std::string_view& counter) noexcept {
  const auto* at = reinterpret_cast<const char*>(r);
  const auto* as_usage = reinterpret_cast<const task_struct*>(at - offsetof(task_struct, usage));
  const auto* as_rcu_users =
      reinterpret_cast<const task_struct*>(at - offsetof(task_struct, rcu_users));
  const task_struct* t = nullptr;
  if (detail::kernel_knowing(as_usage) != nullptr) {
    t = as_usage;
    counter = "usage";
  } else if (detail::kernel_knowing(as_rcu_users) != nullptr) {
    t = as_rcu_users;
    counter = "rcu_users";
  }
  if (t != nullptr) {
    try {
      object = detail::describe_task(t);
    } catch (...) {  // out of memory while naming it: the warning goes out unnamed
    }
  }
}
}  // namespace

namespace detail {
bool kernel_alive(const kernel* k) noexcept {
  const lock_guard lock(g_kernels_mutex);
  return std::find(g_kernels.begin(), g_kernels.end(), k) != g_kernels.end();
}

std::string kernel_name_of(const task_struct* t) {
  if (t->priv.owner != nullptr && kernel_alive(t->priv.owner)) {
    return t->priv.owner->name();
  }
  return graveyard_kernel_name(t);
}

const kernel* kernel_knowing(const task_struct* t) noexcept {
  if constexpr (!contract_checks_enabled) {
    return nullptr;  // no registry of tasks without checks
  }
  if (t == nullptr) {
    return nullptr;
  }
  const lock_guard lock(g_kernels_mutex);
  for (const kernel* k : g_kernels) {
    if (k->knows_task(t)) {
      return k;
    }
  }
  return nullptr;
}
}  // namespace detail

// ---- construction and namespaces ------------------------------------------------------------

namespace {
diagnostic_object kernel_object(const std::string& name) {
  diagnostic_object o;
  o.kernel = name;
  return o;
}

kernel_config validated(kernel_config config) {
  if (config.pid_max < 2 || config.pid_max > PID_MAX_LIMIT) {
    detail::report_contract_violation(
        contract_kind::invalid_argument, "kernel", "kernel", kernel_object(config.name),
        fmt::format("kernel '{}': pid_max {} is outside [2, PID_MAX_LIMIT]", config.name,
                    config.pid_max),
        std::source_location::current());
    config.pid_max = PID_MAX_DEFAULT;
  }
  if (!is_valid(config.profile)) {
    detail::report_contract_violation(
        contract_kind::invalid_argument, "kernel", "kernel", kernel_object(config.name),
        fmt::format("kernel '{}': semantics profile {} does not exist", config.name,
                    static_cast<int>(config.profile)),
        std::source_location::current());
    config.profile = semantics_profile::current;
  }
  if (config.final_put == final_put_mode::profile_default) {
    config.final_put =
        final_put_deferred(config.profile) ? final_put_mode::deferred : final_put_mode::immediate;
  }
  if (config.reserved_pids < 1 || config.reserved_pids >= config.pid_max) {
    config.reserved_pids = 1;
  }
  return config;
}
}  // namespace

kernel::kernel(kernel_config config)
    : config_(validated(std::move(config))),
      rcu_(config_.rcu_backend_factory
               ? std::make_unique<rcu_domain>(config_.name + "/rcu", config_.rcu_backend_factory())
               : std::make_unique<rcu_domain>(config_.name + "/rcu")),
      log_(std::make_unique<detail::event_log>(config_.history_capacity)),
      holders_(std::make_unique<detail::holder_tracker>()),
      quarantine_(std::make_unique<detail::task_quarantine>(config_.quarantine_capacity)) {
  const detail::lock_guard lock(namespaces_mutex_);
  namespaces_.push_back(std::unique_ptr<pid_namespace>(
      new pid_namespace(*this, nullptr, config_.pid_max, config_.reserved_pids)));
  init_ns_ = namespaces_.front().get();
  if (config_.event_listener) {
    log_->set_listener(config_.event_listener);
  }
  const detail::lock_guard lock_kernels(g_kernels_mutex);
  g_kernels.push_back(this);
  detail::set_refcount_owner_resolver(&resolve_refcount_owner);
}

kernel::~kernel() {
  shutdown();
  {
    const detail::lock_guard lock(g_kernels_mutex);
    g_kernels.erase(std::remove(g_kernels.begin(), g_kernels.end(), this), g_kernels.end());
  }
  // Whatever still uses the RCU domain or the scope anchor (a registration, a
  // read section, a scope on this thread) keeps them: they are parked, not
  // destroyed. shutdown() has reported why.
  const bool in_use =
      scopes_->count.load(std::memory_order_seq_cst) != 0 || rcu_->live_registrations() != 0;
  if (in_use) {
    parked_parts& p = parked();
    const detail::lock_guard lock(p.m);
    p.domains.push_back(std::move(rcu_));
    p.anchors.push_back(std::move(scopes_));
  }
}

bool kernel::check_own_task(const task_struct* t, std::string_view op,
                            std::source_location where) const {
  if (t == nullptr) {
    detail::report_unknown_task(t, "kernel", op, where);
    return false;
  }
  if constexpr (contract_checks_enabled) {
    if (!knows_task(t)) [[unlikely]] {
      const kernel* other = detail::kernel_knowing(t);
      if (other == nullptr) {
        detail::report_unknown_task(t, "kernel", op, where);
        return false;
      }
      detail::report_contract_violation(
          contract_kind::foreign_object, "kernel", op, detail::describe_task(t),
          fmt::format("{}() of kernel '{}' given task '{}' (pid {}, id {}) of kernel '{}': a "
                      "kernel's lifecycle acts on its own tasks only; not carried out",
                      op, name(), t->comm, t->pid, t->priv.id, other->name()),
          where);
      return false;
    }
  }
  if (!detail::check_task(t, op, where)) {
    return false;
  }
  if (t->priv.owner != this) [[unlikely]] {  // the test every tier can afford
    detail::report_contract_violation(
        contract_kind::foreign_object, "kernel", op, detail::describe_task(t),
        fmt::format("{}() of kernel '{}' given a task of another kernel; not carried out", op,
                    name()),
        where);
    return false;
  }
  return true;
}

pid_namespace& kernel::create_pid_namespace(pid_namespace& parent) {
  if (&parent.owner() != this) {
    diagnostic_object o = kernel_object(parent.owner().name());
    o.address = &parent;
    detail::report_contract_violation(
        contract_kind::foreign_object, "kernel", "create_pid_namespace", std::move(o),
        fmt::format("kernel '{}': create_pid_namespace() below a namespace of kernel '{}'; not "
                    "created (the parent is returned)",
                    name(), parent.owner().name()),
        std::source_location::current());
    return parent;
  }
  if (parent.level() + 1 > MAX_PID_NS_LEVEL) {
    diagnostic_object o = kernel_object(name());
    o.address = &parent;
    detail::report_contract_violation(
        contract_kind::limit_exceeded, "kernel", "create_pid_namespace", std::move(o),
        fmt::format("kernel '{}': pid namespaces nest at most {} deep (create_pid_namespace "
                    "fails with -ENOSPC; the parent is returned)",
                    name(), MAX_PID_NS_LEVEL),
        std::source_location::current());
    return parent;  // the handler returned: the namespace is not created
  }
  const detail::lock_guard lock(namespaces_mutex_);
  namespaces_.push_back(std::unique_ptr<pid_namespace>(
      new pid_namespace(*this, &parent, config_.pid_max, config_.reserved_pids)));
  return *namespaces_.back();
}

// ---- the event log -------------------------------------------------------------------------

void kernel::record(task_struct* t, task_event_kind kind, unsigned usage, unsigned rcu_users,
                    std::string_view detail, std::source_location where) {
  if (t == nullptr) [[unlikely]] {
    detail::report_unknown_task(t, "kernel", "record", where);
    return;
  }
  if (!t->traced.load(std::memory_order_relaxed)) {
    return;
  }
  task_event e{};
  e.task_id = t->priv.id;
  e.pid = t->pid;
  e.kind = kind;
  e.thread = event_thread_id();
  e.usage = usage;
  e.rcu_users = rcu_users;
  e.time_ns = log_->now_ns();
  e.detail = detail;
  e.where = where;
  log_->append(e);
}

namespace detail {
void record_event(task_struct* t, task_event_kind kind, unsigned usage, unsigned rcu_users,
                  std::string_view detail, std::source_location where) {
  kernel_access::record(task_kernel(t), t, kind, usage, rcu_users, detail, where);
}
}  // namespace detail

void kernel::trace_task(task_struct* t, bool on) noexcept {
  if (!detail::check_known_task_noexcept(t, "kernel", "trace_task",
                                         std::source_location::current())) {
    return;
  }
  if (on) {
    // The task's own kernel decides its kfuncs' path, whichever kernel is asked.
    // Release: pairs with the fast paths' reads (see any_task_slow_).
    task_kernel(t).any_task_slow_.store(true, std::memory_order_release);
  }
  t->traced.store(on, std::memory_order_relaxed);
}

std::vector<task_event> kernel::events() const {
  return log_->events();
}

std::vector<task_event> kernel::history(std::uint64_t task_id) const {
  return log_->history(task_id);
}

std::vector<task_event> kernel::history(const task_struct* t) const {
  if (t == nullptr) {
    detail::report_unknown_task(t, "kernel", "history", std::source_location::current());
    return {};
  }
  if constexpr (contract_checks_enabled) {
    // A freed task in quarantine or the pool still has its id: its history is
    // what a use-after-free report wants. Only a pointer that is no task is refused.
    if (!knows_task(t) && detail::kernel_knowing(t) == nullptr &&
        detail::graveyard_lookup(t) == detail::graveyard_state::unknown) {
      detail::report_unknown_task(t, "kernel", "history", std::source_location::current());
      return {};
    }
  }
  return log_->history(t->priv.id);
}

void kernel::set_event_listener(std::function<void(const task_event&)> listener) {
  log_->set_listener(std::move(listener));
}

// ---- the holder tracker -----------------------------------------------------------------------

void kernel::track_get(task_struct* t, holder_counter counter, holder_role role,
                       std::string_view label, std::source_location where) {
  if (t->holders_tracked) {
    holders_->get(t, counter, role, label, where);
  }
}

bool kernel::track_put(task_struct* t, holder_counter counter, holder_role role,
                       std::string_view op, std::source_location where) {
  return !t->holders_tracked || holders_->put(t, counter, role, op, where);
}

std::vector<holder_info> kernel::holders(const task_struct* t) const {
  return holders_->holders(t);
}

std::string kernel::format_holders(const task_struct* t) const {
  return holders_->format(t);
}

// ---- the registry -------------------------------------------------------------------------

bool kernel::is_allocated(const task_struct* t) const {
  const detail::lock_guard lock(tasklist_lock_);
  for (task_struct* p = tasks_; p != nullptr; p = p->priv.next) {
    if (p == t) {
      return true;
    }
  }
  return false;
}

bool kernel::is_freed(const task_struct* t) const {
  if constexpr (!debug_checks_enabled) {
    return false;  // freed memory is deleted at once: nothing is remembered
  }
  // A task the registry still holds that is no longer on the task list is a freed
  // one in quarantine (its magic says so; reading it is what quarantine is for).
  return quarantine_->knows(t) &&
         t->priv.magic.load(std::memory_order_relaxed) == detail::task_freed_magic;
}

bool kernel::is_hashed(const task_struct* t) const {
  if (!is_allocated(t)) {
    return false;
  }
  // Acquire pairs with the release in release_task's detach_pid.
  return !t->priv.pid_detached.load(std::memory_order_acquire);
}

bool kernel::knows_task(const task_struct* t) const {
  return quarantine_->knows(t);
}

// ---- accounting and teardown ------------------------------------------------------------------

kernel_stats kernel::stats() const noexcept {
  kernel_stats s{};
  s.forked = forked_.load(std::memory_order_relaxed);
  s.fork_failures = fork_failures_.load(std::memory_order_relaxed);
  s.rcu_users_zero = rcu_users_zero_.load(std::memory_order_relaxed);
  s.gp_elapsed = gp_elapsed_.load(std::memory_order_relaxed);
  s.freed = freed_.load(std::memory_order_relaxed);
  s.torn_down = torn_down_.load(std::memory_order_relaxed);
  s.quarantined = quarantine_->size();
  return s;
}

std::vector<leaked_task> kernel::allocated_tasks() const {
  std::vector<leaked_task> out;
  const detail::lock_guard lock(tasklist_lock_);
  for (task_struct* t = tasks_; t != nullptr; t = t->priv.next) {
    out.push_back(leaked_task{
        t->priv.id, t->pid, t->comm, refcount_read(&t->usage), refcount_read(&t->rcu_users),
        t->exit_state.load(std::memory_order_relaxed), t->state.load(std::memory_order_relaxed),
        t->holders_tracked ? holders_->format(t) : std::string()});
  }
  return out;
}

std::vector<leaked_task> kernel::allocated_tasks_with_holders() const {
  return allocated_tasks();
}

std::vector<leaked_task> kernel::shutdown() {
  if (shut_down_) {
    return {};
  }
  shut_down_ = true;
  const std::size_t scopes = scopes_->count.load(std::memory_order_seq_cst);
  if (scopes != 0) {
    const std::size_t mine = detail::scopes_on_this_thread(scopes_.get());
    detail::report_contract_violation_noexcept(
        contract_kind::teardown_order, "kernel", "shutdown", kernel_object(name()),
        fmt::format("kernel '{}' shut down while {} current_task_scope(s) of its tasks are alive "
                    "({} on this thread: it runs as no task from now on; {} on other threads: "
                    "the teardown waits for them to end)",
                    name(), scopes, mine, scopes > mine ? scopes - mine : 0),
        std::source_location::current());
    detail::orphaned_scope_epoch.fetch_add(1, std::memory_order_relaxed);
    if (detail::tls_ctx.owner == this) {
      detail::tls_ctx = detail::current_context{
          nullptr, nullptr, semantics_profile::current, false, detail::tls_ctx.run, nullptr, {}};
    }
    // Another thread's kfuncs read this kernel through its context: wait until it
    // has left every scope (never for this OS thread's own, which the explorer's
    // simulated threads share). Sequentially consistent: pairs with the scope's
    // decrement and its load of the waiters (current.cpp).
    if (detail::tls_sim == nullptr) {
      scopes_->waiters.fetch_add(1, std::memory_order_seq_cst);
      for (std::size_t n = scopes_->count.load(std::memory_order_seq_cst); n > mine;
           n = scopes_->count.load(std::memory_order_seq_cst)) {
        scopes_->count.wait(n, std::memory_order_seq_cst);
      }
      scopes_->waiters.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  // Every pending callback first (delayed_put -> put -> deferred free is a chain).
  // A teardown that cannot wait (inside a read-side section, or from a callback)
  // would free tasks under pending callbacks: that is fatal, not reportable.
  try {
    rcu_->rcu_barrier();
  } catch (...) {
    detail::report_contract_violation_noexcept(
        contract_kind::wait_in_read_section, "kernel", "shutdown", kernel_object(name()),
        fmt::format("kernel '{}' torn down where it cannot wait for its RCU callbacks", name()),
        std::source_location::current());
    std::abort();
  }
  std::vector<leaked_task> leaks = allocated_tasks();
  for (const leaked_task& l : leaks) {
    diagnostic_object o = kernel_object(name());
    o.task_id = l.id;
    o.pid = l.pid;
    o.comm = l.comm;
    detail::report_contract_violation_noexcept(
        contract_kind::leak, "kernel", "shutdown", std::move(o),
        fmt::format("leak: kernel '{}' torn down with task '{}' (pid {}, id {}) never freed: "
                    "usage={} rcu_users={} exit_state={:#x} state={:#x}{}{}",
                    name(), l.comm, l.pid, l.id, static_cast<int>(l.usage),
                    static_cast<int>(l.rcu_users), l.exit_state, l.state,
                    l.holders.empty() ? "" : "; ", l.holders),
        std::source_location::current());
  }
  holders_->clear();
  {
    const detail::lock_guard lock(tasklist_lock_);
    while (task_struct* t = tasks_) {
      list_del(t);
      quarantine_->bury(t, name());  // a tombstone: its holder may still put it
      torn_down_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  quarantine_->drain();
  // Maps and programs still alive: orphaned (their destructors then touch nothing of
  // this kernel).
  std::vector<detail::kernel_dependent*> orphans;
  {
    const detail::lock_guard lock(g_kernels_mutex);
    for (auto it = g_dependents.begin(); it != g_dependents.end();) {
      if (it->first == this) {
        it->second->orphaned.store(true, std::memory_order_relaxed);
        orphans.push_back(it->second);
        it = g_dependents.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const detail::kernel_dependent* d : orphans) {
    diagnostic_object o = kernel_object(name());
    if (d->what == "map") {
      o.map = std::string(d->name);
    }
    o.address = d;
    detail::report_contract_violation_noexcept(
        contract_kind::teardown_order, "kernel", "shutdown", std::move(o),
        fmt::format("kernel '{}' shut down while {} '{}' still uses it: the {} is orphaned (its "
                    "operations are refused, its destructor touches nothing of the kernel)",
                    name(), d->what, d->name, d->what),
        std::source_location::current());
  }
  if (const std::int64_t regs = rcu_->live_registrations(); regs > 0) {
    diagnostic_object o = kernel_object(name());
    o.address = rcu_.get();
    detail::report_contract_violation_noexcept(
        contract_kind::teardown_order, "kernel", "shutdown", std::move(o),
        fmt::format("RCU domain '{}' ({}) of kernel '{}' destroyed while {} thread "
                    "registration(s) with it are alive: the domain is kept until the process "
                    "exits, so they can still end",
                    rcu_->name(), rcu_->backend_name(), name(), regs),
        std::source_location::current());
  }
  return leaks;
}

namespace detail {
void kernel_access::attach_dependent(kernel& k, kernel_dependent* d) {
  const lock_guard lock(g_kernels_mutex);
  g_dependents.emplace_back(&k, d);
}

bool kernel_access::detach_dependent(kernel_dependent* d) noexcept {
  const lock_guard lock(g_kernels_mutex);
  for (auto it = g_dependents.begin(); it != g_dependents.end(); ++it) {
    if (it->second == d) {
      g_dependents.erase(it);
      return true;
    }
  }
  return false;  // orphaned by its kernel's teardown
}
}  // namespace detail

}  // namespace tasklife
