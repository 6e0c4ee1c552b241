// current: the thread-local context and current_task_scope (current.hpp).
#include <stdexcept>

#include <tasklife/current.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>

#include "task_internal.hpp"

namespace tasklife {
namespace detail {
constinit thread_local current_context tls_ctx{
    nullptr, nullptr, semantics_profile::current, false, nullptr, nullptr, pid_lookup{}};
}  // namespace detail

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
  detail::current_context& ctx = detail::tls_ctx;
  ctx.task = t;
  ctx.owner = &k;
  ctx.profile = k.config().profile;
  // Never under the explorer: the fast paths announce no scheduling points.
  ctx.inline_fast_path = info(ctx.profile).inline_fast_path && detail::tls_sim == nullptr;
  ctx.rcu = &k.rcu();
  ctx.init_lookup = detail::pid_lookup(k.init_pid_ns());
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
