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
//   | rcu_ptr<T>           | MEM_RCU                     | read, acquired; not released; lives  |
//   |                      |                             | in its rcu_guard's scope             |
//   | untrusted_ptr<T>     | PTR_UNTRUSTED               | compared with NULL; nothing accepts it|
//
//   Rules as compile errors (tests/compile_fail proves each): releasing a trusted,
//   RCU, untrusted or unchecked pointer; acquiring an untrusted one or the
//   lsm/task_free argument; storing anything but an owned reference (or NULL) into
//   a slot; copying an owned reference; releasing without giving it up
//   (std::move); dereferencing an unchecked result; discarding an acquiring
//   kfunc's result; reading a slot under a temporary guard. The verifier's words
//   are in the static_assert messages.
//
//   Rules left to run time (reported through the contract handler): an owned
//   reference or a non-NULL maybe_ref dropped without release (named with the
//   place it was acquired; tasklife releases it so the kernel stays consistent),
//   use of a moved-from reference, an rcu_ptr used after its section ended.
//
// Members
//   trusted_ptr, task_free_arg, owned_ref, maybe_ref, rcu_ptr, untrusted_ptr,
//   rcu_guard, read(slot, guard), read(slot), and in namespace typed:
//   bpf_task_acquire, bpf_task_release, bpf_task_from_pid, bpf_task_from_vpid,
//   bpf_kptr_xchg, bpf_get_current_task_btf
//
// Lifetime
//   Wrappers own nothing but an owned_ref's (or maybe_ref's) one reference. They
//   are as cheap as the raw pointers: one pointer and the acquisition site.
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
class rcu_guard;

namespace detail {
template <class>
inline constexpr bool always_false = false;

// Reports a typed-API rule broken at run time (noexcept contexts included).
TASKLIFE_API void report_typed(contract_kind kind, const char* op, const char* what,
                               const task_struct* t, std::source_location where,
                               std::source_location acquired_at) noexcept;
// Releases a reference dropped without release, from a destructor: through the
// program's checked path when the thread runs as a task, else the destructor's.
TASKLIFE_API void release_dropped(task_struct* p) noexcept;
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
    detail::report_typed(contract_kind::unreleased_reference, "~owned_ref",
                         "an owned reference was dropped without release", p_,
                         std::source_location::current(), acquired_at_);
    detail::release_dropped(std::exchange(p_, nullptr));
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
      : p_(std::exchange(other.p_, nullptr)), acquired_at_(other.acquired_at_) {}
  maybe_ref(const maybe_ref&) = delete;
  maybe_ref& operator=(const maybe_ref&) = delete;
  maybe_ref& operator=(maybe_ref&&) = delete;
  ~maybe_ref() {
    if (p_ != nullptr) [[unlikely]] {
      detail::report_typed(contract_kind::unreleased_reference, "~maybe_ref",
                           "an acquired reference was dropped unchecked and unreleased", p_,
                           std::source_location::current(), acquired_at_);
      detail::release_dropped(std::exchange(p_, nullptr));
    }
  }

  // The NULL check the verifier demands.
  explicit operator bool() const noexcept {
    return p_ != nullptr;
  }

  // The owned reference, after a successful check (a NULL one is reported).
  owned_ref<T> take(std::source_location where = std::source_location::current())&& noexcept {
    if (p_ == nullptr) [[unlikely]] {
      detail::report_typed(contract_kind::unchecked_null, "maybe_ref::take",
                           "take() of a NULL result: check it first", nullptr, where, acquired_at_);
    }
    return owned_ref<T>(std::exchange(p_, nullptr), acquired_at_);
  }

 private:
  friend maybe_ref<task_struct> make_maybe_ref(task_struct * p, std::source_location at) noexcept;
  maybe_ref(T * p, std::source_location at) noexcept : p_(p), acquired_at_(at) {}
  T* p_;
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

// MEM_RCU: a slot read inside an rcu_guard. Valid (memory) while that guard lives;
// the task may be dying. May be acquired, never released. Neither copyable nor
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

 private:
  template <class U>
  friend rcu_ptr<U> read(const kptr<U>& slot, const rcu_guard& guard, std::source_location where);
  rcu_ptr(T* p, std::uint64_t guard, std::source_location read_at) noexcept
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

namespace typed {

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
    const rcu_ptr<task_struct>& p, std::source_location where = std::source_location::current()) {
  if (!p.valid()) {
    return make_maybe_ref(nullptr, where);  // its section is over: the memory may be gone
  }
  return make_maybe_ref(tasklife::bpf_task_acquire(p.get(), where), where);
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
}  // namespace tasklife
