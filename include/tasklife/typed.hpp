// tasklife/typed.hpp — the task kfuncs over types that carry the verifier's state.
//
// What it is
//   The same kfuncs as kfunc.hpp (for the `current` profile's rules), but each
//   pointer state the verifier tracks is a C++ type, so that every rule a type can
//   express is a compile error:
//
//   | type                 | the verifier's state        | may be                               |
//   |----------------------|-----------------------------|--------------------------------------|
//   | trusted_ptr<T>       | PTR_TRUSTED                 | read, acquired; never released       |
//   | task_free_arg<T>     | trusted, not RCU-safe       | read; not acquired, not released     |
//   | owned_ref<T>         | referenced (ref_obj_id)     | read, acquired again, released or    |
//   |                      |                             | stored (consumed, move-only)         |
//   | maybe_ref<T>         | PTR_MAYBE_NULL + referenced | tested; nothing else until checked   |
//   | rcu_ptr<T>           | MEM_RCU | PTR_MAYBE_NULL    | read, tested; not released; lives in |
//   |                      |                             | its rcu_guard's scope                |
//   | checked_rcu_ptr<T>   | MEM_RCU, NULL-checked       | read, acquired; not released         |
//   | untrusted_ptr<T>     | PTR_UNTRUSTED               | compared with NULL; nothing accepts it|
//
//   Rules as compile errors (tests/compile_fail proves each): releasing a trusted,
//   RCU, untrusted or unchecked pointer; acquiring an untrusted one or the
//   lsm/task_free argument; storing anything but an owned reference (or NULL) into
//   a slot; acquiring an rcu_ptr not checked against NULL, or walking its fields
//   (btf_walk); copying an owned
//   reference; releasing without giving it up
//   (std::move); dereferencing an unchecked result; discarding an acquiring
//   kfunc's result; reading a slot under a temporary guard; passing nullptr or a
//   raw pointer to acquire or release; a task iterator made without a named
//   rcu_guard, from a task that is not trusted or referenced, never destroyed,
//   used before new or after destroy, or made twice (task_iter). The verifier's
//   words are in the static_assert messages.
//
//   Rules left to run time: an owned reference or a non-NULL maybe_ref dropped
//   without release (inside a checked program run, the program's violation
//   "Unreleased reference" (violation_kind::unreleased_ref), saying whether it was
//   checked; elsewhere the contract handler's; named with the place it was
//   acquired; tasklife releases it so the kernel stays consistent). Through the
//   contract handler: use of a moved-from reference, an rcu_ptr used after its
//   section ended, a NULL checked_rcu_ptr acquired anyway, a task_iter used after
//   its rcu_guard ended.
//
// Members
//   trusted_ptr, task_free_arg, owned_ref, maybe_ref, rcu_ptr, checked_rcu_ptr, untrusted_ptr,
//   rcu_guard, read(slot, guard), read(slot), and in namespace typed:
//   bpf_task_acquire, bpf_task_release, bpf_task_from_pid, bpf_task_from_vpid,
//   bpf_kptr_xchg, bpf_get_current_task_btf, btf_walk (group_leader, real_parent);
//   and, in namespace tasklife itself, task_iter and task_iter_flavor (the task
//   iterator, bpf_iter_task_*)
//
// Lifetime
//   Wrappers own nothing but an owned_ref's (or maybe_ref's) one reference. They
//   are as cheap as the raw pointers: one pointer and the acquisition site. A
//   task_iter owns its iterator: made in its constructor, destroyed in its
//   destructor; the tasks it yields live as long as its rcu_guard.
//
// Memory ordering
//   That of the raw kfuncs they call (kfunc.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <source_location>
#include <type_traits>
#include <utility>

#include <tasklife/check.hpp>
#include <tasklife/export.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/task.hpp>

namespace tasklife {

template <class T>
class owned_ref;
template <class T>
class maybe_ref;
template <class T>
class rcu_ptr;
template <class T>
class checked_rcu_ptr;
class rcu_guard;
class task_iter;

namespace detail {
template <class>
inline constexpr bool always_false = false;

// Reports a typed-API rule broken at run time (noexcept contexts included).
TASKLIFE_API void report_typed(contract_kind kind, const char* op, const char* what,
                               const task_struct* t, std::source_location where,
                               std::source_location acquired_at) noexcept;
// A typed reference dropped without release, from a destructor. Inside a checked
// program run that knows the reference, it is the program's violation
// (violation_kind::unreleased_ref, "Unreleased reference", with `what` added);
// elsewhere it goes to the contract handler (contract_kind::unreleased_reference,
// operation `op`). Either way it is then released (without the checker seeing a
// release) so that the kernel stays consistent.
TASKLIFE_API void drop_typed(task_struct* p, const char* op, const char* what,
                             std::source_location acquired_at) noexcept;
// rcu_guard identities: a guard is alive while its id is on the thread's stack.
TASKLIFE_API std::uint64_t guard_enter() noexcept;
TASKLIFE_API void guard_exit(std::uint64_t id) noexcept;
TASKLIFE_API bool guard_alive(std::uint64_t id) noexcept;
}  // namespace detail

// PTR_TRUSTED: a tracepoint's or struct_ops' argument, bpf_get_current_task_btf().
template <class T>
class trusted_ptr {
 public:
  // A program's trusted argument (what the verifier knows of tp_btf/struct_ops args).
  static trusted_ptr from_prog_arg(T* p) noexcept { return trusted_ptr(p); }
  T* get() const noexcept { return p_; }
  T* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  template <class U>
  friend class owned_ref;
  friend trusted_ptr<task_struct> typed_current(std::source_location) noexcept;
  explicit trusted_ptr(T* p) noexcept : p_(p) {}
  T* p_;
};

// The lsm/task_free argument: trusted for reading, but not RCU-safe: the task is
// being freed, so it may be neither acquired nor released.
template <class T>
class task_free_arg {
 public:
  static task_free_arg from_prog_arg(T* p) noexcept { return task_free_arg(p); }
  T* operator->() const noexcept { return p_; }
  T* get() const noexcept { return p_; }

 private:
  explicit task_free_arg(T* p) noexcept : p_(p) {}
  T* p_;
};

// A referenced pointer: the caller owns one reference. Move-only; released by
// typed::bpf_task_release(std::move(ref)) or stored by typed::bpf_kptr_xchg.
template <class T>
class [[nodiscard("an acquired reference must be released or stored")]] owned_ref {
 public:
  owned_ref(owned_ref && other) noexcept
      : p_(std::exchange(other.p_, nullptr)), acquired_at_(other.acquired_at_) {}
  owned_ref(const owned_ref&) = delete;
  owned_ref& operator=(const owned_ref&) = delete;
  owned_ref& operator=(owned_ref&&) = delete;  // would drop the old reference
  ~owned_ref() {
    if (p_ != nullptr) [[unlikely]] {
      dropped();
    }
  }

  T* get() const noexcept {
    return p_;
  }
  T* operator->() const noexcept {
    return p_;
  }
  // A referenced pointer is trusted while it is held.
  trusted_ptr<T> trusted() const noexcept {
    return trusted_ptr<T>(p_);
  }
  std::source_location acquired_at() const noexcept {
    return acquired_at_;
  }

  // Gives the reference up to a raw-API caller (who must then release it).
  [[nodiscard]] T* release_to_raw()&& noexcept {
    return std::exchange(p_, nullptr);
  }

 private:
  template <class U>
  friend class maybe_ref;
  friend void typed_release(owned_ref<task_struct> && ref, std::source_location where);
  friend maybe_ref<task_struct> typed_xchg(kptr<task_struct> * slot, owned_ref<task_struct> && p,
                                           std::source_location where);
  owned_ref(T * p, std::source_location at) noexcept : p_(p), acquired_at_(at) {}
  [[gnu::cold]] void dropped() noexcept {
    detail::drop_typed(std::exchange(p_, nullptr), "~owned_ref",
                       "an owned reference was dropped without release (it was checked)",
                       acquired_at_);
  }

  T* p_;
  std::source_location acquired_at_;
};

// The result of an acquiring kfunc (KF_ACQUIRE | KF_RET_NULL): test it, then
// take the owned reference. Nothing else accepts it.
template <class T>
class [[nodiscard("the result of an acquiring kfunc must be checked and released")]] maybe_ref {
 public:
  maybe_ref(maybe_ref && other) noexcept
      : bits_(std::exchange(other.bits_, 0)), acquired_at_(other.acquired_at_) {}
  maybe_ref(const maybe_ref&) = delete;
  maybe_ref& operator=(const maybe_ref&) = delete;
  maybe_ref& operator=(maybe_ref&&) = delete;
  ~maybe_ref() {
    if (pointer() != nullptr) [[unlikely]] {
      const bool checked = (bits_ & kChecked) != 0;
      detail::drop_typed(pointer(), "~maybe_ref",
                         checked ? "an acquired reference was checked, then dropped without "
                                   "release"
                                 : "an acquired reference was dropped unchecked and unreleased",
                         acquired_at_);
      bits_ = 0;
    }
  }

  // The NULL check the verifier demands (remembered, for the report of a drop).
  explicit operator bool() const noexcept {
    bits_ |= kChecked;
    return pointer() != nullptr;
  }

  // The owned reference, after a successful check (a NULL one is reported).
  owned_ref<T> take(std::source_location where = std::source_location::current())&& noexcept {
    T* const p = pointer();
    bits_ = 0;
    if (p == nullptr) [[unlikely]] {
      detail::report_typed(contract_kind::unchecked_null, "maybe_ref::take",
                           "take() of a NULL result: check it first", nullptr, where, acquired_at_);
    }
    return owned_ref<T>(p, acquired_at_);
  }

 private:
  friend maybe_ref<task_struct> make_maybe_ref(task_struct * p, std::source_location at) noexcept;
  // The pointer and, in its low bit (T is aligned to more than 1), whether the
  // NULL check was asked: the wrapper stays two words.
  static constexpr std::uintptr_t kChecked = 1;
  static_assert(alignof(T) > 1);
  maybe_ref(T * p, std::source_location at) noexcept
      : bits_(reinterpret_cast<std::uintptr_t>(p)), acquired_at_(at) {}
  T* pointer() const noexcept {
    return reinterpret_cast<T*>(bits_ & ~kChecked);  // NOLINT(performance-no-int-to-ptr)
  }
  mutable std::uintptr_t bits_;
  std::source_location acquired_at_;
};

inline maybe_ref<task_struct> make_maybe_ref(task_struct* p, std::source_location at) noexcept {
  return maybe_ref<task_struct>(p, at);
}

// A typed RCU read-side section (bpf_rcu_read_lock/unlock). Not copyable, not movable.
class rcu_guard {
 public:
  explicit rcu_guard(std::source_location where = std::source_location::current())
      : where_(where), id_(detail::guard_enter()) {
    tasklife::bpf_rcu_read_lock(where_);
  }
  ~rcu_guard() {
    tasklife::bpf_rcu_read_unlock(where_);
    detail::guard_exit(id_);
  }
  rcu_guard(const rcu_guard&) = delete;
  rcu_guard& operator=(const rcu_guard&) = delete;
  std::uint64_t id() const noexcept { return id_; }

 private:
  std::source_location where_;
  std::uint64_t id_;
};

// MEM_RCU | PTR_MAYBE_NULL: a slot read inside an rcu_guard. Valid (memory) while
// that guard lives; the task may be dying. Tested against NULL, then acquired in its
// checked form (check()); never released. Neither copyable nor
// movable; C++17's guaranteed elision still lets `{ rcu_guard g; return read(s, g); }`
// carry it out of the guard's scope, so every use checks at run time that its own
// guard (not just any RCU section: a non-sleepable program always has one) is alive.
template <class T>
class rcu_ptr {
 public:
  rcu_ptr(const rcu_ptr&) = delete;
  rcu_ptr& operator=(const rcu_ptr&) = delete;

  explicit operator bool() const noexcept { return p_ != nullptr; }
  T* operator->() const noexcept {
    (void)valid();
    return p_;
  }
  T* get() const noexcept {
    (void)valid();
    return p_;
  }
  // False (and reported) once its guard has ended.
  bool valid() const noexcept {
    if (!detail::guard_alive(guard_)) [[unlikely]] {
      detail::report_typed(contract_kind::missing_rcu_lock, "rcu_ptr",
                           "an rcu_ptr was used after its rcu_guard ended", p_,
                           std::source_location::current(), read_at_);
      return false;
    }
    return true;
  }
  // The NULL check the verifier demands before bpf_task_acquire: the checked form,
  // true when the pointer is not NULL. `if (const auto c = p.check()) acquire(c)`.
  checked_rcu_ptr<T> check() const noexcept { return checked_rcu_ptr<T>(p_, guard_, read_at_); }

 private:
  template <class U>
  friend rcu_ptr<U> read(const kptr<U>& slot, const rcu_guard& guard, std::source_location where);
  friend class task_iter;
  rcu_ptr(T* p, std::uint64_t guard, std::source_location read_at) noexcept
      : p_(p), guard_(guard), read_at_(read_at) {}
  T* p_;
  std::uint64_t guard_;
  std::source_location read_at_;
};

// MEM_RCU after the NULL check (rcu_ptr::check()): what bpf_task_acquire takes.
// Tested itself: a NULL one passed on anyway is reported at run time (the verifier
// would follow the NULL path). Neither copyable nor movable, like its rcu_ptr.
template <class T>
class checked_rcu_ptr {
 public:
  checked_rcu_ptr(const checked_rcu_ptr&) = delete;
  checked_rcu_ptr& operator=(const checked_rcu_ptr&) = delete;

  explicit operator bool() const noexcept { return p_ != nullptr; }
  T* operator->() const noexcept {
    (void)valid();
    return p_;
  }
  T* get() const noexcept {
    (void)valid();
    return p_;
  }
  bool valid() const noexcept {
    if (!detail::guard_alive(guard_)) [[unlikely]] {
      detail::report_typed(contract_kind::missing_rcu_lock, "rcu_ptr",
                           "an rcu_ptr was used after its rcu_guard ended", p_,
                           std::source_location::current(), read_at_);
      return false;
    }
    return true;
  }
  std::source_location read_at() const noexcept { return read_at_; }

 private:
  friend class rcu_ptr<T>;
  friend checked_rcu_ptr<task_struct> walk_rcu_field(task_struct* base,
                                                     task_struct* task_struct::*field,
                                                     const rcu_guard& guard,
                                                     std::source_location where);
  checked_rcu_ptr(T* p, std::uint64_t guard, std::source_location read_at) noexcept
      : p_(p), guard_(guard), read_at_(read_at) {}
  T* p_;
  std::uint64_t guard_;
  std::source_location read_at_;
};

// PTR_UNTRUSTED: a slot read outside any RCU section. Only comparable with NULL.
template <class T>
class untrusted_ptr {
 public:
  explicit operator bool() const noexcept { return p_ != nullptr; }
  const void* address() const noexcept { return p_; }

 private:
  template <class U>
  friend untrusted_ptr<U> read(const kptr<U>& slot);
  explicit untrusted_ptr(T* p) noexcept : p_(p) {}
  T* p_;
};

// Reading a slot: an RCU pointer under a guard, untrusted without one.
template <class T>
rcu_ptr<T> read(const kptr<T>& slot, const rcu_guard& guard,
                std::source_location where = std::source_location::current()) {
  return rcu_ptr<T>(slot.get(), guard.id(), where);
}
template <class T>
void read(const kptr<T>& slot, const rcu_guard&& guard) {
  static_assert(detail::always_false<T>,
                "a temporary rcu_guard ends before the pointer could be used: read the slot "
                "under a named rcu_guard");
  (void)slot;
  (void)guard;
}
template <class T>
untrusted_ptr<T> read(const kptr<T>& slot) {
  return untrusted_ptr<T>(slot.get());
}

TASKLIFE_API trusted_ptr<task_struct> typed_current(std::source_location where) noexcept;
void typed_release(owned_ref<task_struct>&& ref, std::source_location where);
TASKLIFE_API maybe_ref<task_struct> typed_xchg(kptr<task_struct>* slot, owned_ref<task_struct>&& p,
                                               std::source_location where);

// Inline: the typed release is the raw one plus the moved-from test.
inline void typed_release(owned_ref<task_struct>&& ref, std::source_location where) {
  task_struct* p = std::exchange(ref.p_, nullptr);
  if (p == nullptr) [[unlikely]] {
    detail::report_typed(contract_kind::moved_from, "bpf_task_release",
                         "bpf_task_release of a moved-from reference (already released or stored)",
                         nullptr, where, ref.acquired_at_);
    return;
  }
  tasklife::bpf_task_release(p, where);
}

// The typed field walk (btf_walk, kfunc.hpp): an RCU-safe field (group_leader,
// real_parent; BTF_TYPE_SAFE_RCU) loaded from a trusted, referenced or RCU base
// under a named guard is MEM_RCU and never NULL: the checked form, acquirable at
// once, valid while the guard lives.
TASKLIFE_API checked_rcu_ptr<task_struct> walk_rcu_field(task_struct* base,
                                                         task_struct* task_struct::*field,
                                                         const rcu_guard& guard,
                                                         std::source_location where);

namespace typed {

// btf_walk from a trusted, referenced or (checked) RCU base, under a named guard.
[[nodiscard]] inline checked_rcu_ptr<task_struct> btf_walk(
    trusted_ptr<task_struct> base, task_struct* task_struct::*field, const rcu_guard& guard,
    std::source_location where = std::source_location::current()) {
  return walk_rcu_field(base.get(), field, guard, where);
}
[[nodiscard]] inline checked_rcu_ptr<task_struct> btf_walk(
    const owned_ref<task_struct>& base, task_struct* task_struct::*field, const rcu_guard& guard,
    std::source_location where = std::source_location::current()) {
  return walk_rcu_field(base.get(), field, guard, where);
}
[[nodiscard]] inline checked_rcu_ptr<task_struct> btf_walk(
    const checked_rcu_ptr<task_struct>& base, task_struct* task_struct::*field,
    const rcu_guard& guard, std::source_location where = std::source_location::current()) {
  return walk_rcu_field(base.valid() ? base.get() : nullptr, field, guard, where);
}
template <class T>
void btf_walk(const rcu_ptr<T>&, task_struct* task_struct::*, const rcu_guard&,
              std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "invalid mem access: an rcu_ptr is MEM_RCU | PTR_MAYBE_NULL, test it (check()) "
                "before walking its fields");
}
template <class T>
void btf_walk(const untrusted_ptr<T>&, task_struct* task_struct::*, const rcu_guard&,
              std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "a field walked from an untrusted pointer is untrusted: nothing accepts it");
}
template <class T>
void btf_walk(const maybe_ref<T>&, task_struct* task_struct::*, const rcu_guard&,
              std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "invalid mem access: a maybe_ref may be NULL, check it and take() it before "
                "walking its fields");
}
template <class T>
void btf_walk(T, task_struct* task_struct::*, const rcu_guard&&,
              std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "a temporary rcu_guard ends before the pointer could be used: walk the field "
                "under a named rcu_guard");
}

// bpf_task_acquire on a trusted, referenced or RCU pointer.
[[nodiscard]] inline maybe_ref<task_struct> bpf_task_acquire(
    trusted_ptr<task_struct> p, std::source_location where = std::source_location::current()) {
  return make_maybe_ref(tasklife::bpf_task_acquire(p.get(), where), where);
}
[[nodiscard]] inline maybe_ref<task_struct> bpf_task_acquire(
    const owned_ref<task_struct>& p, std::source_location where = std::source_location::current()) {
  return make_maybe_ref(tasklife::bpf_task_acquire(p.get(), where), where);
}
[[nodiscard]] inline maybe_ref<task_struct> bpf_task_acquire(
    const checked_rcu_ptr<task_struct>& p,
    std::source_location where = std::source_location::current()) {
  if (!p.valid()) {
    return make_maybe_ref(nullptr, where);  // its section is over: the memory may be gone
  }
  if (!p) [[unlikely]] {
    detail::report_typed(contract_kind::unchecked_null, "bpf_task_acquire",
                         "Possibly NULL pointer passed to trusted arg0: the checked rcu_ptr is "
                         "NULL (test it before acquiring)",
                         nullptr, where, p.read_at());
    return make_maybe_ref(nullptr, where);
  }
  return make_maybe_ref(tasklife::bpf_task_acquire(p.get(), where), where);
}
// A slot read under RCU is MEM_RCU | PTR_MAYBE_NULL: the verifier checks NULL
// before trust (check_kfunc_args), so an unchecked one is refused first.
template <class T>
void bpf_task_acquire(const rcu_ptr<T>&, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "Possibly NULL pointer passed to trusted arg0: a slot read under RCU is "
                "MEM_RCU | PTR_MAYBE_NULL: test it and acquire the checked form "
                "(if (const auto c = p.check()) bpf_task_acquire(c))");
}
template <class T>
void bpf_task_acquire(const untrusted_ptr<T>&,
                      std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "R1 must be a rcu pointer: a slot read outside an RCU section is untrusted");
}
template <class T>
void bpf_task_acquire(const task_free_arg<T>&,
                      std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "R1 must be a rcu pointer: the lsm/task_free argument is not RCU-safe");
}
template <class T>
void bpf_task_acquire(const maybe_ref<T>&, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>, "Possibly NULL pointer passed to trusted arg0");
}
// NULL and raw pointers: the verifier's words for what it would see there.
template <class T = void>
void bpf_task_acquire(std::nullptr_t, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>, "Possibly NULL pointer passed to trusted arg0");
}
template <class P>
void bpf_task_acquire(P*, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<P>,
                "arg#0 pointer type STRUCT task_struct must point to scalar, or struct with "
                "scalar: a raw pointer carries no verifier state (pass a trusted_ptr, an "
                "owned_ref or an rcu_ptr)");
}

// bpf_task_release: consumes the owned reference.
inline void bpf_task_release(owned_ref<task_struct>&& ref,
                             std::source_location where = std::source_location::current()) {
  typed_release(std::move(ref), where);
}
template <class T>
void bpf_task_release(owned_ref<T>&, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "releasing consumes the reference: pass std::move(ref), and do not use it again");
}
template <class T>
void bpf_task_release(const trusted_ptr<T>&,
                      std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID");
}
template <class T>
void bpf_task_release(const rcu_ptr<T>&, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>, "R1 must be referenced or trusted");
}
template <class T>
void bpf_task_release(const untrusted_ptr<T>&,
                      std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>, "R1 must be referenced or trusted");
}
template <class T>
void bpf_task_release(const task_free_arg<T>&,
                      std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>,
                "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID");
}
template <class T>
void bpf_task_release(const maybe_ref<T>&, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>, "Possibly NULL pointer passed to trusted arg0");
}
template <class T = void>
void bpf_task_release(std::nullptr_t, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<T>, "Possibly NULL pointer passed to trusted arg0");
}
template <class P>
void bpf_task_release(P*, std::source_location = std::source_location::current()) {
  static_assert(detail::always_false<P>,
                "arg#0 pointer type STRUCT task_struct must point to scalar, or struct with "
                "scalar: a raw pointer carries no verifier state (release the owned_ref)");
}

[[nodiscard]] inline maybe_ref<task_struct> bpf_task_from_pid(
    std::int32_t pid, std::source_location where = std::source_location::current()) {
  return make_maybe_ref(tasklife::bpf_task_from_pid(pid, where), where);
}
[[nodiscard]] inline maybe_ref<task_struct> bpf_task_from_vpid(
    std::int32_t vpid, std::source_location where = std::source_location::current()) {
  return make_maybe_ref(tasklife::bpf_task_from_vpid(vpid, where), where);
}

// bpf_kptr_xchg: an owned reference (consumed) or NULL goes in; the old content
// comes back as the caller's, to be checked.
[[nodiscard]] inline maybe_ref<task_struct> bpf_kptr_xchg(
    kptr<task_struct>* slot, owned_ref<task_struct>&& p,
    std::source_location where = std::source_location::current()) {
  return typed_xchg(slot, std::move(p), where);
}
[[nodiscard]] inline maybe_ref<task_struct> bpf_kptr_xchg(
    kptr<task_struct>* slot, std::nullptr_t,
    std::source_location where = std::source_location::current()) {
  return make_maybe_ref(tasklife::bpf_kptr_xchg(slot, nullptr, where), where);
}
template <class P>
requires(!std::is_same_v<P, owned_ref<task_struct>> &&
         !std::is_null_pointer_v<
             std::remove_cvref_t<P>>) void bpf_kptr_xchg(kptr<task_struct>*, P&&,
                                                         std::source_location =
                                                             std::source_location::current()) {
  static_assert(detail::always_false<P>,
                "R2 must be referenced when passed to release function: only an owned_ref "
                "(std::move'd) or nullptr may go into a slot");
}

[[nodiscard]] inline trusted_ptr<task_struct> bpf_get_current_task_btf(
    std::source_location where = std::source_location::current()) noexcept {
  return typed_current(where);
}

}  // namespace typed

// The task iterator's flavors that walk the whole system (BPF_TASK_ITER_ALL_*).
// A valid flavor is all the type admits: the raw -EINVAL of a bad one cannot arise.
enum class task_iter_flavor : unsigned int {
  all_procs = BPF_TASK_ITER_ALL_PROCS,
  all_threads = BPF_TASK_ITER_ALL_THREADS,
};

// bpf_for_each(task, pos, task, flags) with the verifier's iterator rules in the
// type: the constructor is bpf_iter_task_new and needs a named rcu_guard
// (KF_RCU_PROTECTED), the destructor is bpf_iter_task_destroy (never leaked, never
// used before new or after destroy, never made twice), and next() yields what the
// verifier says the kfunc returns: an RCU pointer that may be NULL (rcu_ptr), to be
// check()ed before bpf_task_acquire, which may still return NULL for a dying task.
// Not copyable, not movable. The threads of one process: construct it from the
// trusted or referenced task (KF_TRUSTED_ARGS: an RCU pointer is not enough).
class task_iter {
 public:
  task_iter(task_iter_flavor flavor, const rcu_guard& guard,
            std::source_location where = std::source_location::current())
      : guard_(guard.id()), where_(where) {
    (void)tasklife::bpf_iter_task_new(&it_, nullptr, static_cast<unsigned int>(flavor), where);
  }
  task_iter(trusted_ptr<task_struct> task, const rcu_guard& guard,
            std::source_location where = std::source_location::current())
      : guard_(guard.id()), where_(where) {
    (void)tasklife::bpf_iter_task_new(&it_, task.get(), BPF_TASK_ITER_PROC_THREADS, where);
  }
  task_iter(const owned_ref<task_struct>& task, const rcu_guard& guard,
            std::source_location where = std::source_location::current())
      : guard_(guard.id()), where_(where) {
    (void)tasklife::bpf_iter_task_new(&it_, task.get(), BPF_TASK_ITER_PROC_THREADS, where);
  }
  // A temporary guard ends at the end of the full expression, before the walk:
  // every constructor refuses one at compile time.
  template <class G = rcu_guard>
  task_iter(task_iter_flavor, const G&& guard,
            std::source_location = std::source_location::current()) {
    temporary_guard<G>(guard);
  }
  template <class G = rcu_guard>
  task_iter(trusted_ptr<task_struct>, const G&& guard,
            std::source_location = std::source_location::current()) {
    temporary_guard<G>(guard);
  }
  template <class G = rcu_guard>
  task_iter(const owned_ref<task_struct>&, const G&& guard,
            std::source_location = std::source_location::current()) {
    temporary_guard<G>(guard);
  }
  template <class P>
  requires(!std::is_same_v<std::remove_cvref_t<P>, trusted_ptr<task_struct>> &&
           !std::is_same_v<std::remove_cvref_t<P>, owned_ref<task_struct>> &&
           !std::is_same_v<std::remove_cvref_t<P>, task_iter_flavor>)
      task_iter(const P&, const rcu_guard&,
                std::source_location = std::source_location::current()) {
    static_assert(detail::always_false<P>,
                  "R2 must be referenced or trusted: bpf_iter_task_new's task is a trusted "
                  "argument (an RCU, untrusted or unchecked pointer is not enough)");
  }
  ~task_iter() { tasklife::bpf_iter_task_destroy(&it_, where_); }
  task_iter(const task_iter&) = delete;
  task_iter& operator=(const task_iter&) = delete;

  // bpf_iter_task_next: the next task, or NULL at the end of the walk. Valid while
  // the guard the iterator was made under lives; checked at run time, since a
  // std::optional<rcu_guard> can end before the iterator.
  rcu_ptr<task_struct> next(std::source_location where = std::source_location::current()) {
    if (!detail::guard_alive(guard_)) [[unlikely]] {
      detail::report_typed(contract_kind::missing_rcu_lock, "task_iter",
                           "expected an RCU CS when using bpf_iter_task_next: the task_iter was "
                           "used after its rcu_guard ended",
                           nullptr, where, where_);
      return rcu_ptr<task_struct>(nullptr, guard_, where);
    }
    return rcu_ptr<task_struct>(tasklife::bpf_iter_task_next(&it_, where), guard_, where);
  }

 private:
  template <class G>
  static void temporary_guard(const G&) {
    static_assert(detail::always_false<G>,
                  "a temporary rcu_guard ends before the iterator could walk: kernel func "
                  "bpf_iter_task_new requires RCU critical section protection: make the "
                  "iterator under a named rcu_guard");
  }
  bpf_iter_task it_;
  std::uint64_t guard_ = 0;
  std::source_location where_;
};

}  // namespace tasklife
