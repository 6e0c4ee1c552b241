// The BPF task kfuncs (kernel/bpf/helpers.c) in each semantics profile.
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include <tasklife/kfunc.hpp>
#include <tasklife/sched_point.hpp>

#include "prog_internal.hpp"
#include "quarantine.hpp"
#include "task_internal.hpp"
#include "task_storage_internal.hpp"

namespace tasklife {
namespace {

using detail::tls_ctx;

// The run-time verifier's view of each call (prog.hpp). Each kfunc reads the
// thread's run once (current_run: one thread-local load); outside a checked run it
// is nullptr and every hook below is a predictable branch. False vetoes the call.
using run_ptr = detail::prog_run*;

inline run_ptr current_run() noexcept {
#if TASKLIFE_VERIFIER
  return detail::tls_ctx.run;
#else
  return nullptr;
#endif
}

bool verify_call(run_ptr run, kfunc_id id, std::source_location where) {
  if (run != nullptr) [[unlikely]] {
    return run->check_call(id, where);
  }
  return true;
}

// The task argument, checked by the rules its row names (kfunc_info::task_arg).
bool verify_arg(run_ptr run, kfunc_id id, const task_struct* p, std::source_location where) {
  if (run != nullptr) [[unlikely]] {
    return run->check_task_arg(id, p, info(id).task_arg, where);
  }
  return true;
}

task_struct* verify_produced(run_ptr run, kfunc_id id, task_struct* p, std::source_location where) {
  if (run != nullptr) [[unlikely]] {
    run->produced(id, p, where);
  }
  return p;
}

constexpr std::string_view name_of(kfunc_id id) {
  return to_string(id);
}

[[gnu::cold]] void report(kfunc_id id, contract_kind kind, diagnostic_object object,
                          std::string message, std::source_location where) {
  if (object.kernel.empty() && tls_ctx.owner != nullptr) {
    object.kernel = tls_ctx.owner->name();
  }
  detail::report_contract_violation(kind, "kfunc", name_of(id), std::move(object),
                                    fmt::format("{}(): {}", name_of(id), message), where);
}

// The kernel a kfunc runs in: current's. Checked builds report a call outside a
// program and a kfunc the profile does not have. False: the call must not go on.
bool enter(run_ptr run, kfunc_id id, std::source_location where) {
  if (!info(id).entry_announced_by_body) {
    // The kfunc's entry is a scheduling point (one thread-local test when no
    // explorer runs); the others begin with one of their own.
    detail::sched_point(sched_op::kfunc, nullptr, info(id).name);
  }
  if constexpr (contract_checks_enabled) {
    if (tls_ctx.task == nullptr) [[unlikely]] {
      report(id, contract_kind::no_current, {},
             "called outside a program: this thread does not run as a task "
             "(use kernel::run_as)",
             where);
      return false;
    }
  }
  if (!kfunc_exists(tls_ctx.profile, id)) [[unlikely]] {
    report(id, contract_kind::not_in_profile, {},
           fmt::format("does not exist in semantics profile '{}' of kernel '{}'",
                       to_string(tls_ctx.profile), tls_ctx.owner->name()),
           where);
    return false;
  }
  return verify_call(run, id, where);
}

// A task argument: NULL, a pointer that is not a task of current's kernel, and a
// freed task are reported (checked builds) and refused.
bool check_task_arg(kfunc_id id, const task_struct* p, std::source_location where) {
  if constexpr (contract_checks_enabled) {
    if (p == nullptr) [[unlikely]] {
      report(id, contract_kind::null_argument, {},
             "NULL passed as the task argument (the verifier: \"Possibly NULL pointer passed "
             "to trusted arg0\")",
             where);
      return false;
    }
    if (!tls_ctx.owner->knows_task(p)) [[unlikely]] {
      const kernel* other = detail::kernel_knowing(p);
      if (other == nullptr && detail::graveyard_lookup(p) != detail::graveyard_state::unknown) {
        // A freed task out of quarantine or a teardown tombstone: said as such.
        detail::report_unknown_task(p, "kfunc", name_of(id), where);
        return false;
      }
      report(id, other != nullptr ? contract_kind::foreign_object : contract_kind::not_a_task,
             other != nullptr ? detail::describe_task(p) : detail::describe_address(p),
             fmt::format("{} is not a task of kernel '{}' ({})", static_cast<const void*>(p),
                         tls_ctx.owner->name(),
                         other != nullptr ? fmt::format("a task of kernel '{}'", other->name())
                                          : std::string("not a task at all")),
             where);
      return false;
    }
    return detail::check_task(p, name_of(id), where);
  } else {
    return true;
  }
}

void trace(task_struct* p, kfunc_id id, std::source_location where) {
  if (p->traced.load(std::memory_order_relaxed)) [[unlikely]] {
    detail::kernel_access::record_now(task_kernel(p), p, task_event_kind::kfunc, name_of(id),
                                      where);
  }
}

// Records the new reference's holder (kernel_config::track_holders).
void track_acquired(task_struct* p, kfunc_id id, std::source_location where) {
  if (p->holders_tracked) [[unlikely]] {
    const bool on_usage = info(tls_ctx.profile).acquire == acquire_style::usage_inc;
    detail::kernel_access::track_get(task_kernel(p), p,
                                     on_usage ? holder_counter::usage : holder_counter::rcu_users,
                                     holder_role::other, name_of(id), where);
  }
}

// The explorer's NULL path of a kfunc whose result the verifier treats as
// possibly NULL: NULL, with no reference taken. Always false elsewhere.
bool null_on_this_path(kfunc_id id) {
  return kfunc_returns_maybe_null(tls_ctx.profile, id) && detail::null_path(name_of(id));
}

// The acquire of each profile, on a validated task.
task_struct* acquire(task_struct* p, std::source_location where,
                     kfunc_id id = kfunc_id::bpf_task_acquire) {
  switch (info(tls_ctx.profile).acquire) {
    case acquire_style::rcu_users_inc:
      refcount_inc(&p->rcu_users, where);  // from 0: ADD_UAF, and the task dies anyway
      break;
    case acquire_style::usage_inc:
      refcount_inc(&p->usage, where);  // get_task_struct
      break;
    case acquire_style::rcu_users_inc_not_zero:
      if (!refcount_inc_not_zero(&p->rcu_users, where)) {
        return nullptr;
      }
      break;
  }
  trace(p, kfunc_id::bpf_task_acquire, where);
  track_acquired(p, id, where);
  return p;
}

}  // namespace

std::string_view to_string(prog_type t) noexcept {
  switch (t) {
    case prog_type::tracing:
      return "tracing";
    case prog_type::lsm:
      return "lsm";
    case prog_type::struct_ops:
      return "struct_ops";
    case prog_type::syscall:
      return "syscall";
    case prog_type::kprobe:
      return "kprobe";
    case prog_type::kretprobe:
      return "kretprobe";
    case prog_type::count_:
      break;
  }
  return "?";
}

task_struct* detail::bpf_task_acquire_slow(task_struct* p, std::source_location where) {
  // Each kfunc announces itself first, before its checks: a free by another
  // thread at this point is then reported by them.
  detail::sched_point(sched_op::counter_get, p, "bpf_task_acquire");
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_task_acquire, where) ||
      !verify_arg(run, kfunc_id::bpf_task_acquire, p, where) ||
      !check_task_arg(kfunc_id::bpf_task_acquire, p, where)) {
    return nullptr;
  }
  if (null_on_this_path(kfunc_id::bpf_task_acquire)) {
    return verify_produced(run, kfunc_id::bpf_task_acquire, nullptr, where);
  }
  return verify_produced(run, kfunc_id::bpf_task_acquire, acquire(p, where), where);
}

void detail::bpf_task_release_slow(task_struct* p, std::source_location where) {
  // No announcement of its own: the put it ends in announces itself, then checks.
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_task_release, where) ||
      !verify_arg(run, kfunc_id::bpf_task_release, p, where)) {
    return;
  }
  if (p == nullptr && info(tls_ctx.profile).release_null_safe) {
    return;  // late 2022: "if (!p) return;" before KF_RELEASE args became trusted
  }
  if (!check_task_arg(kfunc_id::bpf_task_release, p, where)) {
    return;
  }
  trace(p, kfunc_id::bpf_task_release, where);
  if (info(tls_ctx.profile).acquire == acquire_style::usage_inc) {
    put_task_struct(p, where);
  } else {
    put_task_struct_rcu_user(p, where);
  }
}

void bpf_task_release_dtor(void* p) {
  // A destructor run by a map or bpf_obj_drop, never a program's own release:
  // the run-time verifier is not consulted. Its argument may be anything a map
  // slot ever held: NULL, a fake pointer, a freed or torn-down task.
  auto* t = static_cast<task_struct*>(p);
  if (!detail::check_known_task(t, "kfunc", "bpf_task_release_dtor",
                                std::source_location::current())) {
    return;
  }
  if (!kfunc_exists(task_kernel(t).config().profile, kfunc_id::bpf_task_release_dtor)) {
    detail::report_contract_violation(
        contract_kind::not_in_profile, "kfunc", "bpf_task_release_dtor", detail::describe_task(t),
        fmt::format("bpf_task_release_dtor() does not exist in semantics profile '{}' (added in "
                    "v6.8)",
                    to_string(task_kernel(t).config().profile)),
        std::source_location::current());
    return;
  }
  put_task_struct_rcu_user(t, std::source_location::current());
}

void task_kptr_dtor(task_struct* p) {
  // The destructor the kernel registered for task kptrs in each profile:
  // bpf_task_release_dtor where it exists (v6.8), else bpf_task_release's body.
  if (!detail::check_known_task(p, "map", "task_kptr_dtor", std::source_location::current())) {
    return;
  }
  const semantics_profile profile = task_kernel(p).config().profile;
  if (kfunc_exists(profile, kfunc_id::bpf_task_release_dtor)) {
    bpf_task_release_dtor(p);
  } else if (info(profile).acquire == acquire_style::usage_inc) {
    put_task_struct(p, std::source_location::current());
  } else {
    put_task_struct_rcu_user(p, std::source_location::current());
  }
}

void task_kptr_dtor_empty(semantics_profile profile) {
  // What the profile's registered destructor does when bpf_obj_free_fields hands
  // it the NULL of an empty slot (the kernels before 1431d0b584a6).
  if (kfunc_exists(profile, kfunc_id::bpf_task_release_dtor)) {
    bpf_task_release_dtor(nullptr);  // reported: it has no NULL check
  } else if (!info(profile).release_null_safe) {
    detail::report_contract_violation(
        contract_kind::null_argument, "kfunc", "task_kptr_dtor", {},
        fmt::format("the task destructor of semantics profile '{}' was called on the NULL of an "
                    "empty kptr slot: a NULL pointer dereference in put_task_struct_rcu_user",
                    to_string(profile)),
        std::source_location::current());
  }
  // Else bpf_task_release's "if (!p) return;": nothing happens, as in the kernel.
}

namespace {
task_struct* from_pid_in(run_ptr run, kfunc_id id, pid_namespace* ns, std::int32_t nr,
                         std::source_location where) {
  if (null_on_this_path(id)) {
    return verify_produced(run, id, nullptr, where);
  }
  kernel& k = *tls_ctx.owner;
  const rcu_read_guard guard(k.rcu());
  detail::sched_point(sched_op::pid_lookup, ns->root(), name_of(id));
  task_struct* p = ns->find_task(nr, where);
  if (p == nullptr) {
    return nullptr;
  }
  // Between the lookup and the acquire: the window of the Nov 2022 race. The read
  // section keeps p's memory; whether it is still alive is the acquire's business.
  detail::sched_point(sched_op::counter_get, p, name_of(id));
  if (!info(tls_ctx.profile).from_pid_checks_acquire) {
    (void)acquire(p, where, id);  // 3f0e6f2b41d3: the acquire's outcome is not looked at
  } else {
    p = acquire(p, where, id);
  }
  if (p != nullptr) {
    trace(p, id, where);
  }
  return verify_produced(run, id, p, where);
}
}  // namespace

task_struct* detail::bpf_task_from_pid_slow(std::int32_t pid, std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_task_from_pid, where)) {
    return nullptr;
  }
  return from_pid_in(run, kfunc_id::bpf_task_from_pid, &tls_ctx.owner->init_pid_ns(), pid, where);
}

task_struct* bpf_task_from_vpid(std::int32_t vpid, std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_task_from_vpid, where)) {
    return nullptr;
  }
  pid_namespace* ns = task_active_pid_ns(tls_ctx.task);
  if (ns == nullptr) {
    return nullptr;  // current was already released (an autoreaped task in its last moments)
  }
  return from_pid_in(run, kfunc_id::bpf_task_from_vpid, ns, vpid, where);
}

task_struct* bpf_task_kptr_get(kptr<task_struct>* slot, std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_task_kptr_get, where)) {
    return nullptr;
  }
  if constexpr (contract_checks_enabled) {
    if (!detail::check_kptr_slot(slot, detail::kptr_tag<task_struct>(), "bpf_task_kptr_get",
                                 where)) {
      return nullptr;
    }
  }
  if (info(tls_ctx.profile).acquire == acquire_style::usage_inc) {
    return nullptr;  // 156ed20d22ee: rcu_users cannot be inc_not_zero'd with the union
  }
  if (null_on_this_path(kfunc_id::bpf_task_kptr_get)) {
    return verify_produced(run, kfunc_id::bpf_task_kptr_get, nullptr, where);
  }
  // Another CPU may xchg the task out and drop it after the read: RCU keeps the
  // memory, inc_not_zero tells whether it is still alive.
  const rcu_read_guard guard(tls_ctx.owner->rcu());
  detail::sched_point(sched_op::slot_read, slot, "bpf_task_kptr_get");
  task_struct* p = detail::kptr_load(slot);
  if (p != nullptr) {
    detail::sched_point(sched_op::counter_get, p, "bpf_task_kptr_get");
  }
  if (p != nullptr && !refcount_inc_not_zero(&p->rcu_users, where)) {
    return nullptr;
  }
  if (p != nullptr) {
    trace(p, kfunc_id::bpf_task_kptr_get, where);
    track_acquired(p, kfunc_id::bpf_task_kptr_get, where);
  }
  return verify_produced(run, kfunc_id::bpf_task_kptr_get, p, where);
}

task_struct* bpf_task_acquire_not_zero(task_struct* p, std::source_location where) {
  detail::sched_point(sched_op::counter_get, p, "bpf_task_acquire_not_zero");
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_task_acquire_not_zero, where) ||
      !verify_arg(run, kfunc_id::bpf_task_acquire_not_zero, p, where) ||
      !check_task_arg(kfunc_id::bpf_task_acquire_not_zero, p, where)) {
    return nullptr;
  }
  if (info(tls_ctx.profile).acquire == acquire_style::usage_inc) {
    return nullptr;  // 156ed20d22ee: the legacy kfuncs always return NULL
  }
  if (null_on_this_path(kfunc_id::bpf_task_acquire_not_zero)) {
    return verify_produced(run, kfunc_id::bpf_task_acquire_not_zero, nullptr, where);
  }
  if (!refcount_inc_not_zero(&p->rcu_users, where)) {
    return nullptr;
  }
  trace(p, kfunc_id::bpf_task_acquire_not_zero, where);
  track_acquired(p, kfunc_id::bpf_task_acquire_not_zero, where);
  return verify_produced(run, kfunc_id::bpf_task_acquire_not_zero, p, where);
}

task_struct* detail::bpf_kptr_xchg_slow(kptr<task_struct>* slot, task_struct* p,
                                        std::source_location where) {
  detail::sched_point(sched_op::slot_xchg, slot, "bpf_kptr_xchg");
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_kptr_xchg, where)) {
    return nullptr;
  }
  if constexpr (contract_checks_enabled) {
    if (!detail::check_kptr_slot(slot, detail::kptr_tag<task_struct>(), "bpf_kptr_xchg", where)) {
      return nullptr;
    }
  }
  if (p != nullptr && !verify_arg(run, kfunc_id::bpf_kptr_xchg, p, where)) {
    return nullptr;
  }
  if constexpr (contract_checks_enabled) {
    if (p != nullptr && !check_task_arg(kfunc_id::bpf_kptr_xchg, p, where)) {
      return nullptr;
    }
  }
  task_struct* old = detail::kptr_exchange(slot, p);
  if (p != nullptr) {
    trace(p, kfunc_id::bpf_kptr_xchg, where);
  }
  if (old != nullptr && null_on_this_path(kfunc_id::bpf_kptr_xchg)) {
    // The path where the slot was empty: the program gets NULL, and the reference
    // that was there is dropped as the map's destructor would drop it, outside
    // the program (so nothing leaks and nothing is released twice).
    detail::prog_run* const watching = std::exchange(tls_ctx.run, nullptr);
    task_kptr_dtor(old);
    tls_ctx.run = watching;
    old = nullptr;
  }
  return verify_produced(run, kfunc_id::bpf_kptr_xchg, old, where);
}

void bpf_rcu_read_lock(std::source_location where) {
  const run_ptr run = current_run();
  if (enter(run, kfunc_id::bpf_rcu_read_lock, where)) {
    if (run != nullptr) [[unlikely]] {
      run->rcu_lock();
    }
    tls_ctx.owner->rcu().rcu_read_lock();
  }
}

void bpf_rcu_read_unlock(std::source_location where) {
  const run_ptr run = current_run();
  if (enter(run, kfunc_id::bpf_rcu_read_unlock, where)) {
    if (run != nullptr) [[unlikely]] {
      if (!run->rcu_unlock(where)) {
        return;  // unmatched: the program's own count says there is nothing to leave
      }
    }
    tls_ctx.owner->rcu().rcu_read_unlock();
  }
}

long bpf_probe_read_kernel(void* dst, std::uint32_t size, const void* unsafe_ptr,
                           std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_probe_read_kernel, where)) {
    return -EINVAL;
  }
  // arg1 is ARG_PTR_TO_UNINIT_MEM (written), arg3 ARG_ANYTHING (the probe).
  if (run != nullptr && !run->check_mem_arg(kfunc_id::bpf_probe_read_kernel, 1, dst, size,
                                            /*write=*/true, where)) {
    return -EINVAL;
  }
  if (size != 0) {
    std::memcpy(dst, unsafe_ptr, size);
  }
  return 0;
}

long bpf_strncmp(const char* s1, std::uint32_t s1_sz, const char* s2, std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_strncmp, where)) {
    return -EINVAL;
  }
  if (run != nullptr &&
      !run->check_mem_arg(kfunc_id::bpf_strncmp, 1, s1, s1_sz, /*write=*/false, where)) {
    return -EINVAL;
  }
  return std::strncmp(s1, s2, s1_sz);
}

task_struct* btf_walk(task_struct* base, task_struct* task_struct::*field,
                      std::source_location where) {
  if constexpr (contract_checks_enabled) {
    if (field != &task_struct::real_parent && field != &task_struct::group_leader) {
      detail::report_contract_violation(
          contract_kind::invalid_argument, "kfunc", "btf_walk", {},
          "btf_walk(): only real_parent and group_leader are RCU-safe fields of task_struct",
          where);
      return nullptr;
    }
    if (base == nullptr) {
      detail::report_contract_violation(contract_kind::null_argument, "kfunc", "btf_walk", {},
                                        "btf_walk(NULL)", where);
      return nullptr;
    }
    if (!detail::check_task(base, "btf_walk", where)) {
      return nullptr;
    }
  }
  task_struct* value = field == &task_struct::real_parent
                           ? detail::kernel_access::real_parent(task_kernel(base), base)
                           : base->group_leader;  // set by fork, never changed
  if (const run_ptr run = current_run()) {
    run->walked(base, value);
  }
  return value;
}

// ---- the task iterator ----------------------------------------------------------------------

namespace detail {
// The door to bpf_iter_task's state, for the three kfuncs below.
struct iter_task_access {
  static kernel*& owner(bpf_iter_task& it) noexcept { return it.kernel_; }
  static task_struct*& task(bpf_iter_task& it) noexcept { return it.task_; }
  static task_struct*& pos(bpf_iter_task& it) noexcept { return it.pos_; }
  static unsigned int& flags(bpf_iter_task& it) noexcept { return it.flags_; }
  static bool& active(bpf_iter_task& it) noexcept { return it.active_; }
  static bool& walking(bpf_iter_task& it) noexcept { return it.walking_; }
  static bool& wrapped(bpf_iter_task& it) noexcept { return it.wrapped_; }
  static bool& done(bpf_iter_task& it) noexcept { return it.done_; }
};
}  // namespace detail

namespace {
using iter = detail::iter_task_access;

void report_iter(kfunc_id id, contract_kind kind, const bpf_iter_task* it, std::string message,
                 std::source_location where) {
  report(id, kind, detail::describe_address(it), std::move(message), where);
}

// A task the walk may yield: on the kernel's task list, i.e. not yet released
// (release_task's __unhash_process takes it off with list_del_rcu; tasklife keeps
// it listed until the free, for teardown's leak report). Acquire: pairs with
// release_task's release store of pid_detached.
bool listed(const task_struct* t) noexcept {
  return !t->priv.pid_detached.load(std::memory_order_acquire);
}

// The walk's next task after `after` (from the head when NULL) that `flavor` yields.
task_struct* next_of_flavor(kernel& k, const task_struct* after, unsigned int flags,
                            const task_struct* group) {
  return detail::kernel_access::next_listed_task(k, after, [&](const task_struct* t) {
    switch (flags) {
      case BPF_TASK_ITER_ALL_PROCS:
        return listed(t) && detail::thread_group_leader(t);  // next_task: leaders only
      case BPF_TASK_ITER_ALL_THREADS:
        return listed(t);
      case BPF_TASK_ITER_PROC_THREADS:  // the group's tasks, and its start, where the walk ends
        return group != nullptr &&
               (t == group || (listed(t) && t->group_leader == group->group_leader));
      default:
        return false;  // bpf_iter_task_new refused any other flavor
    }
  });
}

// An initialized iterator of current's kernel, or reported (checked builds).
bool check_iter(kfunc_id id, bpf_iter_task* it, std::source_location where) {
  if (it == nullptr) {
    report(id, contract_kind::null_argument, {}, "NULL passed as the iterator", where);
    return false;
  }
  if (!iter::active(*it)) {
    report_iter(id, contract_kind::invalid_state, it,
                "expected an initialized iter_task as arg #0 (it was never made with "
                "bpf_iter_task_new, or was destroyed)",
                where);
    return false;
  }
  if (iter::owner(*it) != tls_ctx.owner) {
    report_iter(
        id, contract_kind::foreign_object, it,
        fmt::format("the iterator was made in another kernel than '{}'", tls_ctx.owner->name()),
        where);
    return false;
  }
  return true;
}
}  // namespace

int bpf_iter_task_new(bpf_iter_task* it, task_struct* task, unsigned int flags,
                      std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_iter_task_new, where)) {
    return -EINVAL;
  }
  if (it == nullptr) {
    report(kfunc_id::bpf_iter_task_new, contract_kind::null_argument, {},
           "NULL passed as the iterator", where);
    return -EINVAL;
  }
  // The task argument is task__nullable (bpf_iter_task_new's -EINVAL for
  // PROC_THREADS covers NULL); a non-NULL one is checked as a trusted argument.
  if (task != nullptr && (!verify_arg(run, kfunc_id::bpf_iter_task_new, task, where) ||
                          !check_task_arg(kfunc_id::bpf_iter_task_new, task, where))) {
    return -EINVAL;
  }
  const bool in_rcu = tls_ctx.owner->rcu().rcu_read_lock_held();
  if (run != nullptr) {
    if (!run->iter_new(kfunc_id::bpf_iter_task_new, it, in_rcu, where)) {
      return -EINVAL;
    }
  } else if (iter::active(*it)) {
    report_iter(kfunc_id::bpf_iter_task_new, contract_kind::invalid_state, it,
                "expected uninitialized iter_task as arg #0 (made before and not destroyed)",
                where);
    return -EINVAL;
  } else if (!in_rcu) {
    // Refused (a handler that returns skips it): the iterator stays uninitialized.
    report_iter(kfunc_id::bpf_iter_task_new, contract_kind::missing_rcu_lock, it,
                "kernel func bpf_iter_task_new requires RCU critical section protection", where);
    return -EINVAL;
  }
  // From here the iterator is initialized, whatever new returns.
  iter::owner(*it) = tls_ctx.owner;
  iter::active(*it) = true;
  iter::task(*it) = nullptr;
  iter::pos(*it) = nullptr;
  iter::flags(*it) = flags;
  iter::wrapped(*it) = false;
  iter::done(*it) = true;
  iter::walking(*it) = false;
  switch (flags) {
    case BPF_TASK_ITER_ALL_PROCS:
    case BPF_TASK_ITER_ALL_THREADS:
      break;
    case BPF_TASK_ITER_PROC_THREADS:
      if (task == nullptr) {
        return -EINVAL;
      }
      iter::task(*it) = task;
      break;
    default:
      return -EINVAL;
  }
  iter::done(*it) = false;
  iter::walking(*it) = in_rcu;
  return 0;
}

task_struct* bpf_iter_task_next(bpf_iter_task* it, std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_iter_task_next, where)) {
    return nullptr;
  }
  if (run != nullptr && !run->iter_use(kfunc_id::bpf_iter_task_next, it, where)) {
    return nullptr;
  }
  if (!check_iter(kfunc_id::bpf_iter_task_next, it, where) || iter::done(*it) ||
      !iter::walking(*it)) {
    return nullptr;
  }
  kernel& k = *tls_ctx.owner;
  if (!k.rcu().rcu_read_lock_held()) {
    // Never walks outside RCU: the last task yielded may be freed by now.
    report_iter(kfunc_id::bpf_iter_task_next, contract_kind::missing_rcu_lock, it,
                "expected an RCU CS when using bpf_iter_task_next (the RCU section the "
                "iterator was made in has ended)",
                where);
    iter::walking(*it) = false;
    return nullptr;
  }
  if (null_on_this_path(kfunc_id::bpf_iter_task_next)) {
    iter::done(*it) = true;  // the explorer's path where the walk ends here
    return nullptr;
  }
  task_struct* const pos = iter::pos(*it);
  // The task yielded last stays listed until its free, which the section holds
  // back; in checked builds a freed one (the section was left and re-entered) is
  // reported instead of walked from.
  if (pos != nullptr && !detail::check_task(pos, "bpf_iter_task_next", where)) {
    iter::done(*it) = true;
    return nullptr;
  }
  const unsigned int flags = iter::flags(*it);
  task_struct* const group = iter::task(*it);
  task_struct* next = nullptr;
  if (flags == BPF_TASK_ITER_PROC_THREADS) {
    if (pos == nullptr) {
      next = group;  // kit->pos = task: the walk yields its start first
    } else {
      next = next_of_flavor(k, pos, flags, group);
      if (next == nullptr && !iter::wrapped(*it)) {
        iter::wrapped(*it) = true;  // around the group, as next_thread goes round
        next = next_of_flavor(k, nullptr, flags, group);
      }
      if (next == group) {
        next = nullptr;  // back at the start
      }
    }
  } else {
    next = next_of_flavor(k, pos, flags, nullptr);
  }
  if (next == nullptr) {
    iter::done(*it) = true;
    return nullptr;
  }
  iter::pos(*it) = next;
  trace(next, kfunc_id::bpf_iter_task_next, where);
  if (run != nullptr) {
    run->iter_yielded(next);
  }
  return next;
}

void bpf_iter_task_destroy(bpf_iter_task* it, std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_iter_task_destroy, where)) {
    return;
  }
  if (run != nullptr) {
    // Reported there; an iterator whose RCU section ended is still ended here:
    // destroy holds nothing, and the program has been told.
    (void)run->iter_use(kfunc_id::bpf_iter_task_destroy, it, where);
  } else if (!check_iter(kfunc_id::bpf_iter_task_destroy, it, where)) {
    return;
  }
  if (it == nullptr || !iter::active(*it)) {
    return;
  }
  iter::active(*it) = false;
  iter::walking(*it) = false;
  iter::done(*it) = true;
  iter::pos(*it) = nullptr;
  iter::task(*it) = nullptr;
}

// ---- task local storage ---------------------------------------------------------------------

namespace {
using storage = detail::task_storage_access;

// The checks both helpers share: current, the profile, the program type, a map of
// current's kernel not orphaned, the RCU section, a live task. False: NULL/-EINVAL.
bool storage_call(kfunc_id id, detail::task_storage_map_base* map, task_struct* task,
                  std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, id, where)) {
    return false;
  }
  if (map == nullptr) {
    report(id, contract_kind::null_argument, {}, "NULL passed as the map", where);
    return false;
  }
  if (&storage::owner(*map) != tls_ctx.owner || storage::orphaned(*map)) {
    diagnostic_object o;
    o.map = map->name();
    report(id, contract_kind::foreign_object, std::move(o),
           fmt::format("map '{}' is not a live map of kernel '{}'", map->name(),
                       tls_ctx.owner->name()),
           where);
    return false;
  }
  if (!verify_arg(run, id, task, where)) {
    return false;
  }
  if (task == nullptr) {
    return false;  // ARG_PTR_TO_BTF_ID_OR_NULL: the helper's own "if (!task)"
  }
  if constexpr (contract_checks_enabled) {
    if (!tls_ctx.owner->rcu().rcu_read_lock_held()) {
      // WARN_ON_ONCE(!bpf_rcu_lock_held())
      report(id, contract_kind::missing_rcu_lock, detail::describe_task(task),
             "called outside an RCU read-side section", where);
      return false;
    }
  }
  return check_task_arg(id, task, where);
}
}  // namespace

void* detail::bpf_task_storage_get_erased(task_storage_map_base* map, task_struct* task,
                                          const void* value, std::uint64_t flags,
                                          std::source_location where) {
  detail::sched_point(sched_op::map_update, map, "bpf_task_storage_get");
  if (!storage_call(kfunc_id::bpf_task_storage_get, map, task, where) ||
      (flags & ~BPF_LOCAL_STORAGE_GET_F_CREATE) != 0) {
    return nullptr;
  }
  if (null_on_this_path(kfunc_id::bpf_task_storage_get)) {
    return nullptr;  // the verifier types the result PTR_TO_MAP_VALUE_OR_NULL
  }
  return storage::get(*map, task, value, (flags & BPF_LOCAL_STORAGE_GET_F_CREATE) != 0);
}

long detail::bpf_task_storage_delete_erased(task_storage_map_base* map, task_struct* task,
                                            std::source_location where) {
  detail::sched_point(sched_op::map_delete, map, "bpf_task_storage_delete");
  if (!storage_call(kfunc_id::bpf_task_storage_delete, map, task, where)) {
    return -EINVAL;
  }
  return storage::remove(*map, task);
}

task_struct* bpf_get_current_task_btf(std::source_location where) {
  const run_ptr run = current_run();
  if (!enter(run, kfunc_id::bpf_get_current_task_btf, where)) {
    return nullptr;
  }
  if (run != nullptr) [[unlikely]] {
    run->trusted_value(tls_ctx.task, true);
  }
  return tls_ctx.task;
}

}  // namespace tasklife
