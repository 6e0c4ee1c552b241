// current: the thread-local context and current_task_scope (current.hpp).
#include <algorithm>
#include <vector>

#include <tasklife/current.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>

#include "task_internal.hpp"

namespace tasklife {
namespace detail {
constinit thread_local current_context tls_ctx{
    nullptr, nullptr, semantics_profile::current, false, nullptr, nullptr, pid_lookup{}};

std::atomic<std::uint64_t> orphaned_scope_epoch{0};

namespace {
// The anchors of this OS thread's live scopes, innermost last.
thread_local std::vector<const scope_anchor*> tls_scope_anchors;
}  // namespace

std::size_t scopes_on_this_thread(const scope_anchor* anchor) noexcept {
  return static_cast<std::size_t>(
      std::count(tls_scope_anchors.begin(), tls_scope_anchors.end(), anchor));
}
}  // namespace detail

task_struct* get_current() noexcept {
  return detail::tls_ctx.task;
}

current_task_scope::current_task_scope(inert_tag) noexcept : saved_(detail::tls_ctx) {}

current_task_scope::current_task_scope(task_struct* t, std::source_location where)
    : saved_(detail::tls_ctx) {
  if (!detail::check_known_task(t, "kernel", "run_as", where)) {
    return;  // the handler returned: an inert scope, the thread's context unchanged
  }
  kernel& k = task_kernel(t);
  registration_.emplace(k.rcu(), where);
  detail::tls_scope_anchors.push_back(k.scopes_.get());
  task_ = t;
  anchor_ = k.scopes_.get();
  // Relaxed: compared with itself at the end; a teardown that bumps it also
  // resets what it must on this thread.
  epoch_ = detail::orphaned_scope_epoch.load(std::memory_order_relaxed);
  // The program run (if any) stays: a scope only changes who current is.
  detail::current_context& ctx = detail::tls_ctx;
  ctx.task = t;
  ctx.owner = &k;
  ctx.profile = k.config().profile;
  // Never under the explorer: the fast paths announce no scheduling points.
  ctx.inline_fast_path = info(ctx.profile).inline_fast_path && detail::tls_sim == nullptr;
  ctx.rcu = &k.rcu();
  ctx.init_lookup = detail::pid_lookup(k.init_pid_ns());
  // Sequentially consistent: see the teardown's wait (kernel.cpp).
  anchor_->count.fetch_add(1, std::memory_order_seq_cst);
}

current_task_scope::~current_task_scope() {
  if (anchor_ == nullptr) {
    return;  // inert
  }
  auto& mine = detail::tls_scope_anchors;
  const auto it = std::find(mine.rbegin(), mine.rend(), anchor_);
  if (it != mine.rend()) {
    mine.erase(std::next(it).base());
  }
  detail::current_context restored = saved_;
  restored.run = detail::tls_ctx.run;  // bpf_prog::run owns that field
  if (detail::orphaned_scope_epoch.load(std::memory_order_relaxed) != epoch_ &&
      restored.owner != nullptr && !detail::kernel_alive(restored.owner)) [[unlikely]] {
    // The context this scope saved names a kernel destroyed since: no current.
    restored = detail::current_context{
        nullptr, nullptr, semantics_profile::current, false, restored.run, nullptr, {}};
  }
  detail::tls_ctx = restored;
  // Sequentially consistent, then the waiters: a teardown waiting for this scope
  // either sees the decrement or has announced itself before this load.
  anchor_->count.fetch_sub(1, std::memory_order_seq_cst);
  if (anchor_->waiters.load(std::memory_order_seq_cst) != 0) {
    anchor_->count.notify_all();
  }
}

current_task_scope kernel::run_as(task_struct* t, std::source_location where) {
  if (!check_own_task(t, "run_as", where)) {
    return current_task_scope(current_task_scope::inert_tag{});
  }
  return current_task_scope(t, where);
}

}  // namespace tasklife
