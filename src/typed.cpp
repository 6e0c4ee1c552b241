// The typed API's out-of-line half (typed.hpp): the run-time half of its rules.
#include <fmt/format.h>

#include <tasklife/typed.hpp>

#include "task_internal.hpp"

namespace tasklife {
namespace detail {

void report_typed(const char* what, const task_struct* t, std::source_location where,
                  std::source_location acquired_at) noexcept {
  std::string message = what;
  if (t != nullptr) {
    message += fmt::format(" (task '{}', pid {})", t->comm, t->pid);
  }
  message += fmt::format("; the reference was acquired at {}:{}", acquired_at.file_name(),
                         acquired_at.line());
  report_contract_violation_noexcept("typed", std::move(message), where);
}

bool current_rcu_held() noexcept {
  const task_struct* cur = get_current();
  return cur != nullptr && task_kernel(cur).rcu().rcu_read_lock_held();
}

}  // namespace detail

trusted_ptr<task_struct> typed_current(std::source_location where) noexcept {
  return trusted_ptr<task_struct>(tasklife::bpf_get_current_task_btf(where));
}

void typed_release(owned_ref<task_struct>&& ref, std::source_location where) {
  task_struct* p = std::exchange(ref.p_, nullptr);
  if (p == nullptr) {
    detail::report_typed("bpf_task_release of a moved-from reference (already released or stored)",
                         nullptr, where, ref.acquired_at_);
    return;
  }
  tasklife::bpf_task_release(p, where);
}

maybe_ref<task_struct> typed_xchg(kptr<task_struct>* slot, owned_ref<task_struct>&& p,
                                  std::source_location where) {
  task_struct* in = std::exchange(p.p_, nullptr);
  if (in == nullptr) {
    detail::report_typed("bpf_kptr_xchg of a moved-from reference (already released or stored)",
                         nullptr, where, p.acquired_at_);
    return make_maybe_ref(nullptr, where);
  }
  return make_maybe_ref(tasklife::bpf_kptr_xchg(slot, in, where), where);
}

}  // namespace tasklife
