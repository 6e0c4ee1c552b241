// tasklife/kfunc.hpp — the BPF task kfuncs, under their kernel names, in every
// semantics profile of the kernel's history.
//
// What it is
//   The kfuncs and helpers a BPF program uses to hold task_struct references
//   (kernel/bpf/helpers.c), each behaving as the selected profile's kernel did
//   (kernel_config::profile; see kernel.hpp for the profiles and their commits):
//
//   | kfunc                       | rcu_users_inc        | usage_based     | rcu_safe / current   |
//   |-----------------------------|----------------------|-----------------|----------------------|
//   | bpf_task_acquire(p)         | refcount_inc(        | get_task_struct | inc_not_zero(        |
//   |                             |  &rcu_users): p      |  (usage): p     |  &rcu_users) ? p:NULL|
//   | bpf_task_release(p)         | NULL-safe            | NULL-safe       | put_task_struct_     |
//   |                             | put_..._rcu_user     | put_task_struct | rcu_user             |
//   | bpf_task_release_dtor(p)    | -                    | -               | current only (v6.8)  |
//   | bpf_task_from_pid(pid)      | RCU, init_pid_ns,    | RCU, lookup,    | RCU, lookup,         |
//   |                             | acquire, ignore it   | acquire         | p = acquire(p)       |
//   | bpf_task_from_vpid(vpid)    | -                    | -               | current only (v6.13) |
//   | bpf_task_kptr_get(slot)     | RCU, read, inc_not_  | NULL            | -                    |
//   |                             | zero(rcu_users)      |                 |                      |
//   | bpf_task_acquire_not_zero(p)| inc_not_zero(        | NULL            | -                    |
//   |                             | &rcu_users) ? p:NULL |                 |                      |
//   | bpf_kptr_xchg(slot, p)      | one atomic exchange, every profile                          |
//   | bpf_rcu_read_lock/unlock    | the kernel's RCU read-side section, every profile           |
//   | bpf_get_current_task_btf()  | current, every profile                                      |
//   | bpf_iter_task_new/next/     | -                    | -               | rcu_safe: -;         |
//   |   destroy                   |                      |                 | current/newest (v6.7)|
//
//   "-" means the kfunc does not exist in that profile: calling it is a contract
//   violation naming the profile. kfunc_flags() gives each kfunc's KF_* flags in
//   each profile (what the verifier of that kernel demanded).
//
// Members
//   KF_* flags, kfunc_id, prog_type, kfunc_arg, kfunc_info and the table kfuncs[]
//   (one row per kfunc), info(id), to_string(id), kfunc_exists(), kfunc_flags(),
//   kfunc_returns_maybe_null(), kfunc_allowed()
//   weak kfunc declarations (libbpf's __ksym __weak, ___flavor names): weak_kfunc,
//   bpf_ksym_exists(), resolve_weak_kfunc(); the prototypes they are checked
//   against: btf_kind, btf_type_shape, btf_proto, btf_proto_of, btf_compatible()
//   the kfuncs above; task_kptr_dtor() (the destructor maps and objects run);
//   the task iterator: bpf_iter_task, BPF_TASK_ITER_*, bpf_iter_task_new/next/destroy;
//   task local storage's helpers: bpf_task_storage_get, bpf_task_storage_delete
//
// Context
//   kfuncs are called by a program, i.e. on a thread that runs as a task
//   (kernel::run_as): the kernel is current's. In checked builds a call without
//   current, a NULL or foreign task (not a live task of current's kernel), or a
//   task that was freed, is a contract violation naming the kfunc and the
//   argument — never undefined behaviour inside tasklife. A pid of another
//   kernel is just a number here: the kernel's answer is whatever task, if any,
//   has that number in this kernel.
//
// Lifetime
//   A reference returned by an acquiring kfunc (acquire, from_pid, from_vpid,
//   kptr_get, acquire_not_zero, or xchg out of a slot) is the caller's: release
//   it with bpf_task_release or move it into a slot with bpf_kptr_xchg. A task
//   pointer read from a slot inside bpf_rcu_read_lock stays valid (memory) until
//   bpf_rcu_read_unlock, but may be dying: bpf_task_acquire (KF_RCU) tells. So
//   does a task bpf_iter_task_next yields; the iterator itself holds nothing, and
//   walks only inside the RCU section it was made in.
//
// Memory ordering
//   The counters are refcount_t (refcount.hpp). bpf_kptr_xchg is one acq_rel
//   exchange: release hands the stored reference's prior writes to the next taker,
//   acquire takes the previous owner's; it pairs with every other xchg of the same
//   slot and with the acquire load of a slot read (kptr::get). bpf_iter_task_next
//   reads the task list under the kernel's tasklist_lock (where the kernel walks it
//   with rcu_dereference): the lock pairs with fork's list_add and the free's
//   list_del, and release_task's pid_detached store (release) with the walk's
//   acquire load that skips a released task.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <source_location>
#include <string_view>
#include <sys/types.h>
#include <type_traits>

#include <tasklife/export.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/map.hpp>
#include <tasklife/task.hpp>

namespace tasklife {

// include/linux/btf.h
inline constexpr std::uint32_t KF_ACQUIRE = 1U << 0;
inline constexpr std::uint32_t KF_RELEASE = 1U << 1;
inline constexpr std::uint32_t KF_RET_NULL = 1U << 2;
inline constexpr std::uint32_t KF_KPTR_GET = 1U << 3;  // removed Apr 2023
inline constexpr std::uint32_t KF_TRUSTED_ARGS = 1U << 4;
inline constexpr std::uint32_t KF_SLEEPABLE = 1U << 5;
inline constexpr std::uint32_t KF_DESTRUCTIVE = 1U << 6;
inline constexpr std::uint32_t KF_RCU = 1U << 7;
// Open-coded iterators (v6.4, 06accc8779c1 "bpf: add support for open-coded
// iterator loops"), and the RCU section they need (v6.7, dfab99df147b "bpf: teach
// the verifier to enforce css_iter and task_iter in RCU CS").
inline constexpr std::uint32_t KF_ITER_NEW = 1U << 8;
inline constexpr std::uint32_t KF_ITER_NEXT = 1U << 9;
inline constexpr std::uint32_t KF_ITER_DESTROY = 1U << 10;
inline constexpr std::uint32_t KF_RCU_PROTECTED = 1U << 11;

// The kfuncs' names, in the table's order: the enum and the count come from this
// list, and kfuncs[] below must have one row for each, in the same order (checked).
#define TASKLIFE_KFUNC_IDS(X)  \
  X(bpf_task_acquire)          \
  X(bpf_task_release)          \
  X(bpf_task_release_dtor)     \
  X(bpf_task_from_pid)         \
  X(bpf_task_from_vpid)        \
  X(bpf_task_kptr_get)         \
  X(bpf_task_acquire_not_zero) \
  X(bpf_kptr_xchg)             \
  X(bpf_rcu_read_lock)         \
  X(bpf_rcu_read_unlock)       \
  X(bpf_get_current_task_btf)  \
  X(bpf_probe_read_kernel)     \
  X(bpf_strncmp)               \
  X(bpf_iter_task_new)         \
  X(bpf_iter_task_next)        \
  X(bpf_iter_task_destroy)     \
  X(bpf_task_storage_get)      \
  X(bpf_task_storage_delete)

enum class kfunc_id : std::uint8_t {
#define TASKLIFE_KFUNC_ID_ENUM(name) name,
  TASKLIFE_KFUNC_IDS(TASKLIFE_KFUNC_ID_ENUM)
#undef TASKLIFE_KFUNC_ID_ENUM
};
inline constexpr std::size_t kfunc_id_count = 0
#define TASKLIFE_KFUNC_ID_COUNT(name) +1
    TASKLIFE_KFUNC_IDS(TASKLIFE_KFUNC_ID_COUNT)
#undef TASKLIFE_KFUNC_ID_COUNT
    ;

// BPF_PROG_TYPE_* as far as the task kfuncs care: the kernel registers each kfunc
// set for program types (register_btf_kfunc_id_set), so a kfunc's row says which.
enum class prog_type : std::uint8_t {
  tracing,     // tp_btf/..., fentry/..., fexit/...: non-sleepable
  lsm,         // lsm/...: non-sleepable here
  struct_ops,  // struct_ops/...
  syscall,     // run directly (bpf_prog_test_run): sleepable
  kprobe,
  kretprobe,
  count_,  // not a program type: the number of them
};
inline constexpr std::size_t prog_type_count = static_cast<std::size_t>(prog_type::count_);
TASKLIFE_API std::string_view to_string(prog_type t) noexcept;

// What a kfunc's task argument is, which decides what the verifier accepts there.
enum class kfunc_arg : std::uint8_t {
  none,     // no task argument
  acquire,  // KF_RCU (or KF_TRUSTED_ARGS in the early profiles): a trusted or RCU pointer
  release,  // KF_RELEASE: a referenced pointer, consumed
  xchg_in,  // bpf_kptr_xchg's second argument (OBJ_RELEASE): referenced or NULL, moved
  trusted,  // KF_TRUSTED_ARGS without KF_RCU (or the 2026 default): trusted or referenced
  // A helper's ARG_PTR_TO_BTF_ID_OR_NULL (bpf_task_storage_get/_delete's task, R2):
  // NULL, or a task pointer the verifier types ptr_, trusted_ptr_ or rcu_ptr_
  // (btf_ptr_types); an untrusted or released one is refused.
  helper_btf_id,
};

class bpf_iter_task;

// ---- BTF prototypes, as far as libbpf compares them ------------------------------------------
// A type as __bpf_core_types_are_compat sees it (tools/lib/bpf/relo_core.c): qualifiers
// and typedefs skipped, then its kind; a pointer recurses into what it points to.
// Names play no part: every struct is compatible with every struct, every integer
// with every integer (signedness and width aside), every enum with every enum. libbpf
// has no case for floats: two of them are never compatible. An incomplete struct is a
// FWD in BTF, compatible with no struct; C++ cannot tell an incomplete class portably,
// so tasklife takes every class for a complete one (docs/kfuncs.md).
enum class btf_kind : std::uint8_t { void_, int_, float_, enum_, struct_, union_, ptr };
inline constexpr std::size_t btf_max_depth = 4;   // T***: ptr, ptr, ptr, T
inline constexpr std::size_t btf_max_params = 5;  // a BPF call passes at most five
struct btf_type_shape {
  std::array<btf_kind, btf_max_depth> kinds{};
  std::uint8_t depth = 0;
};
// A FUNC_PROTO: the return type and the parameters. `kfunc` is false for a helper
// (BPF_FUNC_*): its row holds the BPF side's prototype, and no __ksym declaration
// resolves to it here (libbpf would find a helper's BTF FUNC by name, but the
// verifier refuses a kfunc call to a function no kfunc set registers).
struct btf_proto {
  btf_type_shape ret;
  std::array<btf_type_shape, btf_max_params> params{};
  std::uint8_t nparams = 0;
  bool kfunc = true;
};

namespace detail {
template <class T>
constexpr void btf_shape_into(btf_type_shape& s) noexcept {
  using U = std::remove_cv_t<T>;
  btf_kind& k = s.kinds[s.depth++];
  if constexpr (std::is_pointer_v<U>) {
    static_assert(!std::is_function_v<std::remove_pointer_t<U>>,
                  "function pointers are not part of any task kfunc's prototype");
    k = btf_kind::ptr;
    btf_shape_into<std::remove_pointer_t<U>>(s);
  } else if constexpr (std::is_void_v<U>) {
    k = btf_kind::void_;
  } else if constexpr (std::is_integral_v<U>) {
    k = btf_kind::int_;
  } else if constexpr (std::is_floating_point_v<U>) {
    k = btf_kind::float_;
  } else if constexpr (std::is_enum_v<U>) {
    k = btf_kind::enum_;
  } else if constexpr (std::is_union_v<U>) {
    k = btf_kind::union_;
  } else {
    static_assert(std::is_class_v<U>, "a type C has no BTF for (a reference, an array...)");
    k = btf_kind::struct_;
  }
}
template <class T>
constexpr btf_type_shape btf_shape_of() noexcept {
  static_assert(
      std::is_void_v<T> || !std::is_pointer_v<std::remove_pointer_t<
                               std::remove_pointer_t<std::remove_pointer_t<std::remove_cv_t<T>>>>>,
      "more than three levels of pointers");
  btf_type_shape s;
  btf_shape_into<T>(s);
  return s;
}
}  // namespace detail

// btf_proto_of<Fn>::value: the prototype of the C function type Fn.
template <class Fn>
struct btf_proto_of;
template <class R, class... Args>
struct btf_proto_of<R(Args...)> {
  static_assert(sizeof...(Args) <= btf_max_params, "a BPF call passes at most five arguments");
  static constexpr btf_proto value{
      detail::btf_shape_of<R>(), {detail::btf_shape_of<Args>()...}, sizeof...(Args)};
};
template <class R, class... Args>
struct btf_proto_of<R(Args...) noexcept> : btf_proto_of<R(Args...)> {};

constexpr bool btf_compatible(const btf_type_shape& a, const btf_type_shape& b) noexcept {
  if (a.depth != b.depth) {
    return false;
  }
  for (std::size_t i = 0; i < a.depth; ++i) {
    if (a.kinds[i] != b.kinds[i] || a.kinds[i] == btf_kind::float_) {
      return false;
    }
  }
  return true;
}
// __bpf_core_types_are_compat on two FUNC_PROTOs: as many parameters, each
// compatible, and the return types compatible.
constexpr bool btf_compatible(const btf_proto& a, const btf_proto& b) noexcept {
  if (a.nparams != b.nparams || !btf_compatible(a.ret, b.ret)) {
    return false;
  }
  for (std::size_t i = 0; i < a.nparams; ++i) {
    if (!btf_compatible(a.params[i], b.params[i])) {
      return false;
    }
  }
  return true;
}

namespace detail {
// A row's prototype: a kfunc's, and a helper's (resolvable as no __ksym).
template <class Fn>
inline constexpr btf_proto kfunc_proto = btf_proto_of<Fn>::value;
template <class Fn>
inline constexpr btf_proto helper_proto = [] {
  btf_proto p = btf_proto_of<Fn>::value;
  p.kfunc = false;
  return p;
}();
}  // namespace detail

// A kfunc in one profile: whether it exists there, and its KF_* flags.
struct kfunc_in_profile {
  bool exists;
  std::uint32_t flags;
};

// One row per kfunc: the kernel's BTF_ID_FLAGS(func, name, flags) line, for every
// profile, plus what tasklife's checker needs to know about it.
struct kfunc_info {
  kfunc_id id;
  std::string_view name;
  // Its prototype, what libbpf checks a __ksym declaration against (weak_kfunc): a
  // kfunc's as its BTF has it; a helper's is the BPF side's and marked as one.
  btf_proto prototype;
  // In semantics_profile order: rcu_users_inc, usage_based, rcu_safe, current, newest.
  std::array<kfunc_in_profile, semantics_profile_count> in_profile;
  // Bit i: prog_type i may call it (the kfunc set's registered program types).
  std::uint8_t prog_types;
  kfunc_arg task_arg;
  // Returns a pointer the verifier treats as possibly NULL although no KF_RET_NULL
  // says so (a helper: bpf_kptr_xchg's old value).
  bool helper_ret_maybe_null;
  // Its body begins with an operation that is a scheduling point of its own (a
  // counter, a slot, an RCU read lock: sched_point.hpp). Else its entry is
  // announced as a `kfunc` point, before its checks.
  bool entry_announced_by_body = false;
};

namespace detail {
// A row's per-profile column: exactly one entry per profile, or the row does not
// compile (a new profile must be given a column in every row).
template <class... Entries>
requires(sizeof...(Entries) == semantics_profile_count) constexpr std::array<
    kfunc_in_profile, semantics_profile_count> per_profile(Entries... e) noexcept {
  return {e...};
}
inline constexpr kfunc_in_profile kf_absent{false, 0};
constexpr kfunc_in_profile kf(std::uint32_t flags) noexcept {
  return {true, flags};
}
constexpr std::uint8_t prog_types_of(std::initializer_list<prog_type> types) noexcept {
  std::uint8_t bits = 0;
  for (const prog_type t : types) {
    bits = static_cast<std::uint8_t>(bits | (1U << static_cast<unsigned>(t)));
  }
  return bits;
}
// The task kfuncs' set: BTF_KFUNC_HOOK_TRACING (tracing and lsm), struct_ops, syscall.
inline constexpr std::uint8_t task_kfunc_prog_types =
    prog_types_of({prog_type::tracing, prog_type::lsm, prog_type::struct_ops, prog_type::syscall});
// Common kfuncs and base helpers: every program type.
inline constexpr std::uint8_t every_prog_type = (1U << prog_type_count) - 1U;
}  // namespace detail

// The kfunc table (kernel/bpf/helpers.c through its history; docs/kernel.md §5).
// Adding a kfunc: its name in TASKLIFE_KFUNC_IDS, a row here, its body in
// src/kfunc.cpp (CONTRIBUTING.md).
inline constexpr kfunc_info kfuncs[] = {
    {kfunc_id::bpf_task_acquire, "bpf_task_acquire",
     detail::kfunc_proto<task_struct*(task_struct*)>,
     detail::per_profile(detail::kf(KF_ACQUIRE | KF_TRUSTED_ARGS),
                         detail::kf(KF_ACQUIRE | KF_TRUSTED_ARGS),
                         detail::kf(KF_ACQUIRE | KF_RCU | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_RCU | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_RCU | KF_RET_NULL)),
     detail::task_kfunc_prog_types, kfunc_arg::acquire, false, true},
    {kfunc_id::bpf_task_release, "bpf_task_release", detail::kfunc_proto<void(task_struct*)>,
     detail::per_profile(detail::kf(KF_RELEASE), detail::kf(KF_RELEASE), detail::kf(KF_RELEASE),
                         detail::kf(KF_RELEASE), detail::kf(KF_RELEASE)),
     detail::task_kfunc_prog_types, kfunc_arg::release, false, true},
    {kfunc_id::bpf_task_release_dtor, "bpf_task_release_dtor", detail::kfunc_proto<void(void*)>,
     detail::per_profile(detail::kf_absent, detail::kf_absent, detail::kf_absent, detail::kf(0),
                         detail::kf(0)),
     detail::task_kfunc_prog_types, kfunc_arg::none, false},
    {kfunc_id::bpf_task_from_pid, "bpf_task_from_pid",
     detail::kfunc_proto<task_struct*(std::int32_t)>,
     detail::per_profile(detail::kf(KF_ACQUIRE | KF_RET_NULL), detail::kf(KF_ACQUIRE | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_RET_NULL), detail::kf(KF_ACQUIRE | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_RET_NULL)),
     detail::task_kfunc_prog_types, kfunc_arg::none, false},
    {kfunc_id::bpf_task_from_vpid, "bpf_task_from_vpid",
     detail::kfunc_proto<task_struct*(std::int32_t)>,
     detail::per_profile(detail::kf_absent, detail::kf_absent, detail::kf_absent,
                         detail::kf(KF_ACQUIRE | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_RET_NULL)),
     detail::task_kfunc_prog_types, kfunc_arg::none, false},
    {kfunc_id::bpf_task_kptr_get, "bpf_task_kptr_get",
     detail::kfunc_proto<task_struct*(task_struct**)>,
     detail::per_profile(detail::kf(KF_ACQUIRE | KF_KPTR_GET | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_KPTR_GET | KF_RET_NULL), detail::kf_absent,
                         detail::kf_absent, detail::kf_absent),
     detail::task_kfunc_prog_types, kfunc_arg::none, false, true},
    {kfunc_id::bpf_task_acquire_not_zero, "bpf_task_acquire_not_zero",
     detail::kfunc_proto<task_struct*(task_struct*)>,
     detail::per_profile(detail::kf(KF_ACQUIRE | KF_RCU | KF_RET_NULL),
                         detail::kf(KF_ACQUIRE | KF_RCU | KF_RET_NULL), detail::kf_absent,
                         detail::kf_absent, detail::kf_absent),
     detail::task_kfunc_prog_types, kfunc_arg::acquire, false, true},
    {kfunc_id::bpf_kptr_xchg, "bpf_kptr_xchg", detail::helper_proto<void*(void*, void*)>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::xchg_in, true, true},
    {kfunc_id::bpf_rcu_read_lock, "bpf_rcu_read_lock", detail::kfunc_proto<void()>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::none, false, true},
    {kfunc_id::bpf_rcu_read_unlock, "bpf_rcu_read_unlock", detail::kfunc_proto<void()>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::none, false, true},
    // A tracing helper, which syscall programs fall back to as well.
    {kfunc_id::bpf_get_current_task_btf, "bpf_get_current_task_btf",
     detail::helper_proto<task_struct*()>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::none, false},
    // Helpers (BPF_FUNC_*): a tracing helper and a base one (bpf_base_func_proto).
    {kfunc_id::bpf_probe_read_kernel, "bpf_probe_read_kernel",
     detail::helper_proto<long(void*, std::uint32_t, const void*)>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::none, false},
    {kfunc_id::bpf_strncmp, "bpf_strncmp",
     detail::helper_proto<long(const char*, std::uint32_t, const char*)>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::none, false},
    // The task iterator (c68a78ffe2cb "bpf: Introduce task open coded iterator
    // kfuncs", v6.7, with dfab99df147b's KF_RCU_PROTECTED; absent from rcu_safe,
    // whose kernels are v6.4 .. v6.6 in what it models). Registered in the common
    // set (common_btf_ids): every program type. 7646c7afd9a9 dropped
    // KF_TRUSTED_ARGS from _new.
    {kfunc_id::bpf_iter_task_new, "bpf_iter_task_new",
     detail::kfunc_proto<int(bpf_iter_task*, task_struct*, unsigned int)>,
     detail::per_profile(detail::kf_absent, detail::kf_absent, detail::kf_absent,
                         detail::kf(KF_ITER_NEW | KF_TRUSTED_ARGS | KF_RCU_PROTECTED),
                         detail::kf(KF_ITER_NEW | KF_RCU_PROTECTED)),
     detail::every_prog_type, kfunc_arg::trusted, false},
    {kfunc_id::bpf_iter_task_next, "bpf_iter_task_next",
     detail::kfunc_proto<task_struct*(bpf_iter_task*)>,
     detail::per_profile(detail::kf_absent, detail::kf_absent, detail::kf_absent,
                         detail::kf(KF_ITER_NEXT | KF_RET_NULL),
                         detail::kf(KF_ITER_NEXT | KF_RET_NULL)),
     detail::every_prog_type, kfunc_arg::none, false},
    {kfunc_id::bpf_iter_task_destroy, "bpf_iter_task_destroy",
     detail::kfunc_proto<void(bpf_iter_task*)>,
     detail::per_profile(detail::kf_absent, detail::kf_absent, detail::kf_absent,
                         detail::kf(KF_ITER_DESTROY), detail::kf(KF_ITER_DESTROY)),
     detail::every_prog_type, kfunc_arg::none, false},
    // Helpers of task local storage (4cf1bc1f1045, v5.11): every profile. Their
    // program types are the kernel's func_proto lists, which tasklife does not
    // model for helpers (every type may call them here).
    {kfunc_id::bpf_task_storage_get, "bpf_task_storage_get",
     detail::helper_proto<void*(void*, task_struct*, void*, std::uint64_t)>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::helper_btf_id, true, true},
    {kfunc_id::bpf_task_storage_delete, "bpf_task_storage_delete",
     detail::helper_proto<long(void*, task_struct*)>,
     detail::per_profile(detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0), detail::kf(0)),
     detail::every_prog_type, kfunc_arg::helper_btf_id, false, true},
};
static_assert(std::size(kfuncs) == kfunc_id_count,
              "kfuncs[] must have one row per kfunc in TASKLIFE_KFUNC_IDS");

namespace detail {
constexpr bool kfunc_table_in_enum_order() {
  for (std::size_t i = 0; i < kfunc_id_count; ++i) {
    if (static_cast<std::size_t>(kfuncs[i].id) != i) {
      return false;
    }
  }
  return true;
}
}  // namespace detail
static_assert(detail::kfunc_table_in_enum_order(),
              "kfuncs[] must have one row per kfunc_id, in the enum's order");

namespace detail {
// 1a5c01d2508a removed the flag itself: a profile that has trusted arguments by
// default lists no kfunc with KF_TRUSTED_ARGS.
constexpr bool no_trusted_args_flag_where_default() {
  for (const profile_info& p : semantics_profiles) {
    for (const kfunc_info& k : kfuncs) {
      if (p.trusted_args_default &&
          (k.in_profile[static_cast<std::size_t>(p.profile)].flags & KF_TRUSTED_ARGS) != 0) {
        return false;
      }
    }
  }
  return true;
}
}  // namespace detail
static_assert(
    detail::no_trusted_args_flag_where_default(),
    "KF_TRUSTED_ARGS does not exist in a profile where trusted arguments are the default");

constexpr const kfunc_info& info(kfunc_id id) noexcept {
  return kfuncs[static_cast<std::size_t>(id)];
}
constexpr std::string_view to_string(kfunc_id id) noexcept {
  return info(id).name;
}
// Whether the kfunc exists in the profile.
constexpr bool kfunc_exists(semantics_profile profile, kfunc_id id) noexcept {
  return info(id).in_profile[static_cast<std::size_t>(profile)].exists;
}
// Its KF_* flags there (0 for helpers such as bpf_kptr_xchg, and for absent ones).
constexpr std::uint32_t kfunc_flags(semantics_profile profile, kfunc_id id) noexcept {
  return info(id).in_profile[static_cast<std::size_t>(profile)].flags;
}
// Whether the verifier of that kernel treats the kfunc's result as possibly NULL.
constexpr bool kfunc_returns_maybe_null(semantics_profile profile, kfunc_id id) noexcept {
  return (kfunc_flags(profile, id) & KF_RET_NULL) != 0 || info(id).helper_ret_maybe_null;
}
// Whether a program type may call the kfunc.
constexpr bool kfunc_allowed(prog_type type, kfunc_id id) noexcept {
  return (info(id).prog_types & (1U << static_cast<unsigned>(type))) != 0;
}

// ---- weak kfunc declarations (libbpf's `__ksym __weak`, with ___flavor names) ------------------
// A BPF object declares the kfuncs it calls; a weak declaration that the running
// kernel cannot satisfy is NULL instead of failing the load, and the program asks
// bpf_ksym_exists() before calling it. Since 5964a223f5e4 (libbpf in v6.6, Aug 2023;
// selftests 63ae8eb2c5b1, the two test_task_kfunc_flavor_relo programs) a name may
// carry a "___flavor" suffix, so that one object can declare two versions of a
// kfunc's prototype under two names:
//   struct task_struct *bpf_task_acquire___one(struct task_struct *) __ksym __weak;
//   struct task_struct *bpf_task_acquire___two(struct task_struct *, void *) __ksym __weak;
// libbpf resolves each on its own: the name without its suffix must be a kfunc of the
// kernel (here: a kfunc row that exists in the profile), and the declared prototype
// must be compatible with the kernel's (bpf_core_types_are_compat, btf_proto). No
// declaration resolves to a helper here (btf_proto::kfunc).

namespace detail {
// bpf_core_essential_name_len: the name up to its last "X___Y" separator (X and Y
// not underscores); the whole name if it has none.
constexpr std::string_view essential_name(std::string_view name) noexcept {
  for (std::size_t i = name.size() < 5 ? 0 : name.size() - 4; i-- > 0;) {
    if (name[i] != '_' && name.substr(i + 1, 3) == "___" && name[i + 4] != '_') {
      return name.substr(0, i + 1);
    }
  }
  return name;
}
}  // namespace detail

// The kfunc a weak declaration of `declared_name` with prototype `declared`
// resolves to in `profile`, or none (the symbol is NULL there).
constexpr std::optional<kfunc_id> resolve_weak_kfunc(semantics_profile profile,
                                                     std::string_view declared_name,
                                                     const btf_proto& declared) noexcept {
  const std::string_view name = detail::essential_name(declared_name);
  for (const kfunc_info& k : kfuncs) {
    if (k.name == name) {
      if (!k.prototype.kfunc || !kfunc_exists(profile, k.id) ||
          !btf_compatible(declared, k.prototype)) {
        return std::nullopt;  // found but not usable: a weak symbol stays unresolved
      }
      return k.id;
    }
  }
  return std::nullopt;
}

// One weak declaration with C prototype Fn, resolved against a kernel's profile as
// libbpf resolves it at load. The name is not copied: it must outlive the object
// (a literal does). Call the kfunc it resolved to by its own name, as the
// program's call through the declaration does (a call through an unresolved
// declaration, which libbpf poisons and the verifier refuses if reachable, is not
// modelled: ask bpf_ksym_exists first):
//   const weak_kfunc<task_struct*(task_struct*)> one(k, "bpf_task_acquire___one");
//   if (bpf_ksym_exists(one)) acquired = bpf_task_acquire(task);
template <class Fn>
class weak_kfunc {
 public:
  constexpr weak_kfunc(semantics_profile profile, std::string_view declared_name) noexcept
      : name_(declared_name),
        target_(resolve_weak_kfunc(profile, declared_name, btf_proto_of<Fn>::value)) {}
  weak_kfunc(const kernel& k, std::string_view declared_name) noexcept
      : weak_kfunc(k.config().profile, declared_name) {}

  // The declared name ("bpf_task_acquire___one") and the kfunc it resolved to.
  constexpr std::string_view name() const noexcept { return name_; }
  constexpr std::optional<kfunc_id> target() const noexcept { return target_; }
  constexpr bool resolved() const noexcept { return target_.has_value(); }

 private:
  std::string_view name_;
  std::optional<kfunc_id> target_;
};

// bpf_ksym_exists(sym): whether the weak declaration resolved.
template <class Fn>
constexpr bool bpf_ksym_exists(const weak_kfunc<Fn>& sym) noexcept {
  return sym.resolved();
}

/**
 * bpf_task_acquire - acquire a reference to a task
 * @p: the task; trusted (KF_TRUSTED_ARGS, <= v6.3) or RCU-protected (KF_RCU, v6.4+)
 *
 * rcu_safe/current: refcount_inc_not_zero(&p->rcu_users); p, or NULL when the
 *   task is dying (rcu_users already 0). KF_ACQUIRE | KF_RCU | KF_RET_NULL.
 * usage_based: get_task_struct(p); p. KF_ACQUIRE | KF_TRUSTED_ARGS.
 * rcu_users_inc: refcount_inc(&p->rcu_users); p, never NULL — from 0 this is the
 *   ADD_UAF warning and the task is freed under the caller (docs/kernel.md §3).
 */
inline task_struct* bpf_task_acquire(task_struct* p,
                                     std::source_location where = std::source_location::current());

/**
 * bpf_task_release - release a reference acquired on a task
 * @p: a referenced task (KF_RELEASE)
 *
 * rcu_safe/current: put_task_struct_rcu_user(p). usage_based: put_task_struct(p).
 * rcu_users_inc: put_task_struct_rcu_user(p). The two early profiles returned at
 * once on NULL; from 2023 the verifier makes NULL impossible (a violation here).
 */
inline void bpf_task_release(task_struct* p,
                             std::source_location where = std::source_location::current());

/**
 * bpf_task_release_dtor - the map/object destructor for task kptrs (v6.8, "bpf:
 * Fix dtor CFI"): bpf_task_release behind a void * signature. current only.
 */
TASKLIFE_API void bpf_task_release_dtor(void* p);

/**
 * bpf_task_from_pid - find a task by its pid in the root pid namespace and
 * acquire a reference to it. KF_ACQUIRE | KF_RET_NULL. NULL for unknown,
 * negative or out-of-range pids; in rcu_safe/current also for a dying task.
 * rcu_users_inc ignores the acquire's outcome and returns the task regardless.
 */
inline task_struct* bpf_task_from_pid(std::int32_t pid,
                                      std::source_location where = std::source_location::current());

/**
 * bpf_task_from_vpid - the same, resolving @vpid in current's pid namespace
 * (v6.13, current only). KF_ACQUIRE | KF_RET_NULL.
 */
TASKLIFE_API task_struct* bpf_task_from_vpid(
    std::int32_t vpid, std::source_location where = std::source_location::current());

/**
 * bpf_task_kptr_get - acquire the task stored in a kptr slot (rcu_users_inc:
 * under RCU, read the slot, inc_not_zero on rcu_users; usage_based: always NULL).
 * KF_ACQUIRE | KF_KPTR_GET | KF_RET_NULL. Removed in v6.4 (f85671c6ef46).
 */
TASKLIFE_API task_struct* bpf_task_kptr_get(
    kptr<task_struct>* slot, std::source_location where = std::source_location::current());

/**
 * bpf_task_acquire_not_zero - rcu_users_inc: inc_not_zero on rcu_users, p or NULL
 * (fca1aa75518c); usage_based: always NULL. KF_ACQUIRE | KF_RCU | KF_RET_NULL.
 * Removed in v6.4 (f85671c6ef46): identical to the new bpf_task_acquire.
 */
TASKLIFE_API task_struct* bpf_task_acquire_not_zero(
    task_struct* p, std::source_location where = std::source_location::current());

/**
 * bpf_kptr_xchg - atomically exchange the task in @slot with @p
 * @slot: a kptr slot of a live map value or local object
 * @p: a referenced task or NULL; the reference moves into the slot
 *
 * Returns the previous content of the slot: a reference the caller now owns
 * (release it or store it again), or NULL. One atomic exchange.
 */
inline task_struct* bpf_kptr_xchg(kptr<task_struct>* slot, task_struct* p,
                                  std::source_location where = std::source_location::current());

/** bpf_rcu_read_lock / bpf_rcu_read_unlock - current's kernel's RCU read-side section. */
TASKLIFE_API void bpf_rcu_read_lock(std::source_location where = std::source_location::current());
TASKLIFE_API void bpf_rcu_read_unlock(std::source_location where = std::source_location::current());

/** bpf_get_current_task_btf - current, as a trusted pointer. */
TASKLIFE_API task_struct* bpf_get_current_task_btf(
    std::source_location where = std::source_location::current());

/**
 * bpf_probe_read_kernel - copy @size bytes from kernel address @unsafe_ptr to @dst
 * @dst: memory the program may write (ARG_PTR_TO_UNINIT_MEM): its stack or a map
 *   value, never a BTF pointer such as task->comm ("write into memory")
 *
 * Returns 0. The kernel's copy_from_kernel_nofault survives a bad address with
 * -EFAULT; tasklife cannot probe an address and copies, so @unsafe_ptr must be
 * readable memory (a task's field, as in the selftests).
 */
TASKLIFE_API long bpf_probe_read_kernel(
    void* dst, std::uint32_t size, const void* unsafe_ptr,
    std::source_location where = std::source_location::current());

/**
 * bpf_strncmp - compare the first @s1_sz bytes of @s1 with the string @s2
 * @s1: memory (ARG_PTR_TO_MEM) of @s1_sz bytes: from a task, only a trusted one,
 *   and only inside the member it points into ("access beyond the end of member
 *   comm"); a fentry argument's comm is a legacy pointer ("R1 type=ptr_ expected")
 *
 * Returns as strncmp(s1, s2, s1_sz).
 */
TASKLIFE_API long bpf_strncmp(const char* s1, std::uint32_t s1_sz, const char* s2,
                              std::source_location where = std::source_location::current());

/**
 * btf_walk - a program's load of an RCU-safe pointer field of a task
 * @base: the task
 * @field: &task_struct::real_parent or &task_struct::group_leader, the fields
 *   BTF_TYPE_SAFE_RCU(struct task_struct) lists (kernel/bpf/verifier.c, "bpf:
 *   Refactor RCU enforcement in the verifier", Mar 2023, v6.4)
 *
 * What `base->group_leader` is in BPF C, made visible to the checker: from a
 * trusted, referenced or RCU base inside an RCU section it is an RCU pointer,
 * never NULL, which bpf_task_acquire (KF_RCU) takes; outside any section it is
 * untrusted. real_parent is read under tasklist_lock (it changes on reparenting).
 */
TASKLIFE_API task_struct* btf_walk(task_struct* base, task_struct* task_struct::*field,
                                   std::source_location where = std::source_location::current());

// ---- the task iterator (c68a78ffe2cb "bpf: Introduce task open coded iterator kfuncs", v6.7) ----

// bpf_iter_task_new's flags (kernel/bpf/task_iter.c).
enum : unsigned int {
  BPF_TASK_ITER_ALL_PROCS,     // every process (thread-group leader); @task is ignored
  BPF_TASK_ITER_ALL_THREADS,   // every thread of every process; @task is ignored
  BPF_TASK_ITER_PROC_THREADS,  // every thread of @task's process, @task first
};

namespace detail {
struct iter_task_access;
}  // namespace detail

// struct bpf_iter_task: the iterator a program keeps on its stack. A new one is
// uninitialized (the verifier's fresh stack slot); bpf_iter_task_new initializes
// it, bpf_iter_task_destroy makes it uninitialized again. It holds no reference:
// the tasks it yields are kept by the RCU section it runs in. Not copyable (the
// verifier does not let a program copy an iterator's slots).
class bpf_iter_task {
 public:
  constexpr bpf_iter_task() noexcept = default;
  bpf_iter_task(const bpf_iter_task&) = delete;
  bpf_iter_task& operator=(const bpf_iter_task&) = delete;
  ~bpf_iter_task() = default;

 private:
  friend struct detail::iter_task_access;
  kernel* kernel_ = nullptr;
  task_struct* task_ = nullptr;  // PROC_THREADS: where the walk starts and ends
  task_struct* pos_ = nullptr;   // the task yielded last (nullptr: none yet)
  unsigned int flags_ = 0;
  bool active_ = false;   // between new and destroy
  bool walking_ = false;  // new succeeded inside an RCU section: next may walk
  bool wrapped_ = false;  // PROC_THREADS: the walk went past the list's end
  bool done_ = false;     // next returned NULL: it will again
};

/**
 * bpf_iter_task_new - initialize a task iterator
 * @it: an uninitialized iterator ("expected uninitialized iter_task as arg #0")
 * @task: PROC_THREADS: a trusted or referenced task whose process to walk (NULL is
 *   -EINVAL); ignored (and may be NULL, task__nullable) for the other flavors
 * @flags: BPF_TASK_ITER_ALL_PROCS, _ALL_THREADS or _PROC_THREADS; else -EINVAL
 *
 * KF_ITER_NEW | KF_RCU_PROTECTED: must be called inside an RCU read-side section
 * (a non-sleepable program's implicit one counts). Returns 0 or -EINVAL; either
 * way @it is initialized and must be destroyed ("Unreleased reference"). Outside
 * an RCU section: in a checked program run the checker reports it (newest at this
 * call, current at the iterator's first use) and the iterator yields nothing;
 * elsewhere it is a contract violation (missing_rcu_lock) and @it stays
 * uninitialized. An iterator whose section ended yields nothing either.
 */
TASKLIFE_API int bpf_iter_task_new(bpf_iter_task* it, task_struct* task, unsigned int flags,
                                   std::source_location where = std::source_location::current());

/**
 * bpf_iter_task_next - the next task of the walk, or NULL at its end
 *
 * KF_ITER_NEXT | KF_RET_NULL. The task is an RCU pointer: valid until the
 * section ends, possibly exiting, a zombie or dying (bpf_task_acquire, KF_RCU,
 * may return NULL for it); a task released (reaped) before the walk reached it
 * is skipped, as list_del_rcu takes it off the kernel's list. Each call is a
 * scheduling point for the explorer.
 */
TASKLIFE_API task_struct* bpf_iter_task_next(
    bpf_iter_task* it, std::source_location where = std::source_location::current());

/** bpf_iter_task_destroy - end the walk (KF_ITER_DESTROY): @it is uninitialized again. */
TASKLIFE_API void bpf_iter_task_destroy(
    bpf_iter_task* it, std::source_location where = std::source_location::current());

// ---- task local storage (kernel/bpf/bpf_task_storage.c) ----------------------------------------

namespace detail {
TASKLIFE_API void* bpf_task_storage_get_erased(task_storage_map_base* map, task_struct* task,
                                               const void* value, std::uint64_t flags,
                                               std::source_location where);
TASKLIFE_API long bpf_task_storage_delete_erased(task_storage_map_base* map, task_struct* task,
                                                 std::source_location where);
}  // namespace detail

/**
 * bpf_task_storage_get - @task's value in @map
 * @value: the new value's initial content with BPF_LOCAL_STORAGE_GET_F_CREATE, or
 *   NULL (value-initialized)
 * @flags: 0 or BPF_LOCAL_STORAGE_GET_F_CREATE (anything else: NULL)
 *
 * Returns the value, or NULL: none and no F_CREATE, a NULL task, or creation
 * refused because @task's usage is already 0 ("only allocate new storage, when
 * the task is refcounted"). The value lives until bpf_task_storage_delete (then a
 * grace period), until the task's memory is freed (free_task), or until the map
 * is destroyed. Inside an RCU section (bpf_rcu_lock_held); checked builds report
 * a freed task as a use-after-free.
 */
template <class Value>
Value* bpf_task_storage_get(bpf_task_storage_map<Value>* map, task_struct* task,
                            const std::type_identity_t<Value>* value, std::uint64_t flags,
                            std::source_location where = std::source_location::current()) {
  return static_cast<Value*>(detail::bpf_task_storage_get_erased(map, task, value, flags, where));
}

/**
 * bpf_task_storage_delete - remove @task's value from @map: 0, -ENOENT (none), or
 * -EINVAL (NULL task). The value is freed after a grace period.
 */
template <class Value>
long bpf_task_storage_delete(bpf_task_storage_map<Value>* map, task_struct* task,
                             std::source_location where = std::source_location::current()) {
  return detail::bpf_task_storage_delete_erased(map, task, where);
}

// ---- the fast paths ----------------------------------------------------------------------------
//
// With checks compiled out (TASKLIFE_CHECKS=none), no program run watching the
// thread, a v6.4+ profile and a kernel none of whose tasks was ever traced or
// holder-tracked, the kfuncs below are the kernel's bodies inlined into the
// caller: one thread-local line and one read-mostly line of the kernel are all
// they read besides the counter. Anything else takes the out-of-line path
// (detail::*_slow), which does every check and hook.

namespace detail {
TASKLIFE_API task_struct* bpf_task_acquire_slow(task_struct* p, std::source_location where);
TASKLIFE_API void bpf_task_release_slow(task_struct* p, std::source_location where);
TASKLIFE_API task_struct* bpf_task_from_pid_slow(std::int32_t pid, std::source_location where);
TASKLIFE_API task_struct* bpf_kptr_xchg_slow(kptr<task_struct>* slot, task_struct* p,
                                             std::source_location where);

inline bool kfunc_fast(const current_context& ctx) noexcept {
  return ctx.run == nullptr && ctx.owner != nullptr && ctx.inline_fast_path &&
         !kernel_access::any_task_slow(*ctx.owner);
}
}  // namespace detail

inline task_struct* bpf_task_acquire(task_struct* p, std::source_location where) {
  if constexpr (!contract_checks_enabled) {
    if (detail::kfunc_fast(detail::tls_ctx)) [[likely]] {
      return refcount_inc_not_zero(&p->rcu_users, where) ? p : nullptr;
    }
  }
  return detail::bpf_task_acquire_slow(p, where);
}

inline void bpf_task_release(task_struct* p, std::source_location where) {
  if constexpr (!contract_checks_enabled) {
    if (detail::kfunc_fast(detail::tls_ctx)) [[likely]] {
      if (refcount_dec_and_test(&p->rcu_users, where)) {
        detail::kernel_access::on_rcu_users_zero(task_kernel(p), p,
                                                 where);  // put_task_struct_rcu_user's last drop
      }
      return;
    }
  }
  detail::bpf_task_release_slow(p, where);
}

inline task_struct* bpf_task_from_pid(std::int32_t pid, std::source_location where) {
  if constexpr (!contract_checks_enabled) {
    const detail::current_context& ctx = detail::tls_ctx;
    if (detail::kfunc_fast(ctx)) [[likely]] {
      const rcu_read_guard guard(*ctx.rcu);
      task_struct* p = ctx.init_lookup.find(pid);
      if (p == nullptr) {
        return nullptr;
      }
      // The lookup's acquire load synchronises with fork's publication of p, which
      // follows the setting of its flags for a task traced from its fork. They sit
      // on the line the CAS takes next, so testing them costs no further miss.
      if (p->traced.load(std::memory_order_relaxed) || p->holders_tracked) [[unlikely]] {
        return detail::bpf_task_from_pid_slow(pid, where);
      }
      return refcount_inc_not_zero(&p->rcu_users, where) ? p : nullptr;
    }
  }
  return detail::bpf_task_from_pid_slow(pid, where);
}

inline task_struct* bpf_kptr_xchg(kptr<task_struct>* slot, task_struct* p,
                                  std::source_location where) {
  if constexpr (!contract_checks_enabled) {
    if (detail::kfunc_fast(detail::tls_ctx)) [[likely]] {
      return detail::kptr_exchange(slot, p);
    }
  }
  return detail::bpf_kptr_xchg_slow(slot, p, where);
}

}  // namespace tasklife
