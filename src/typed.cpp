// The typed API's out-of-line half (typed.hpp): the run-time half of its rules.
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <tasklife/current.hpp>
#include <tasklife/typed.hpp>

#include "prog_internal.hpp"
#include "task_internal.hpp"
#include "thread_state.hpp"

namespace tasklife {
namespace detail {

void report_typed(contract_kind kind, const char* op, const char* what, const task_struct* t,
                  std::source_location where, std::source_location acquired_at) noexcept try {
  std::string message = what;
  if (t != nullptr) {
    message += fmt::format(" (task '{}', pid {})", t->comm, t->pid);
  }
  message += fmt::format("; obtained at {}:{}", acquired_at.file_name(), acquired_at.line());
  contract_violation v{kind, "typed", op, describe_task(t), std::move(message), where};
  v.earlier = acquired_at;
  v.has_earlier = true;
  report_contract_violation_noexcept(v);
} catch (...) {  // formatting the message ran out of memory: nothing to report with
}

void drop_typed(task_struct* p, const char* op, const char* what,
                std::source_location acquired_at) noexcept {
  try {
    prog_run* const run = tls_ctx.run;
    // The program's violation when its run knew the reference (a checked run:
    // bpf_prog::run hides the run of an unchecked one).
    const bool reported_by_run = run != nullptr && run->dropped(p, what, acquired_at);
    if (!reported_by_run) {
      report_typed(contract_kind::unreleased_reference, op, what, p, acquired_at, acquired_at);
    }
    if (get_current() != nullptr) {
      // Released outside the run's sight: the run no longer holds it live, and
      // the checker must not see an unacquired release.
      prog_run* const hidden = std::exchange(tls_ctx.run, nullptr);
      try {
        tasklife::bpf_task_release(p);
      } catch (...) {
        tls_ctx.run = hidden;
        throw;
      }
      tls_ctx.run = hidden;
    } else {
      task_kptr_dtor(p);  // no current: the profile's destructor path
    }
  } catch (...) {
    report_contract_violation_noexcept(contract_kind::callback_failed, "typed", "drop_typed",
                                       describe_task(p), "releasing a dropped reference failed",
                                       std::source_location::current());
  }
}

namespace {
// The thread's live rcu_guards, innermost last (guards are scoped, so LIFO).
constinit thread_local std::uint64_t tls_next_guard = 1;
thread_local std::vector<std::uint64_t> tls_live_guards;
}  // namespace

std::uint64_t guard_enter() noexcept {
  const std::uint64_t id = tls_next_guard++;
  tls_live_guards.push_back(id);
  return id;
}

void guard_exit(std::uint64_t id) noexcept {
  std::erase(tls_live_guards, id);
}

bool guard_alive(std::uint64_t id) noexcept {
  for (auto it = tls_live_guards.rbegin(); it != tls_live_guards.rend(); ++it) {
    if (*it == id) {
      return true;
    }
  }
  return false;
}

}  // namespace detail

trusted_ptr<task_struct> typed_current(std::source_location where) noexcept {
  return trusted_ptr<task_struct>(tasklife::bpf_get_current_task_btf(where));
}

maybe_ref<task_struct> typed_xchg(kptr<task_struct>* slot, owned_ref<task_struct>&& p,
                                  std::source_location where) {
  task_struct* in = std::exchange(p.p_, nullptr);
  if (in == nullptr) {
    detail::report_typed(contract_kind::moved_from, "bpf_kptr_xchg",
                         "bpf_kptr_xchg of a moved-from reference (already released or stored)",
                         nullptr, where, p.acquired_at_);
    return make_maybe_ref(nullptr, where);
  }
  return make_maybe_ref(tasklife::bpf_kptr_xchg(slot, in, where), where);
}

checked_rcu_ptr<task_struct> walk_rcu_field(task_struct* base, task_struct* task_struct::*field,
                                            const rcu_guard& guard, std::source_location where) {
  task_struct* const value = base != nullptr ? tasklife::btf_walk(base, field, where) : nullptr;
  return checked_rcu_ptr<task_struct>(value, guard.id(), where);
}

namespace detail {
void swap_typed_thread_state(typed_thread_state& other) noexcept {
  std::swap(tls_next_guard, other.next_guard);
  tls_live_guards.swap(other.live_guards);
}
}  // namespace detail

}  // namespace tasklife
