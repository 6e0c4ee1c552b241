// Programs and the run-time verifier (prog.hpp).
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include <tasklife/prog.hpp>

#include "observer.hpp"
#include "prog_internal.hpp"
#include "task_internal.hpp"

namespace tasklife {

namespace detail {

#if TASKLIFE_VERIFIER
void on_slot_read(const void* value) noexcept {
  if (prog_run* run = tls_ctx.run) {
    run->slot_read(value);
  }
}
#endif

prog_run::prog_run(kernel& k, const bpf_prog& prog, checker_mode mode)
    : kernel_(k), prog_(prog), mode_(mode) {}

void prog_run::report(violation_kind kind, std::string_view kfunc, const void* arg,
                      std::string message, std::source_location where) {
  violation v{kind, kfunc, arg, std::move(message), where};
  if (mode_ != checker_mode::off) {
    if (const thread_observer* o = tls_observer) {
      o->verifier(o->context, v);  // the explorer fails this path
    }
  }
  switch (mode_) {
    case checker_mode::off:
      return;
    case checker_mode::record:
      violations_.push_back(std::move(v));
      return;
    case checker_mode::throw_error:
      violations_.push_back(v);
      throw verifier_error(std::move(v));
    case checker_mode::abort:
      fmt::print(stderr, "tasklife: program '{}' violates the verifier's rules at {}:{}:\n  {}\n",
                 prog_.section(), where.file_name(), where.line(), v.message);
      std::fflush(stderr);
      std::abort();
  }
}

prog_run::reference* prog_run::live_ref(const void* p) {
  for (auto it = refs_.rbegin(); it != refs_.rend(); ++it) {
    if (it->live && it->task == p) {
      return &*it;
    }
  }
  return nullptr;
}

prog_run::reference* prog_run::last_released(const void* p, bool or_moved) {
  for (auto it = refs_.rbegin(); it != refs_.rend(); ++it) {
    if (!it->live && (or_moved || !it->moved) && it->task == p) {
      return &*it;
    }
  }
  return nullptr;
}

bool prog_run::check_call(kfunc_id id, std::source_location where) {
  if (kfunc_allowed(prog_.type(), id)) {
    return true;
  }
  report(violation_kind::kfunc_not_allowed, to_string(id), nullptr,
         fmt::format("calling kernel function {} is not allowed", to_string(id)), where);
  return false;
}

std::optional<prog_run::trust> prog_run::trust_of(const task_struct* p) const {
  const auto known = trust_.find(p);
  if (known == trust_.end()) {
    return std::nullopt;
  }
  return known->second;
}

const task_struct* prog_run::task_containing(const void* p) const {
  const auto inside = [p](const task_struct* t) {
    const auto* begin = reinterpret_cast<const char*>(t);
    const auto* at = static_cast<const char*>(p);
    return t != nullptr && at >= begin && at < begin + offsetof(task_struct, priv);
  };
  for (const auto& [value, how] : trust_) {
    if (inside(static_cast<const task_struct*>(value))) {
      return static_cast<const task_struct*>(value);
    }
  }
  for (const reference& r : refs_) {
    if (r.live && inside(r.task)) {
      return r.task;
    }
  }
  return nullptr;
}

bool prog_run::check_task_arg(kfunc_id id, const task_struct* p, kfunc_arg role,
                              std::source_location where) {
  const std::string_view name = to_string(id);
  if (role == kfunc_arg::helper_btf_id) {
    return check_helper_btf_id_arg(name, p, where);
  }
  // check_kfunc_args: the NULL test comes first (every KF_RCU or trusted argument,
  // which from 1a5c01d2508a is every argument), then the argument's type.
  if (p == nullptr) {
    report(violation_kind::null_arg, name, p, "Possibly NULL pointer passed to trusted arg0",
           where);
    return false;
  }
  if (!kernel_.knows_task(p)) {
    // Not a task at all (a stack address cast to task_struct*): the verifier
    // sees a PTR_TO_STACK where a struct pointer is expected and takes the
    // argument for memory (get_kfunc_ptr_arg_type).
    report(violation_kind::arg_type_mismatch, name, p,
           "arg#0 pointer type STRUCT task_struct must point to scalar, or struct with scalar",
           where);
    return false;
  }
  if (reference* r = live_ref(p)) {
    if (role != kfunc_arg::acquire && role != kfunc_arg::trusted) {
      r->live = false;  // the reference is consumed: released, or moved into a slot
      r->moved = role == kfunc_arg::xchg_in;
      r->released_at = where;
    }
    return true;
  }
  const std::optional<trust> known = trust_of(p);
  const reference* released = last_released(p);
  const bool only_released = released != nullptr && (!known || *known == trust::untrusted);
  switch (role) {
    case kfunc_arg::acquire: {
      const bool kf_rcu = (kfunc_flags(kernel_.config().profile, id) & KF_RCU) != 0;
      if (known && (*known == trust::trusted || (*known == trust::rcu && kf_rcu))) {
        return true;
      }
      if (only_released) {
        report(violation_kind::use_after_release, name, p,
               fmt::format("R1 invalid mem access 'scalar' (reference id={} to this task was "
                           "released at {}:{})",
                           released->id, released->released_at.file_name(),
                           released->released_at.line()),
               where);
        return false;
      }
      report(violation_kind::untrusted_arg, name, p,
             kf_rcu ? "R1 must be a rcu pointer" : "R1 must be referenced or trusted", where);
      return false;
    }
    case kfunc_arg::release:
      // A released reference of this value and no live one: a second release,
      // whatever else the value is (the trusted argument acquired and released
      // twice is still a double release).
      if (released != nullptr) {
        report(violation_kind::double_release, name, p,
               fmt::format("release kernel function {} expects refcounted PTR_TO_BTF_ID "
                           "(reference id={} acquired by {} at {}:{} was already released at "
                           "{}:{})",
                           name, released->id, released->kfunc, released->acquired_at.file_name(),
                           released->acquired_at.line(), released->released_at.file_name(),
                           released->released_at.line()),
               where);
      } else if (known && (*known == trust::trusted || *known == trust::trusted_not_rcu_safe)) {
        report(violation_kind::release_unacquired, name, p,
               fmt::format("release kernel function {} expects refcounted PTR_TO_BTF_ID", name),
               where);
      } else {
        report(violation_kind::release_untrusted, name, p, "R1 must be referenced or trusted",
               where);
      }
      return false;
    case kfunc_arg::none:
      return true;  // no task argument to check
    case kfunc_arg::trusted:
      // check_kfunc_args: a trusted argument without KF_RCU takes neither an RCU
      // nor an untrusted pointer.
      if (known && (*known == trust::trusted || *known == trust::trusted_not_rcu_safe)) {
        return true;
      }
      if (only_released) {
        report(violation_kind::use_after_release, name, p,
               fmt::format("R2 invalid mem access 'scalar' (reference id={} to this task was "
                           "released at {}:{})",
                           released->id, released->released_at.file_name(),
                           released->released_at.line()),
               where);
        return false;
      }
      report(violation_kind::untrusted_arg, name, p, "R2 must be referenced or trusted", where);
      return false;
    case kfunc_arg::xchg_in:
      report(violation_kind::xchg_unreferenced, name, p,
             "R2 must be referenced when passed to release function", where);
      return false;
    case kfunc_arg::helper_btf_id:
      break;  // checked above
  }
  return false;
}

// check_reg_type for a helper's ARG_PTR_TO_BTF_ID_OR_NULL: btf_ptr_types takes a
// legacy (ptr_), trusted or RCU pointer, and NULL. A reference released or moved
// into a slot is a scalar by then (mark_reg_invalid), whatever became of the task;
// a pointer that is no task is taken for the stack's fp (checked builds only: the
// unchecked tier keeps no registry of tasks).
bool prog_run::check_helper_btf_id_arg(std::string_view name, const task_struct* p,
                                       std::source_location where) {
  if (p == nullptr || live_ref(p) != nullptr) {
    return true;  // the helper's own "if (!task)"; a reference is trusted
  }
  constexpr std::string_view expected = "expected=ptr_, trusted_ptr_, rcu_ptr_";
  const std::optional<trust> known = trust_of(p);
  const reference* consumed = last_released(p, /*or_moved=*/true);
  if (consumed != nullptr && (!known || *known == trust::untrusted)) {
    report(violation_kind::use_after_release, name, p,
           fmt::format("R2 type=scalar {} (reference id={} to this task was {} at {}:{})", expected,
                       consumed->id, consumed->moved ? "moved into a slot" : "released",
                       consumed->released_at.file_name(), consumed->released_at.line()),
           where);
    return false;
  }
  if (!kernel_.knows_task(p)) {
    report(violation_kind::arg_type_mismatch, name, p, fmt::format("R2 type=fp {}", expected),
           where);
    return false;
  }
  if (known && *known == trust::untrusted) {
    report(violation_kind::untrusted_arg, name, p,
           fmt::format("R2 type=untrusted_ptr_ {}", expected), where);
    return false;
  }
  return true;  // trusted, RCU, legacy, or a load the checker never saw (a legacy ptr_)
}

bool prog_run::check_mem_arg(kfunc_id id, unsigned regno, const void* p, std::size_t size,
                             bool write, std::source_location where) {
  const task_struct* t = task_containing(p);
  if (t == nullptr) {
    return true;  // the program's own memory (its stack, a map value): not modelled
  }
  const std::string_view name = to_string(id);
  const bool referenced = live_ref(t) != nullptr;
  const std::optional<trust> known = trust_of(t);
  const bool trusted =
      referenced || (known && (*known == trust::trusted || *known == trust::trusted_not_rcu_safe));
  // check_reg_type for ARG_PTR_TO_MEM: a BTF pointer is memory only when trusted.
  if (!trusted) {
    const std::string_view type = known && *known == trust::rcu         ? "rcu_ptr_"
                                  : known && *known == trust::untrusted ? "untrusted_ptr_"
                                                                        : "ptr_";
    report(violation_kind::arg_type_mismatch, name, p,
           fmt::format("R{} type={} expected=fp, pkt, pkt_meta, map_key, map_value, mem, "
                       "ringbuf_mem, buf, trusted_ptr_",
                       regno, type),
           where);
    return false;
  }
  if (write) {
    report(violation_kind::arg_type_mismatch, name, p,
           fmt::format("R{} cannot write into memory of struct task_struct: a BTF pointer is "
                       "read-only to helpers",
                       regno),
           where);
    return false;
  }
  const auto* base = reinterpret_cast<const char*>(t);
  const auto* at = static_cast<const char*>(p);
  const auto off = static_cast<std::size_t>(at - base);
  const std::size_t comm_begin = offsetof(task_struct, comm);
  const std::size_t comm_end = comm_begin + TASK_COMM_LEN;
  // btf_struct_walk: an access that starts in an array member must end inside it.
  if (off >= comm_begin && off < comm_end && off + size > comm_end) {
    report(violation_kind::access_beyond_member, name, p,
           fmt::format("access beyond the end of member comm (mend:{}) in struct task_struct "
                       "with off {} size {}",
                       comm_end, off, size),
           where);
    return false;
  }
  if (off + size > offsetof(task_struct, priv)) {
    report(
        violation_kind::access_beyond_member, name, p,
        fmt::format("access beyond the end of struct task_struct with off {} size {}", off, size),
        where);
    return false;
  }
  return true;
}

bool prog_run::dropped(const task_struct* p, std::string_view note, std::source_location where) {
  reference* r = live_ref(p);
  if (r == nullptr) {
    return false;
  }
  r->live = false;
  r->released_at = where;
  std::string message =
      fmt::format("Unreleased reference id={} (acquired by {} at {}:{}; {})", r->id, r->kfunc,
                  r->acquired_at.file_name(), r->acquired_at.line(), note);
  if (mode_ == checker_mode::throw_error) {
    // A destructor cannot throw: reported at the program's exit (finish()).
    dropped_.push_back(
        violation{violation_kind::unreleased_ref, "", r->task, std::move(message), where});
  } else {
    report(violation_kind::unreleased_ref, "", r->task, std::move(message), where);
  }
  return true;
}

void prog_run::produced(kfunc_id id, task_struct* p, std::source_location where) {
  if (p == nullptr) {
    return;
  }
  // A long-running program acquires and releases without end: keep every live
  // reference, but only the most recent released ones (enough to name both sites
  // of a double release), so a run's memory stays bounded.
  constexpr std::size_t kKeepReleased = 64;
  if (refs_.size() >= 4 * kKeepReleased) {
    std::size_t released = 0;
    for (auto it = refs_.rbegin(); it != refs_.rend(); ++it) {
      if (!it->live && ++released > kKeepReleased) {
        it->task = nullptr;  // forgotten
      }
    }
    std::erase_if(refs_, [](const reference& r) { return !r.live && r.task == nullptr; });
  }
  refs_.push_back(reference{next_id_++, p, to_string(id), where, true, false, {}});
}

void prog_run::trusted_value(const task_struct* p, bool rcu_safe) {
  if (p != nullptr) {
    trust_[p] = rcu_safe ? trust::trusted : trust::trusted_not_rcu_safe;
  }
}

void prog_run::legacy_value(const task_struct* p) {
  if (p != nullptr) {
    trust_[p] = trust::legacy;
  }
}

void prog_run::walked(const task_struct* base, const task_struct* value) {
  if (value == nullptr) {
    return;
  }
  // check_ptr_to_btf_access: from a trusted or RCU base, a BTF_TYPE_SAFE_RCU field
  // read inside an RCU section (the implicit one counts, in_rcu_cs) is MEM_RCU and
  // never NULL; outside any section it is PTR_UNTRUSTED; from a legacy base it is
  // legacy; from an untrusted base, untrusted.
  const std::optional<trust> from = trust_of(base);
  const bool base_ok =
      live_ref(base) != nullptr || (from && (*from == trust::trusted || *from == trust::rcu));
  trust got = trust::untrusted;
  if (base_ok) {
    got = kernel_.rcu().rcu_read_lock_held() ? trust::rcu : trust::untrusted;
  } else if (from && *from == trust::legacy) {
    got = trust::legacy;
  }
  // One class per value (prog.hpp): a walk never downgrades what the value
  // already is (a group leader is its own group_leader, and may be the trusted
  // argument).
  raise_trust(value, got);
}

void prog_run::raise_trust(const task_struct* value, trust got) {
  const std::optional<trust> had = trust_of(value);
  const auto rank = [](trust t) {
    switch (t) {
      case trust::trusted:
        return 4;
      case trust::trusted_not_rcu_safe:
        return 3;
      case trust::rcu:
        return 2;
      case trust::legacy:
        return 1;
      case trust::untrusted:
        return 0;
    }
    return 0;
  };
  if (!had || rank(got) > rank(*had)) {
    trust_[value] = got;
  }
}

prog_run::iterator* prog_run::active_iter(const void* it) {
  for (iterator& i : iters_) {
    if (i.active && i.it == it) {
      return &i;
    }
  }
  return nullptr;
}

bool prog_run::iter_new(kfunc_id id, const void* it, bool in_rcu, std::source_location where) {
  const std::string_view name = to_string(id);
  if (const iterator* had = active_iter(it)) {
    // process_iter_arg: KF_ITER_NEW wants an uninitialized slot.
    report(violation_kind::iter_state, name, it,
           fmt::format("expected uninitialized iter_task as arg #0 (made by bpf_iter_task_new at "
                       "{}:{} and not destroyed)",
                       had->made_at.file_name(), had->made_at.line()),
           where);
    return false;
  }
  bool empty = false;
  bool untrusted = false;
  if (!in_rcu) {
    if (info(kernel_.config().profile).trusted_args_default) {
      // "bpf: Enforce RCU protection for KF_RCU_PROTECTED" (2025): refused at the call.
      report(violation_kind::rcu_required, name, it,
             fmt::format("kernel func {} requires RCU critical section protection", name), where);
      empty = true;
    } else {
      // dfab99df147b: the slot is PTR_UNTRUSTED; its next use is refused.
      untrusted = true;
    }
  }
  iters_.push_back(iterator{next_id_++, it, where, true, untrusted, empty});
  return true;
}

bool prog_run::iter_use(kfunc_id id, const void* it, std::source_location where) {
  const std::string_view name = to_string(id);
  iterator* i = active_iter(it);
  if (i == nullptr) {
    report(violation_kind::iter_state, name, it, "expected an initialized iter_task as arg #0",
           where);
    return false;
  }
  const bool destroy = id == kfunc_id::bpf_iter_task_destroy;
  bool ok = true;
  if (i->untrusted) {
    // is_iter_reg_valid_init's -EPROTO: made outside RCU, or the section ended.
    report(violation_kind::rcu_required, name, it,
           fmt::format("expected an RCU CS when using {}", name), where);
    ok = false;
  }
  if (destroy) {
    // Destroyed either way: destroy changes nothing in the kernel, and the
    // program has been told; only live iterators are kept.
    std::erase_if(iters_, [it](const iterator& x) { return x.active && x.it == it; });
  }
  return ok;
}

void prog_run::iter_yielded(const task_struct* p) {
  if (p != nullptr) {
    raise_trust(p, trust::rcu);
  }
}

void prog_run::slot_read(const void* value) {
  if (value != nullptr) {
    // The implicit RCU section of a non-sleepable program counts, as in the
    // verifier's in_rcu_cs().
    trust_[value] = kernel_.rcu().rcu_read_lock_held() ? trust::rcu : trust::untrusted;
  }
}

bool prog_run::rcu_unlock(std::source_location where) {
  if (rcu_depth_ == 0) {
    report(violation_kind::rcu_unlock_unmatched, "bpf_rcu_read_unlock", nullptr,
           "unmatched rcu read unlock", where);
    return false;
  }
  --rcu_depth_;
  // bpf_rcu_read_unlock turns every MEM_RCU register and iterator slot into
  // PTR_UNTRUSTED (dfab99df147b made it reach STACK_ITER slots).
  for (iterator& i : iters_) {
    if (i.active && !i.empty) {
      i.untrusted = true;
    }
  }
  return true;
}

prog_run::leftovers prog_run::finish(std::source_location where) {
  leftovers out{{}, rcu_depth_};
  std::vector<const reference*> unreleased;
  for (reference& r : refs_) {
    if (r.live) {
      r.live = false;
      out.references.push_back(r.task);
      unreleased.push_back(&r);
    }
  }
  rcu_depth_ = 0;
  // An iterator never destroyed is a reference leak to the verifier; it holds
  // nothing, so there is nothing to hand back.
  std::vector<iterator> undestroyed;
  for (const iterator& i : iters_) {
    if (i.active) {
      undestroyed.push_back(i);
    }
  }
  iters_.clear();
  // Reported after the caller has cleaned up (throw_error would unwind here).
  pending_report_ = [this, unreleased, undestroyed, depth = out.rcu_depth, where,
                     dropped = std::exchange(dropped_, {})]() mutable {
    for (violation& v : dropped) {
      report(v.kind, v.kfunc, v.argument, std::move(v.message), v.where);
    }
    for (const iterator& i : undestroyed) {
      report(violation_kind::unreleased_ref, "", i.it,
             fmt::format("Unreleased reference id={} (acquired by bpf_iter_task_new at {}:{}; the "
                         "iterator was never destroyed)",
                         i.id, i.made_at.file_name(), i.made_at.line()),
             where);
    }
    for (const reference* r : unreleased) {
      report(violation_kind::unreleased_ref, "", r->task,
             fmt::format("Unreleased reference id={} (acquired by {} at {}:{})", r->id, r->kfunc,
                         r->acquired_at.file_name(), r->acquired_at.line()),
             where);
    }
    if (depth > 0) {
      report(violation_kind::rcu_lock_missing, "", nullptr, "bpf_rcu_read_unlock is missing",
             where);
    }
  };
  return out;
}

void prog_run::report_leftovers() {
  if (pending_report_) {
    auto pending = std::move(pending_report_);
    pending_report_ = nullptr;
    pending();
  }
}

}  // namespace detail

// ---- names ----------------------------------------------------------------------------------

std::string_view to_string(violation_kind k) noexcept {
  switch (k) {
    case violation_kind::unreleased_ref:
      return "unreleased_ref";
    case violation_kind::null_arg:
      return "null_arg";
    case violation_kind::release_unacquired:
      return "release_unacquired";
    case violation_kind::release_untrusted:
      return "release_untrusted";
    case violation_kind::untrusted_arg:
      return "untrusted_arg";
    case violation_kind::kfunc_not_allowed:
      return "kfunc_not_allowed";
    case violation_kind::use_after_release:
      return "use_after_release";
    case violation_kind::double_release:
      return "double_release";
    case violation_kind::xchg_unreferenced:
      return "xchg_unreferenced";
    case violation_kind::rcu_lock_missing:
      return "rcu_lock_missing";
    case violation_kind::rcu_unlock_unmatched:
      return "rcu_unlock_unmatched";
    case violation_kind::arg_type_mismatch:
      return "arg_type_mismatch";
    case violation_kind::access_beyond_member:
      return "access_beyond_member";
    case violation_kind::iter_state:
      return "iter_state";
    case violation_kind::rcu_required:
      return "rcu_required";
  }
  return "?";
}

verifier_error::verifier_error(violation v)
    : std::runtime_error(
          fmt::format("{} (at {}:{})", v.message, v.where.file_name(), v.where.line())),
      violation_(std::move(v)) {}

// ---- programs --------------------------------------------------------------------------------

bpf_prog::bpf_prog(kernel& k, prog_type type, std::string section, body_type body,
                   checker_mode mode)
    : kernel_(k), type_(type), section_(std::move(section)), body_(std::move(body)), mode_(mode) {
  if (section_ == "lsm/task_free") {
    arg_trust_ = arg_trust::trusted_not_rcu_safe;
  } else if (type_ == prog_type::tracing &&
             (section_.starts_with("fentry/") || section_.starts_with("fexit/"))) {
    // prog_args_trusted: only raw tracepoints and iterators among the tracing
    // attach types (c6b0337f0120 stopped trusting fentry/fexit arguments).
    arg_trust_ = arg_trust::legacy;
  } else if (type_ == prog_type::kprobe || type_ == prog_type::kretprobe ||
             type_ == prog_type::syscall) {
    arg_trust_ = arg_trust::none;  // not a BTF-typed argument the verifier trusts
  } else {
    arg_trust_ = arg_trust::trusted;
  }
  detail::kernel_access::attach_dependent(kernel_, &dependent_);
}

bpf_prog::~bpf_prog() {
  (void)detail::kernel_access::detach_dependent(&dependent_);
}

prog_run_result bpf_prog::run(task_struct* as_task, task_struct* arg, std::source_location where) {
  prog_run_result result;
  // Relaxed: set once by the kernel's teardown, which a correct caller's run never
  // overlaps; a run after it is the teardown mistake this refuses.
  if (dependent_.orphaned.load(std::memory_order_relaxed)) [[unlikely]] {
    if constexpr (contract_checks_enabled) {
      diagnostic_object o;
      o.address = this;
      detail::report_contract_violation(
          contract_kind::teardown_order, "prog", "run", std::move(o),
          fmt::format("bpf_prog '{}' run after its kernel was destroyed; refused", section_),
          where);
    }
    result.ret = -ENODEV;
    return result;
  }
  const current_task_scope scope(as_task, where);
#if TASKLIFE_VERIFIER
  if (mode_ == checker_mode::off) {
    // Unchecked, also when nested inside a checked run: hide the outer run.
    detail::prog_run* const outer_run = std::exchange(detail::tls_ctx.run, nullptr);
    try {
      std::optional<rcu_read_guard> implicit_rcu;
      if (!sleepable()) {
        implicit_rcu.emplace(kernel_.rcu());
      }
      result.ret = body_(arg);
    } catch (...) {
      detail::tls_ctx.run = outer_run;
      throw;
    }
    detail::tls_ctx.run = outer_run;
    return result;
  }
#else
  {
    std::optional<rcu_read_guard> implicit_rcu;
    if (!sleepable()) {
      implicit_rcu.emplace(kernel_.rcu());
    }
    result.ret = body_(arg);
    return result;
  }
#endif
#if TASKLIFE_VERIFIER

  detail::prog_run run(kernel_, *this, mode_);
  if (arg_trust_ == arg_trust::legacy) {
    run.legacy_value(arg);
  } else if (arg_trust_ != arg_trust::none) {
    run.trusted_value(arg, arg_trust_ == arg_trust::trusted);
  }
  detail::prog_run* const outer = detail::tls_ctx.run;
  // Cleans up on both exits: hands back what the program still holds (after the
  // run stops watching), leaves RCU sections it left open, restores the outer run.
  auto cleanup = [&] {
    const detail::prog_run::leftovers left = run.finish(where);
    // Released outside any run: neither this program's checker nor an outer
    // program's (this run's references were never the outer run's) sees them.
    detail::tls_ctx.run = nullptr;
    for (task_struct* t : left.references) {
      bpf_task_release(t, where);
    }
    detail::tls_ctx.run = outer;
    for (unsigned i = 0; i < left.rcu_depth; ++i) {
      kernel_.rcu().rcu_read_unlock();
    }
  };
  detail::tls_ctx.run = &run;
  try {
    std::optional<rcu_read_guard> implicit_rcu;
    if (!sleepable()) {
      implicit_rcu.emplace(kernel_.rcu());  // non-sleepable programs run under RCU
    }
    result.ret = body_(arg);
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
  run.report_leftovers();  // may throw in throw_error mode, after the cleanup
  result.violations = run.take_violations();
  return result;
#endif
}

bpf_link bpf_prog::attach(tracepoint& tp, std::function<void(const prog_run_result&)> sink) {
  return tp.link([this, sink = std::move(sink)](task_struct* t) {
    task_struct* cur = get_current();
    prog_run_result r;
    try {
      r = run(cur != nullptr ? cur : t, t);
    } catch (const verifier_error& e) {
      // An attached program fires inside fork, do_exit or an RCU callback: its
      // violation goes to the sink instead of unwinding through the kernel.
      r.violations.push_back(e.info());
    }
    if (sink) {
      sink(r);
    }
  });
}

}  // namespace tasklife
