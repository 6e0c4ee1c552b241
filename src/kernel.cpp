// The simulated kernel: fork, exit, the final switch, the reap, the free.
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include <tasklife/kernel.hpp>

#include "task_internal.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TASKLIFE_ASAN_POISON(addr, size) __asan_poison_memory_region((addr), (size))
#define TASKLIFE_ASAN_UNPOISON(addr, size) __asan_unpoison_memory_region((addr), (size))
#else
#define TASKLIFE_ASAN_POISON(addr, size) ((void)(addr), (void)(size))
#define TASKLIFE_ASAN_UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

namespace tasklife {
namespace detail {
constinit thread_local current_context tls_ctx{
    nullptr, nullptr, semantics_profile::current, nullptr, nullptr, nullptr, nullptr, 0};
}  // namespace detail

std::string_view to_string(task_event_kind kind) noexcept {
  switch (kind) {
    case task_event_kind::fork:
      return "fork";
    case task_event_kind::fork_failed:
      return "fork_failed";
    case task_event_kind::get:
      return "get";
    case task_event_kind::tryget:
      return "tryget";
    case task_event_kind::tryget_failed:
      return "tryget_failed";
    case task_event_kind::put:
      return "put";
    case task_event_kind::put_many:
      return "put_many";
    case task_event_kind::rcu_user_get:
      return "rcu_user_get";
    case task_event_kind::rcu_user_put:
      return "rcu_user_put";
    case task_event_kind::exit:
      return "exit";
    case task_event_kind::zombie:
      return "zombie";
    case task_event_kind::autoreap:
      return "autoreap";
    case task_event_kind::reap:
      return "reap";
    case task_event_kind::unhash:
      return "unhash";
    case task_event_kind::task_dead:
      return "task_dead";
    case task_event_kind::final_switch:
      return "final_switch";
    case task_event_kind::gp_requested:
      return "gp_requested";
    case task_event_kind::gp_elapsed:
      return "gp_elapsed";
    case task_event_kind::free_deferred:
      return "free_deferred";
    case task_event_kind::free:
      return "free";
    case task_event_kind::kfunc:
      return "kfunc";
  }
  return "?";
}

std::string_view to_string(semantics_profile p) noexcept {
  switch (p) {
    case semantics_profile::rcu_users_inc:
      return "rcu_users_inc";
    case semantics_profile::usage_based:
      return "usage_based";
    case semantics_profile::rcu_safe:
      return "rcu_safe";
    case semantics_profile::current:
      return "current";
  }
  return "?";
}

// ---- tracepoint ---------------------------------------------------------------------------

std::uint64_t tracepoint::attach(probe p) {
  const std::lock_guard lock(mutex_);
  auto next = probes_ ? std::make_shared<std::vector<entry>>(*probes_)
                      : std::make_shared<std::vector<entry>>();
  const std::uint64_t id = next_id_++;
  next->push_back(entry{id, std::move(p)});
  probes_ = std::move(next);
  enabled_.store(true, std::memory_order_release);  // pairs with enabled()
  return id;
}

bool tracepoint::detach(std::uint64_t id) {
  const std::lock_guard lock(mutex_);
  if (!probes_) {
    return false;
  }
  auto next = std::make_shared<std::vector<entry>>(*probes_);
  const auto old_size = next->size();
  std::erase_if(*next, [id](const entry& e) { return e.id == id; });
  const bool removed = next->size() != old_size;
  enabled_.store(!next->empty(), std::memory_order_release);
  probes_ = std::move(next);
  return removed;
}

void tracepoint::fire_slow(task_struct* t) const {
  std::shared_ptr<const std::vector<entry>> probes;
  {
    const std::lock_guard lock(mutex_);
    probes = probes_;
  }
  if (probes) {
    for (const entry& e : *probes) {
      e.fn(t);
    }
  }
}

// ---- history --------------------------------------------------------------------------------

namespace detail {

void record_event(task_struct* t, task_event_kind kind, unsigned usage, unsigned rcu_users,
                  std::string_view detail, std::source_location where) {
  task_kernel(t).record(t, kind, usage, rcu_users, detail, where);
}

}  // namespace detail

void kernel::record(task_struct* t, task_event_kind kind, std::string_view detail,
                    std::source_location where) {
  if (!t->traced.load(std::memory_order_relaxed)) {
    return;
  }
  record(t, kind, refcount_read(&t->usage), refcount_read(&t->rcu_users), detail, where);
}

void kernel::record(task_struct* t, task_event_kind kind, unsigned usage, unsigned rcu_users,
                    std::string_view detail, std::source_location where) {
  if (!t->traced.load(std::memory_order_relaxed)) {
    return;
  }
  task_event e{};
  e.task_id = t->priv.id;
  e.pid = t->pid;
  e.kind = kind;
  e.usage = usage;
  e.rcu_users = rcu_users;
  e.time_ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::steady_clock::now() - epoch_)
                                             .count());
  e.detail = detail;
  e.where = where;
  emit(e);
}

void kernel::emit(const task_event& ev) {
  const std::lock_guard lock(history_mutex_);
  task_event e = ev;
  e.seq = ++event_seq_;
  events_.push_back(e);
  while (events_.size() > config_.history_capacity) {
    events_.pop_front();
  }
  if (listener_) {
    listener_(e);  // under the lock: events reach the listener in order
  }
}

void kernel::trace_task(task_struct* t, bool on) noexcept {
  if (on) {
    // The task's own kernel decides its kfuncs' path, whichever kernel is asked.
    task_kernel(t).any_task_slow_.store(true, std::memory_order_release);
  }
  t->traced.store(on, std::memory_order_relaxed);
}

std::vector<task_event> kernel::events() const {
  const std::lock_guard lock(history_mutex_);
  return {events_.begin(), events_.end()};
}

std::vector<task_event> kernel::history(std::uint64_t task_id) const {
  const std::lock_guard lock(history_mutex_);
  std::vector<task_event> out;
  for (const task_event& e : events_) {
    if (e.task_id == task_id) {
      out.push_back(e);
    }
  }
  return out;
}

void kernel::set_event_listener(std::function<void(const task_event&)> listener) {
  const std::lock_guard lock(history_mutex_);
  listener_ = std::move(listener);
}

// ---- construction and namespaces --------------------------------------------------------------

kernel::kernel(kernel_config config) : config_(std::move(config)) {
  if (config_.pid_max < 2 || config_.pid_max > PID_MAX_LIMIT) {
    detail::report_contract_violation(
        "kernel",
        fmt::format("kernel '{}': pid_max {} is outside [2, PID_MAX_LIMIT]", config_.name,
                    config_.pid_max),
        std::source_location::current());
    config_.pid_max = PID_MAX_DEFAULT;
  }
  if (config_.reserved_pids < 1 || config_.reserved_pids >= config_.pid_max) {
    config_.reserved_pids = 1;
  }
  rcu_ = config_.rcu_backend_factory
             ? std::make_unique<rcu_domain>(config_.name + "/rcu", config_.rcu_backend_factory())
             : std::make_unique<rcu_domain>(config_.name + "/rcu");
  namespaces_.push_back(
      std::make_unique<pid_namespace>(*this, nullptr, config_.pid_max, config_.reserved_pids));
}

kernel::~kernel() {
  shutdown();
}

pid_namespace& kernel::create_pid_namespace(pid_namespace& parent) {
  if (parent.level() + 1 > MAX_PID_NS_LEVEL) {
    detail::report_contract_violation(
        "kernel",
        fmt::format("kernel '{}': pid namespaces nest at most {} deep", name(), MAX_PID_NS_LEVEL),
        std::source_location::current());
  }
  const std::lock_guard lock(namespaces_mutex_);
  namespaces_.push_back(
      std::make_unique<pid_namespace>(*this, &parent, config_.pid_max, config_.reserved_pids));
  return *namespaces_.back();
}

// ---- the task list ------------------------------------------------------------------------

void kernel::list_add(task_struct* t) {
  t->priv.prev = nullptr;
  t->priv.next = tasks_;
  if (tasks_ != nullptr) {
    tasks_->priv.prev = t;
  }
  tasks_ = t;
}

void kernel::list_del(task_struct* t) {
  if (t->priv.prev != nullptr) {
    t->priv.prev->priv.next = t->priv.next;
  } else if (tasks_ == t) {
    tasks_ = t->priv.next;
  }
  if (t->priv.next != nullptr) {
    t->priv.next->priv.prev = t->priv.prev;
  }
  t->priv.prev = nullptr;
  t->priv.next = nullptr;
}

namespace {

void link_child(task_struct* parent, task_struct* child) {
  child->real_parent = parent;
  child->priv.sibling_prev = nullptr;
  child->priv.sibling_next = parent->priv.children;
  if (parent->priv.children != nullptr) {
    parent->priv.children->priv.sibling_prev = child;
  }
  parent->priv.children = child;
}

void unlink_child(task_struct* child) {
  task_struct* parent = child->real_parent;
  if (parent == nullptr) {
    return;
  }
  if (child->priv.sibling_prev != nullptr) {
    child->priv.sibling_prev->priv.sibling_next = child->priv.sibling_next;
  } else {
    parent->priv.children = child->priv.sibling_next;
  }
  if (child->priv.sibling_next != nullptr) {
    child->priv.sibling_next->priv.sibling_prev = child->priv.sibling_prev;
  }
  child->priv.sibling_prev = nullptr;
  child->priv.sibling_next = nullptr;
  child->real_parent = nullptr;
}

}  // namespace

// ---- holder tracking ------------------------------------------------------------------------

namespace {
std::string_view counter_name(holder_counter c) {
  return c == holder_counter::usage ? "usage" : "rcu_users";
}
}  // namespace

void kernel::track_get(task_struct* t, holder_counter counter, holder_role role,
                       std::string_view label, std::source_location where) {
  if (!t->holders_tracked) {
    return;
  }
  const holder_info info{next_holder_id_.fetch_add(1, std::memory_order_relaxed), counter, role,
                         label, where};
  const std::lock_guard lock(holders_mutex_);
  holders_[t].push_back(holder_entry{info, true, {}});
}

bool kernel::track_put(task_struct* t, holder_counter counter, holder_role role,
                       std::string_view op, std::source_location where) {
  if (!t->holders_tracked) {
    return true;
  }
  std::string report;
  {
    const std::lock_guard lock(holders_mutex_);
    std::vector<holder_entry>& entries = holders_[t];
    // The most recent live holder of this counter with this role: the lifecycle's
    // own references are released only by their own owners.
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      if (it->live && it->info.counter == counter && it->info.role == role) {
        it->live = false;
        it->dropped_at = where;
        return true;
      }
    }
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      if (!it->live && it->info.counter == counter && it->info.role == role) {
        report = fmt::format(
            "{}: reference already released: {} of task '{}' (pid {}) was taken by {} at {}:{} "
            "and released at {}:{}",
            op, counter_name(counter), t->comm, t->pid, it->info.label,
            it->info.taken_at.file_name(), it->info.taken_at.line(), it->dropped_at.file_name(),
            it->dropped_at.line());
        break;
      }
    }
    if (report.empty()) {
      report = fmt::format("{}: no tracked {} reference of task '{}' (pid {}) to release", op,
                           counter_name(counter), t->comm, t->pid);
    }
  }
  detail::report_contract_violation("holders", std::move(report), where);
  return false;
}

std::vector<holder_info> kernel::holders(const task_struct* t) const {
  std::vector<holder_info> out;
  const std::lock_guard lock(holders_mutex_);
  const auto it = holders_.find(t);
  if (it != holders_.end()) {
    for (const holder_entry& e : it->second) {
      if (e.live) {
        out.push_back(e.info);
      }
    }
  }
  return out;
}

std::string kernel::format_holders(const task_struct* t) const {
  const std::vector<holder_info> live = holders(t);
  std::string out;
  for (holder_counter counter : {holder_counter::rcu_users, holder_counter::usage}) {
    std::size_t total = 0;
    for (const holder_info& h : live) {
      total += h.counter == counter ? 1U : 0U;
    }
    // Group by (label, site), in order of first appearance.
    std::vector<std::pair<const holder_info*, std::size_t>> groups;
    for (const holder_info& h : live) {
      if (h.counter != counter) {
        continue;
      }
      bool merged = false;
      for (auto& [first, count] : groups) {
        if (first->label == h.label && first->taken_at.line() == h.taken_at.line() &&
            std::string_view(first->taken_at.file_name()) == h.taken_at.file_name()) {
          ++count;
          merged = true;
          break;
        }
      }
      if (!merged) {
        groups.emplace_back(&h, 1);
      }
    }
    for (const auto& [first, count] : groups) {
      out += fmt::format("{}{} has {}/{} users at {} ({}:{})", out.empty() ? "" : "; ",
                         counter_name(counter), count, total, first->label,
                         first->taken_at.file_name(), first->taken_at.line());
    }
  }
  return out;
}

bool kernel::owns_live_task(const task_struct* t) const {
  const std::lock_guard lock(tasklist_lock_);
  for (task_struct* p = tasks_; p != nullptr; p = p->priv.next) {
    if (p == t) {
      return true;
    }
  }
  return false;
}

// ---- fork ------------------------------------------------------------------------------------

fork_result kernel::fork(task_struct* parent, const clone_args& args, std::source_location where) {
  if (parent != nullptr && !detail::check_task(parent, "fork", where)) {
    return {nullptr, -EINVAL};
  }
  if (args.thread && parent == nullptr) {
    detail::report_contract_violation("kernel", "fork(CLONE_THREAD) needs a parent task", where);
    return {nullptr, -EINVAL};
  }
  pid_namespace* ns = parent != nullptr ? detail::creation_ns(parent) : &init_pid_ns();

  // dup_task_struct: "one for the rcu users" and the two rcu users.
  auto* t = new task_struct;
  if constexpr (contract_checks_enabled) {
    const std::lock_guard lock(known_mutex_);
    known_.insert(t);
  }
  refcount_set(&t->usage, 1);
  refcount_set(&t->rcu_users, 2);
  t->priv.owner = this;
  t->priv.id = next_id_.fetch_add(1, std::memory_order_relaxed);
  t->priv.magic.store(detail::task_alive_magic, std::memory_order_relaxed);
  t->traced.store(config_.record_history || args.trace, std::memory_order_relaxed);
  t->holders_tracked = config_.track_holders;
  if (t->holders_tracked || t->traced.load(std::memory_order_relaxed)) {
    // Before the task is published (hashed) and handed to anyone: every later
    // operation on it sees the flag.
    any_task_slow_.store(true, std::memory_order_release);
  }
  track_get(t, holder_counter::rcu_users, holder_role::reaper, "fork: the reaper's release_task",
            where);
  track_get(t, holder_counter::rcu_users, holder_role::scheduler,
            "fork: the scheduler's final switch", where);
  track_get(t, holder_counter::usage, holder_role::rcu_users_group, "fork: the rcu_users group",
            where);
  t->priv.autoreap = args.autoreap || args.thread;
  const char* comm = args.comm != nullptr ? args.comm : (parent != nullptr ? parent->comm : "init");
  std::strncpy(t->comm, comm, TASK_COMM_LEN - 1);

  auto fail = [&](int error) -> fork_result {
    // delayed_free_task: the counters were never used. With CONFIG_MEMCG the free
    // waits for a grace period (memcg may have looked at the task).
    fork_failures_.fetch_add(1, std::memory_order_relaxed);
    record(t, task_event_kind::fork_failed, {}, where);
    if (config_.memcg) {
      rcu_->call_rcu(
          &t->rcu,
          [](rcu_head* rhp) {
            task_struct* dead = detail::task_of_rcu(rhp);
            task_kernel(dead).free_task(dead, std::source_location::current(), true);
          },
          where);
    } else {
      free_task(t, where, true);
    }
    return {nullptr, error};
  };

  if (args.fail == fork_failure::before_pid_alloc) {
    return fail(-ENOMEM);
  }
  if (args.new_pid_ns) {
    // copy_namespaces -> create_pid_namespace, after dup_task_struct: too deep a
    // nesting fails the fork with -ENOSPC and the task is freed like any failure.
    if (ns->level() + 1 > MAX_PID_NS_LEVEL) {
      return fail(-ENOSPC);
    }
    ns = &create_pid_namespace(*ns);
  }
  // alloc_pid: a number at every level, from the new task's namespace up to the root.
  t->priv.numbers.resize(ns->level() + 1U);
  for (pid_namespace* p = ns; p != nullptr; p = p->parent()) {
    const pid_t nr = p->alloc_nr();
    if (nr < 0) {
      for (unsigned l = p->level() + 1; l <= ns->level(); ++l) {
        t->priv.numbers[l].ns->free_nr(t->priv.numbers[l].nr);
      }
      t->priv.numbers.clear();
      return fail(nr);
    }
    t->priv.numbers[p->level()] = upid{nr, p};
  }
  t->pid = t->priv.numbers[0].nr;
  if (args.fail == fork_failure::after_pid_alloc) {
    for (const upid& u : t->priv.numbers) {
      u.ns->free_nr(u.nr);
    }
    t->priv.numbers.clear();
    return fail(-ENOMEM);
  }
  t->tgid = args.thread ? parent->tgid : t->pid;
  t->group_leader = args.thread ? parent->group_leader : t;

  {
    // attach_pid + the task lists, under tasklist_lock as in copy_process.
    const std::lock_guard lock(tasklist_lock_);
    list_add(t);
    t->priv.on_list = true;
    if (parent != nullptr) {
      link_child(parent, t);
    }
    for (const upid& u : t->priv.numbers) {
      u.ns->hash(u.nr, t);
    }
  }
  if (t->priv.numbers.back().nr == 1) {
    ns->set_child_reaper(t);
  }
  forked_.fetch_add(1, std::memory_order_relaxed);
  record(t, task_event_kind::fork, {}, where);
  task_newtask_.fire(t);
  return {t, 0};
}

// ---- exit ------------------------------------------------------------------------------------

void kernel::do_exit(task_struct* t, int code, std::source_location where) {
  if (!detail::check_task(t, "do_exit", where)) {
    return;
  }
  // Release: the exit is published to whoever later reads flags with acquire.
  const unsigned old_flags = t->flags.fetch_or(PF_EXITING, std::memory_order_acq_rel);
  if ((old_flags & PF_EXITING) != 0) {
    detail::report_contract_violation(
        "kernel",
        fmt::format("do_exit() on task '{}' (pid {}) of kernel '{}', which is already exiting",
                    t->comm, t->pid, name()),
        where);
    return;
  }
  t->exit_code = code;
  record(t, task_event_kind::exit, {}, where);
  sched_process_exit_.fire(t);
  exit_notify(t, where);
  // do_task_dead: the last thing do_exit does; the final switch follows. Release
  // pairs with the acquire in finish_task_switch.
  t->state.store(TASK_DEAD, std::memory_order_release);
  record(t, task_event_kind::task_dead, {}, where);
}

void kernel::forget_children(task_struct* t) {
  // find_new_reaper: the init of the *exiting parent's* namespace, unless that is
  // the one exiting (a child that is pid 1 of its own new namespace must not be
  // handed to itself). Without a reaper the orphan has no parent; anyone may reap it.
  task_struct* reaper = detail::creation_ns(t)->child_reaper();
  if (reaper == t ||
      (reaper != nullptr && (reaper->flags.load(std::memory_order_acquire) & PF_EXITING) != 0)) {
    reaper = nullptr;
  }
  while (task_struct* child = t->priv.children) {
    unlink_child(child);
    if (reaper != nullptr) {
      link_child(reaper, child);
    }
  }
}

void kernel::exit_notify(task_struct* t, std::source_location where) {
  bool autoreap = false;
  {
    const std::lock_guard lock(tasklist_lock_);
    forget_children(t);
    autoreap = t->priv.autoreap;
    // Release: pairs with the acquire CAS in wait_task_zombie.
    t->exit_state.store(autoreap ? EXIT_DEAD : EXIT_ZOMBIE, std::memory_order_release);
  }
  pid_namespace* ns = detail::creation_ns(t);
  if (ns->child_reaper() == t) {
    ns->set_child_reaper(nullptr);
  }
  if (autoreap) {
    record(t, task_event_kind::autoreap, {}, where);
    release_task(t, where);  // while the task still runs: it is unhashed now
  } else {
    record(t, task_event_kind::zombie, {}, where);
  }
}

void kernel::finish_task_switch(task_struct* prev, std::source_location where) {
  if (!detail::check_task(prev, "finish_task_switch", where)) {
    return;
  }
  // Acquire pairs with the release of TASK_DEAD in do_exit.
  if (prev->state.load(std::memory_order_acquire) != TASK_DEAD) {
    detail::report_contract_violation(
        "kernel",
        fmt::format("finish_task_switch() away from task '{}' (pid {}) of kernel '{}', which is "
                    "not TASK_DEAD: only a dead task's final switch drops its rcu_users",
                    prev->comm, prev->pid, name()),
        where);
    return;
  }
  if (prev->priv.final_switch_done.exchange(true, std::memory_order_acq_rel)) {
    detail::report_contract_violation(
        "kernel",
        fmt::format("a second final finish_task_switch() away from dead task '{}' (pid {})",
                    prev->comm, prev->pid),
        where);
    return;
  }
  if (prev->traced.load(std::memory_order_relaxed)) {
    record(prev, task_event_kind::final_switch, refcount_read(&prev->usage),
           refcount_read(&prev->rcu_users) - 1U, {}, where);
  }
  detail::put_rcu_user_as(prev, holder_role::scheduler, where);  // the scheduler's drop
}

bool kernel::wait_task_zombie(task_struct* p, std::source_location where) {
  if (!detail::check_task(p, "wait_task_zombie", where)) {
    return false;
  }
  int expected = EXIT_ZOMBIE;
  // Only one waiter wins EXIT_ZOMBIE -> EXIT_DEAD. Acquire pairs with exit_notify.
  if (!p->exit_state.compare_exchange_strong(expected, EXIT_DEAD, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
    return false;
  }
  record(p, task_event_kind::reap, {}, where);
  release_task(p, where);
  return true;
}

bool kernel::retire(task_struct* t, int code, std::source_location where) {
  if (!detail::check_task(t, "retire", where)) {
    return false;
  }
  if ((t->flags.load(std::memory_order_acquire) & PF_EXITING) != 0) {
    do_exit(t, code, where);  // reports the second exit
    return false;
  }
  do_exit(t, code, where);
  // Read before the final switch: afterwards an autoreaped task's last rcu_users
  // reference is gone and only a grace period stands between it and the free.
  const bool reaped_by_exit = t->exit_state.load(std::memory_order_acquire) == EXIT_DEAD;
  finish_task_switch(t, where);
  if (!reaped_by_exit) {
    wait_task_zombie(t, where);
  }
  return true;
}

void kernel::release_task(task_struct* p, std::source_location where) {
  {
    // __exit_signal -> __unhash_process: detach from every pid level and the
    // family, under tasklist_lock. After this no lookup can newly find p.
    const std::lock_guard lock(tasklist_lock_);
    unlink_child(p);
    for (const upid& u : p->priv.numbers) {
      u.ns->unhash(u.nr, p);
    }
    // detach_pid cleared thread_pid: no number, no namespace any more. Release
    // pairs with the acquire in task_pid_nr_ns / task_active_pid_ns.
    p->priv.pid_detached.store(true, std::memory_order_release);
  }
  for (const upid& u : p->priv.numbers) {
    u.ns->free_nr(u.nr);  // free_pid: the number may be handed out again right away
  }
  record(p, task_event_kind::unhash, {}, where);
  // Only now the reaper's rcu_users drop: the unhash always comes first.
  if (p->traced.load(std::memory_order_relaxed)) {
    record(p, task_event_kind::rcu_user_put, refcount_read(&p->usage),
           refcount_read(&p->rcu_users) - 1U, {}, where);
  }
  detail::put_rcu_user_as(p, holder_role::reaper, where);
}

// ---- the grace period and the free --------------------------------------------------------

void kernel::on_rcu_users_zero(task_struct* t, std::source_location where) {
  rcu_users_zero_.fetch_add(1, std::memory_order_relaxed);
  if constexpr (contract_checks_enabled) {
    if (t->priv.rcu_users_zero_seen.exchange(true, std::memory_order_relaxed)) {
      detail::report_contract_violation(
          "task",
          fmt::format("rcu_users of task '{}' (pid {}) reached 0 a second time", t->comm, t->pid),
          where);
      return;
    }
  }
  record(t, task_event_kind::gp_requested, {}, where);
  if (rcu_users_in_union(config_.profile)) {
    // v5.4 .. v6.3: `union { refcount_t rcu_users; struct rcu_head rcu; }`. call_rcu
    // writes the head: its `next` (whose low half is rcu_users' storage) starts
    // NULL, and becomes the address of the next head queued behind it on the same
    // CPU's callback list. tasklife models that list with one tail per kernel:
    // queuing this task's callback writes this head's address into the previous
    // tail's rcu_users, which is how "rcu_users became non-zero again" on a dead
    // task (Matus Jokay's report, Dec 2022).
    const std::lock_guard lock(union_mutex_);
    refcount_set(&t->rcu_users, 0);  // head->next = NULL
    if (union_tail_ != nullptr) {
      const auto next = reinterpret_cast<std::uintptr_t>(&t->rcu);
      refcount_set(&union_tail_->rcu_users, static_cast<int>(static_cast<std::uint32_t>(next)));
    }
    union_tail_ = t;
  }
  rcu_->call_rcu(&t->rcu, &delayed_put_task_struct, where);
}

void kernel::on_delayed_put(task_struct* t) {
  if (rcu_users_in_union(config_.profile)) {
    const std::lock_guard lock(union_mutex_);
    if (union_tail_ == t) {
      union_tail_ = nullptr;  // the head leaves the list before the task can be freed
    }
  }
  gp_elapsed_.fetch_add(1, std::memory_order_relaxed);
  record(t, task_event_kind::gp_elapsed, {}, std::source_location::current());
  sched_process_free_.fire(t);
}

void kernel::free_task(task_struct* t, std::source_location where, bool fork_failure) {
  if (t->holders_tracked) {
    const std::lock_guard lock(holders_mutex_);
    holders_.erase(t);
  }
  if (t->priv.on_list) {
    const std::lock_guard lock(tasklist_lock_);
    list_del(t);
    t->priv.on_list = false;
  }
  if (!fork_failure) {
    freed_.fetch_add(1, std::memory_order_relaxed);
    record(t, task_event_kind::free, {}, where);
  }
  if constexpr (debug_checks_enabled) {
    t->priv.freed_where = where;
    t->priv.freed_by_fork_failure = fork_failure;
    {
      const std::lock_guard lock(history_mutex_);
      t->priv.freed_event = event_seq_;
    }
    quarantine(t);
  } else {
    forget_task(t);
  }
}

void kernel::forget_task(task_struct* t) noexcept {
  if constexpr (contract_checks_enabled) {
    const std::lock_guard lock(known_mutex_);
    known_.erase(t);
  }
  delete t;
}

bool kernel::knows_task(const task_struct* t) const {
  if constexpr (contract_checks_enabled) {
    const std::lock_guard lock(known_mutex_);
    return known_.contains(t);
  } else {
    return t != nullptr;
  }
}

void kernel::quarantine(task_struct* t) {
  // Poison what the kernel's slab would (POISON_FREE), keep identity and the
  // freeing event in priv for the report, and hide the rest from raw access
  // under ASan.
  refcount_set(&t->usage, static_cast<int>(detail::task_freed_magic));
  refcount_set(&t->rcu_users, static_cast<int>(detail::task_freed_magic));
  t->flags.store(detail::task_freed_magic, std::memory_order_relaxed);
  t->state.store(detail::task_freed_magic, std::memory_order_relaxed);
  t->priv.magic.store(detail::task_freed_magic, std::memory_order_relaxed);
  TASKLIFE_ASAN_POISON(t, offsetof(task_struct, pid));

  task_struct* evicted = nullptr;
  {
    const std::lock_guard lock(quarantine_mutex_);
    t->priv.quarantine_next = nullptr;
    if (quarantine_tail_ != nullptr) {
      quarantine_tail_->priv.quarantine_next = t;
    } else {
      quarantine_head_ = t;
    }
    quarantine_tail_ = t;
    ++quarantine_size_;
    if (quarantine_size_ > config_.quarantine_capacity) {
      evicted = quarantine_head_;
      quarantine_head_ = evicted->priv.quarantine_next;
      if (quarantine_head_ == nullptr) {
        quarantine_tail_ = nullptr;
      }
      --quarantine_size_;
    }
  }
  if (evicted != nullptr) {
    TASKLIFE_ASAN_UNPOISON(evicted, offsetof(task_struct, pid));
    forget_task(evicted);
  }
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
  {
    const std::lock_guard lock(const_cast<std::mutex&>(quarantine_mutex_));
    s.quarantined = quarantine_size_;
  }
  return s;
}

std::vector<leaked_task> kernel::allocated_tasks() const {
  std::vector<leaked_task> out;
  const std::lock_guard lock(tasklist_lock_);
  for (task_struct* t = tasks_; t != nullptr; t = t->priv.next) {
    out.push_back(leaked_task{t->priv.id, t->pid, t->comm, refcount_read(&t->usage),
                              refcount_read(&t->rcu_users),
                              t->exit_state.load(std::memory_order_relaxed),
                              t->state.load(std::memory_order_relaxed), std::string()});
  }
  return out;
}

std::vector<leaked_task> kernel::allocated_tasks_with_holders() const {
  std::vector<leaked_task> out = allocated_tasks();
  const std::lock_guard lock(tasklist_lock_);
  for (leaked_task& l : out) {
    for (task_struct* t = tasks_; t != nullptr; t = t->priv.next) {
      if (t->priv.id == l.id && t->holders_tracked) {
        l.holders = format_holders(t);
        break;
      }
    }
  }
  return out;
}

std::vector<leaked_task> kernel::shutdown() {
  if (shut_down_) {
    return {};
  }
  shut_down_ = true;
  if (current_scopes_.load(std::memory_order_relaxed) != 0) {
    detail::report_contract_violation_noexcept(
        "kernel",
        fmt::format("kernel '{}' shut down while {} thread(s) still run as one of its tasks",
                    name(), current_scopes_.load(std::memory_order_relaxed)),
        std::source_location::current());
  }
  // Every pending callback first (delayed_put -> put -> deferred free is a chain).
  // A teardown that cannot wait (inside a read-side section, or from a callback)
  // would free tasks under pending callbacks: that is fatal, not reportable.
  try {
    rcu_->rcu_barrier();
  } catch (...) {
    detail::report_contract_violation_noexcept(
        "kernel",
        fmt::format("kernel '{}' torn down where it cannot wait for its RCU callbacks", name()),
        std::source_location::current());
    std::abort();
  }
  std::vector<leaked_task> leaks = allocated_tasks_with_holders();
  for (const leaked_task& l : leaks) {
    detail::report_contract_violation_noexcept(
        "kernel",
        fmt::format("leak: kernel '{}' torn down with task '{}' (pid {}, id {}) never freed: "
                    "usage={} rcu_users={} exit_state={:#x} state={:#x}{}{}",
                    name(), l.comm, l.pid, l.id, static_cast<int>(l.usage),
                    static_cast<int>(l.rcu_users), l.exit_state, l.state,
                    l.holders.empty() ? "" : "; ", l.holders),
        std::source_location::current());
  }
  {
    const std::lock_guard lock(holders_mutex_);
    holders_.clear();
  }
  {
    const std::lock_guard lock(tasklist_lock_);
    while (task_struct* t = tasks_) {
      list_del(t);
      forget_task(t);
      torn_down_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  {
    const std::lock_guard lock(quarantine_mutex_);
    while (task_struct* t = quarantine_head_) {
      quarantine_head_ = t->priv.quarantine_next;
      TASKLIFE_ASAN_UNPOISON(t, offsetof(task_struct, pid));
      forget_task(t);
    }
    quarantine_tail_ = nullptr;
    quarantine_size_ = 0;
  }
  return leaks;
}

// ---- current ----------------------------------------------------------------------------------

task_struct* get_current() noexcept {
  return detail::tls_ctx.task;
}

namespace {
rcu_domain& domain_of_checked(task_struct* t, std::source_location where) {
  if (!detail::check_task(t, "run_as", where)) {
    throw std::invalid_argument("run_as: not a live task");  // only reached if the handler returns
  }
  return task_kernel(t).rcu();
}
}  // namespace

current_task_scope::current_task_scope(task_struct* t, std::source_location where)
    : task_(t),
      kernel_(nullptr),
      saved_(detail::tls_ctx),
      registration_(domain_of_checked(t, where), where) {
  kernel& k = task_kernel(t);
  kernel_ = &k;
  // The program run (if any) stays: a scope only changes who current is.
  detail::tls_ctx.task = t;
  detail::tls_ctx.owner = &k;
  detail::tls_ctx.profile = k.config().profile;
  detail::tls_ctx.rcu = &k.rcu();
  detail::tls_ctx.init_ns = &k.init_pid_ns();
  detail::tls_ctx.init_table = k.init_pid_ns().table();
  detail::tls_ctx.init_pid_max = k.init_pid_ns().pid_max();
  k.current_scopes_.fetch_add(1, std::memory_order_relaxed);
}

current_task_scope::~current_task_scope() {
  kernel_->current_scopes_.fetch_sub(1, std::memory_order_relaxed);
  detail::current_context restored = saved_;
  restored.run = detail::tls_ctx.run;  // bpf_prog::run owns that field
  detail::tls_ctx = restored;
}

current_task_scope kernel::run_as(task_struct* t, std::source_location where) {
  return current_task_scope(t, where);
}

}  // namespace tasklife
