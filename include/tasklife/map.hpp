// tasklife/map.hpp — kptr slots, BPF maps whose values hold them, local objects.
//
// What it is
//   A kptr<T> is a referenced-pointer field (`struct task_struct __kptr *task`) in
//   a map value or in a local object (bpf_obj_new). Nothing can store into it but
//   bpf_kptr_xchg: it has no setter, and copying a value copies no reference —
//   the copy's slot is NULL, and assigning a value leaves the destination's slots
//   alone, as the kernel's copy_map_value skips special fields. Reading a slot
//   (get) yields what a BPF program's plain load does: inside an RCU read-side
//   section, a pointer valid until the section ends that may be passed to
//   bpf_task_acquire (KF_RCU); it may not be released.
//
//   A value type lists its kptr fields, the part of the kernel's btf_record that
//   matters here:
//     struct value { kptr<task_struct> task; int tag;
//                    static constexpr auto kptr_fields = std::make_tuple(&value::task); };
//
//   bpf_hash_map<Key, Value> and bpf_array_map<Value> follow kernel/bpf/hashtab.c
//   and arraymap.c: lookup / update (BPF_ANY, BPF_NOEXIST, BPF_EXIST) / delete,
//   with the kernel's return codes (-ENOENT, -EEXIST, -E2BIG, -EINVAL).
//
// Members
//   kptr<T>, kptr_traits<T> (the registered destructor), task_kptr_dtor
//   BPF_ANY / BPF_NOEXIST / BPF_EXIST
//   bpf_hash_map, bpf_array_map, bpf_map_lookup_elem / _update_elem / _delete_elem
//   bpf_obj_new, bpf_obj_drop, bpf_obj_free_fields
//   bpf_task_storage_map, BPF_LOCAL_STORAGE_GET_F_CREATE (task local storage; its
//   helpers bpf_task_storage_get / _delete are in kfunc.hpp)
//
// Lifetime (bpf_obj_free_fields: xchg each slot to NULL, destructor on the old value)
//   - hash delete and update-replace: the old element's slots are freed at once
//     (synchronously, as check_and_free_fields); its memory is reclaimed after a
//     grace period, so a reader that looked it up inside a read section can still
//     read its slots until the section ends.
//   - array update: the new value is copied (slots skipped), then the element's
//     slots are freed. Arrays cannot delete (-EINVAL).
//   - map destruction: every element's slots are freed; memory after a grace period.
//   - bpf_obj_drop: the object's slots are freed once, then the object.
//   - An xchg into a hash element after it was deleted (Hou Tao's report, 2025):
//     per profile (profile.hpp, leaks_fields_set_after_delete). Where the kernel
//     leaked that reference (every kernel before the 2026 hash element
//     destructor), it leaks here and the kernel's teardown reports it; in
//     `current` bpf_obj_free_fields runs again when the element's memory is
//     reclaimed, so the late reference is released exactly once, one grace
//     period after the delete.
//   - An empty slot: the destructor is called only on what the exchange took out
//     (1431d0b584a6, v6.4); the older profiles call it on NULL too
//     (dtor_on_empty_slot): harmless for a task (bpf_task_release returned on
//     NULL), reported for a local object (bpf_obj_drop of NULL). Maps pass their
//     kernel's profile; bpf_obj_drop of an object frees its fields as v6.4 does.
//   A map should be destroyed before its kernel. One that is not is orphaned by
//   the kernel's teardown (reported, teardown_order): its operations are refused
//   (reported again), and its destructor frees its values at once, without the
//   kernel; a task still stashed in it is then a teardown tombstone and its
//   destructor call is reported, not carried out (task.hpp). A destructor never
//   lets a throwing handler's exception out: the violation has been seen.
//   In checked builds every live value and object is registered with the offsets
//   and types of its kptr fields, so bpf_kptr_xchg on a slot of a destroyed map
//   (after its grace period), on a random address or on a value's field that is
//   not a kptr field of that type is reported (foreign_object), not undefined.
//   Creation: max_entries = 0 is refused as the kernel refuses it (-EINVAL at
//   map_create; reported, invalid_argument), and a map whose eager allocation
//   would pass map_memory_limit (the kernel's -E2BIG for a bucket array past
//   U32_MAX, htab_map_alloc) is refused too (limit_exceeded). A refused map has
//   no entries: lookups find nothing, updates return -E2BIG.
//
// Memory ordering
//   kptr slots: see kfunc.hpp (xchg acq_rel; get is an acquire load). Hash
//   buckets: writers hold the bucket's mutex; an element is published into its
//   list with a release store (pairs with the readers' acquire loads while they
//   walk the list without a lock); unlinking is a release store too: it hands
//   readers the successor, which they must see initialised. Reclaiming the
//   unlinked element waits for a grace period. The element count is relaxed.
//   Task storage: every list is under one mutex (its unlock/lock pairs publish a
//   value's construction); a deleted value is freed by an RCU callback, ordered
//   after every reader by the grace period.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>

#include <tasklife/check.hpp>
#include <tasklife/export.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/sched_point.hpp>
#include <tasklife/task.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {

inline constexpr std::uint64_t BPF_ANY = 0;
inline constexpr std::uint64_t BPF_NOEXIST = 1;
inline constexpr std::uint64_t BPF_EXIST = 2;

template <class T>
class kptr;

// The destructor registered for task kptrs (register_btf_id_dtor_kfuncs):
// bpf_task_release_dtor in `current`, bpf_task_release before v6.8. Runs outside
// any program: no current needed.
TASKLIFE_API void task_kptr_dtor(task_struct* p);
// The same destructor called on NULL, as the kernels before 1431d0b584a6 did for
// an empty slot: what that profile's destructor does with NULL.
TASKLIFE_API void task_kptr_dtor_empty(semantics_profile profile);

template <class T>
void bpf_obj_drop(T* obj, std::source_location where = std::source_location::current());

namespace detail {
TASKLIFE_API void report_map_misuse(contract_kind kind, std::string_view map, std::string_view op,
                                    std::string message, std::source_location where);
// The same, for a message that begins with the operation's name: "<op><rest>" (the
// string is built out of line).
TASKLIFE_API void report_map_op_misuse(contract_kind kind, std::string_view map,
                                       std::string_view op, std::string_view rest,
                                       std::source_location where);
}  // namespace detail

// What runs on a slot when its container frees it: destroy() on what was in it;
// destroy_empty() on the NULL of an empty slot, in the profiles that call the
// destructor there (profile.hpp, dtor_on_empty_slot).
template <class T>
struct kptr_traits {
  static void destroy(T* p) { bpf_obj_drop(p); }  // a local object: dropped with its fields
  static void destroy_empty(semantics_profile profile) {
    // __bpf_obj_drop_impl(NULL, rec) frees the fields of an object at NULL.
    detail::report_map_misuse(
        contract_kind::null_argument, "local object", "bpf_obj_drop",
        std::string("bpf_obj_drop(NULL): semantics profile '") + std::string(to_string(profile)) +
            "' drops what an empty kptr slot's exchange took out, NULL too (fixed by "
            "1431d0b584a6 \"bpf: Only invoke kptr dtor following non-NULL xchg\", v6.4)",
        std::source_location::current());
  }
};
template <>
struct kptr_traits<task_struct> {
  static void destroy(task_struct* p) { task_kptr_dtor(p); }
  static void destroy_empty(semantics_profile profile) { task_kptr_dtor_empty(profile); }
};

namespace detail {
template <class T>
T* kptr_exchange(kptr<T>* slot, T* p) noexcept;
// The slot's content for tasklife's own code (bpf_task_kptr_get): no program
// sees this load, so the checker and the explorer's null paths do not either.
template <class T>
T* kptr_load(const kptr<T>* slot) noexcept;

#if TASKLIFE_VERIFIER
// Tells the program run the thread is inside (detail::tls_ctx.run) what a slot
// read returned. Outside a checked run slot reads pay one thread-local load.
TASKLIFE_API void on_slot_read(const void* value) noexcept;
#endif

// One kptr field of a value type: its offset and the type it points to (a tag).
struct kptr_field_info {
  std::size_t offset;
  const void* type;
};
// A tag per pointee type: its mangled name (typeid), compared by content. Not the
// address of a per-type variable: a shared library and the program that uses it
// each have their own copy of such a variable, but the same name.
template <class T>
const void* kptr_tag() noexcept {
  return typeid(T).name();
}

// The registry of live map values and local objects (checked builds only): a
// region of `size` bytes holding values of `stride` bytes, each with `fields`.
TASKLIFE_API void register_kptr_region(const void* begin, std::size_t size, std::string_view what,
                                       std::size_t stride, const kptr_field_info* fields,
                                       std::size_t nfields);
TASKLIFE_API void unregister_kptr_region(const void* begin) noexcept;
// Is [p, p + size) inside a live region (any field or none)?
TASKLIFE_API bool kptr_region_contains(const void* p, std::size_t size) noexcept;
// Is `slot` a kptr field pointing to `type` of a live value or object?
TASKLIFE_API bool kptr_slot_valid(const void* slot, const void* type) noexcept;
// Reports a slot that is not a kptr field of that type of a live value/object;
// false if it reported.
TASKLIFE_API bool check_kptr_slot(const void* slot, const void* type, std::string_view op,
                                  std::source_location where);
// Reports anything but the start of a live bpf_obj_new object; false if it reported.
TASKLIFE_API bool check_local_object(const void* obj, std::string_view op,
                                     std::source_location where);
}  // namespace detail

template <class T>
class kptr {
 public:
  constexpr kptr() noexcept = default;
  // Copying a value never copies a reference (copy_map_value skips kptr fields).
  kptr(const kptr&) noexcept {}
  kptr& operator=(const kptr&) noexcept { return *this; }
  ~kptr() = default;  // the container frees the slot (bpf_obj_free_fields), not the slot

  // The slot's content, as a BPF program's plain load of the field reads it.
  // Acquire pairs with the release half of bpf_kptr_xchg. Inside a program run
  // the checker learns the value's trust: an RCU pointer inside an RCU section,
  // untrusted outside (prog.hpp).
  // Under the explorer it is a scheduling point, and with null paths the read
  // is also explored as NULL (the verifier types a kptr load PTR_MAYBE_NULL).
  T* get() const noexcept {
    T* p = nullptr;
    if (detail::tls_sim != nullptr) [[unlikely]] {
      // Under the explorer: one test of the thread-local on the ordinary path.
      detail::sched_point_slow(sched_op::slot_read, this, "kptr load");
      p = ptr_.load(std::memory_order_acquire);
      if (p != nullptr && detail::null_path_slow("the kptr load")) {
        p = nullptr;
      }
    } else {
      p = ptr_.load(std::memory_order_acquire);  // acquire: see above
    }
#if TASKLIFE_VERIFIER
    if (detail::tls_ctx.run != nullptr) [[unlikely]] {
      detail::on_slot_read(p);
    }
#endif
    return p;
  }

 private:
  friend T* detail::kptr_exchange<T>(kptr<T>* slot, T* p) noexcept;
  friend T* detail::kptr_load<T>(const kptr<T>* slot) noexcept;
  std::atomic<T*> ptr_{nullptr};
};

namespace detail {
template <class T>
T* kptr_exchange(kptr<T>* slot, T* p) noexcept {
  // acq_rel: see kfunc.hpp (pairs with every other exchange of this slot and with get()).
  return slot->ptr_.exchange(p, std::memory_order_acq_rel);
}
template <class T>
T* kptr_load(const kptr<T>* slot) noexcept {
  // Acquire pairs with the release half of bpf_kptr_xchg, as get().
  return slot->ptr_.load(std::memory_order_acquire);
}

template <class V>
concept has_kptr_fields = requires {
  V::kptr_fields;
};

template <class T>
void free_kptr_field(kptr<T>& slot, semantics_profile profile) {
  if (T* old = kptr_exchange<T>(&slot, nullptr)) {
    kptr_traits<T>::destroy(old);
  } else if (info(profile).dtor_on_empty_slot) [[unlikely]] {
    kptr_traits<T>::destroy_empty(profile);
  }
}
template <class T>
void free_kptr_field_noexcept(kptr<T>& slot, semantics_profile profile) noexcept {
  try {
    free_kptr_field(slot, profile);
  } catch (...) {  // a throwing handler has seen the violation; a destructor cannot unwind
  }
}

template <class T>
const void* tag_of(const kptr<T>*) noexcept {
  return kptr_tag<T>();
}

// Registers a region of n values of type V (checked builds).
template <class V>
void register_values(const V* values, std::size_t n, std::string_view what) {
  if constexpr (has_kptr_fields<V>) {
    constexpr std::size_t count = std::tuple_size_v<std::remove_cv_t<decltype(V::kptr_fields)>>;
    kptr_field_info fields[count];
    std::size_t i = 0;
    const auto* base = reinterpret_cast<const char*>(values);
    std::apply(
        [&](auto... field) {
          ((fields[i++] =
                kptr_field_info{static_cast<std::size_t>(
                                    reinterpret_cast<const char*>(&(values->*field)) - base),
                                tag_of(&(values->*field))}),
           ...);
        },
        V::kptr_fields);
    register_kptr_region(values, sizeof(V) * n, what, sizeof(V), fields, count);
  } else {
    register_kptr_region(values, sizeof(V) * n, what, sizeof(V), nullptr, 0);
  }
}
}  // namespace detail

// bpf_obj_free_fields: each kptr slot of `v` to NULL, the destructor on the old
// value — and, in the profiles before 1431d0b584a6, on an empty slot's NULL.
template <class V>
void bpf_obj_free_fields(V& v, semantics_profile profile = semantics_profile::current) {
  if constexpr (detail::has_kptr_fields<V>) {
    std::apply([&v, profile](auto... field) { (detail::free_kptr_field(v.*field, profile), ...); },
               V::kptr_fields);
  }
}

namespace detail {
// The same from a destructor: every slot is freed even if one's report throws.
template <class V>
void free_fields_noexcept(V& v, semantics_profile profile = semantics_profile::current) noexcept {
  if constexpr (has_kptr_fields<V>) {
    std::apply([&v, profile](auto... field) { (free_kptr_field_noexcept(v.*field, profile), ...); },
               V::kptr_fields);
  }
}

// The most memory a map allocates at creation (its bucket array or its values).
inline constexpr std::size_t map_memory_limit = std::size_t{1} << 30;

// A map's max_entries, or 0 for a refused map (reported). `bytes` is what the
// map would allocate at creation, 0 if that does not fit in a size_t.
TASKLIFE_API std::uint32_t checked_max_entries(const kernel& k, std::string_view map,
                                               std::uint32_t max_entries, std::size_t bytes,
                                               std::source_location where);
}  // namespace detail

// ---- local objects ---------------------------------------------------------------------------

// bpf_obj_new: a program-allocated object; its kptr slots start NULL.
template <class T>
T* bpf_obj_new() {
  T* obj = new T();
  if constexpr (contract_checks_enabled) {
    detail::register_values(obj, 1, "local object");
  }
  return obj;
}

// bpf_obj_drop: frees the object's kptr slots (one destructor per stashed
// reference), then the object (immediately, as for objects without a refcount).
template <class T>
void bpf_obj_drop(T* obj, std::source_location where) {
  if (obj == nullptr) {
    detail::report_map_misuse(contract_kind::null_argument, "local object", "bpf_obj_drop",
                              "bpf_obj_drop(NULL)", where);
    return;
  }
  if constexpr (contract_checks_enabled) {
    if (!detail::check_local_object(obj, "bpf_obj_drop", where)) {
      return;  // a map value, an interior pointer, a dropped object: never delete it
    }
  }
  bpf_obj_free_fields(*obj);
  if constexpr (contract_checks_enabled) {
    detail::unregister_kptr_region(obj);
  }
  delete obj;
}

// bpf_kptr_xchg for a kptr to a local object (a program-allocated type, stored
// into a slot since v6.4, 738c96d5e2e3); the task_struct overload is in
// kfunc.hpp. One acq_rel exchange. Under the explorer it is a scheduling point,
// and with null paths the old value is also explored as NULL (the verifier types
// it PTR_MAYBE_NULL): the object taken out is then dropped, as the task overload
// releases its task.
template <class T>
requires(!std::is_same_v<T, task_struct>) T* bpf_kptr_xchg(
    kptr<T>* slot, T* p, std::source_location where = std::source_location::current()) {
  detail::sched_point(sched_op::slot_xchg, slot, "bpf_kptr_xchg");
  if constexpr (contract_checks_enabled) {
    if (!detail::check_kptr_slot(slot, detail::kptr_tag<T>(), "bpf_kptr_xchg", where)) {
      return nullptr;
    }
  }
  T* old = detail::kptr_exchange(slot, p);
  if (old != nullptr && detail::null_path("bpf_kptr_xchg's old value")) [[unlikely]] {
    bpf_obj_drop(old, where);
    return nullptr;
  }
  return old;
}

// ---- hash map --------------------------------------------------------------------------------

template <class Key, class Value, class Hash = std::hash<Key>>
class bpf_hash_map {
 public:
  using key_type = Key;
  using value_type = Value;

  bpf_hash_map(kernel& k, std::uint32_t max_entries, std::string name = "hash",
               std::source_location where = std::source_location::current())
      : kernel_(k),
        name_(std::move(name)),
        max_entries_(
            detail::checked_max_entries(k, name_, max_entries, bucket_bytes(max_entries), where)) {
    table_ = new bucket_table(buckets_for(max_entries_));
    detail::kernel_access::attach_dependent(kernel_, &dependent_);
  }
  ~bpf_hash_map() {
    if (detail::kernel_access::detach_dependent(&dependent_)) {
      destroy();
    } else {
      destroy_orphaned();
    }
  }
  bpf_hash_map(const bpf_hash_map&) = delete;
  bpf_hash_map& operator=(const bpf_hash_map&) = delete;

  const std::string& name() const noexcept { return name_; }
  std::uint32_t max_entries() const noexcept { return max_entries_; }
  std::size_t count() const noexcept { return count_.load(std::memory_order_relaxed); }

  // bpf_map_lookup_elem: the value, valid until the caller's RCU read-side section
  // ends; nullptr if absent. The caller holds the kernel's RCU read lock.
  Value* lookup_elem(const Key& key, std::source_location where = std::source_location::current()) {
    if (orphaned("bpf_map_lookup_elem", where)) {
      return nullptr;
    }
    if (!check_rcu("bpf_map_lookup_elem", where)) {
      return nullptr;  // reported; a handler that returns skips the lookup
    }
    detail::sched_point(sched_op::map_lookup, this, "bpf_map_lookup_elem");
    elem* e = find(bucket_of(key), key);
    if (e != nullptr && detail::null_path("bpf_map_lookup_elem")) [[unlikely]] {
      return nullptr;  // the explorer's path where the element is absent
    }
    return e != nullptr ? &e->value : nullptr;
  }

  // bpf_map_update_elem: 0, -EEXIST (BPF_NOEXIST, present), -ENOENT (BPF_EXIST,
  // absent), -E2BIG (full), -EINVAL (flags). The new element's slots start NULL;
  // a replaced element's slots are freed now and its memory after a grace period.
  long update_elem(const Key& key, const Value& value, std::uint64_t flags,
                   std::source_location where = std::source_location::current()) {
    if (flags > BPF_EXIST || orphaned("bpf_map_update_elem", where)) {
      return -EINVAL;
    }
    detail::sched_point(sched_op::map_update, this, "bpf_map_update_elem");
    bucket& b = bucket_of(key);
    elem* old = nullptr;
    {
      const detail::lock_guard lock(b.lock);
      old = find(b, key);
      if (old != nullptr && flags == BPF_NOEXIST) {
        return -EEXIST;
      }
      if (old == nullptr && flags == BPF_EXIST) {
        return -ENOENT;
      }
      if (old == nullptr && count_.fetch_add(1, std::memory_order_relaxed) >= max_entries_) {
        count_.fetch_sub(1, std::memory_order_relaxed);
        return -E2BIG;
      }
      elem* fresh = new elem(key, value, kernel_.config().profile);
      if constexpr (contract_checks_enabled) {
        detail::register_values(&fresh->value, 1, name_);
      }
      if (old != nullptr) {
        fresh->next.store(old->next.load(std::memory_order_relaxed), std::memory_order_relaxed);
        link_replace(b, old, fresh);
      } else {
        fresh->next.store(b.head.load(std::memory_order_relaxed), std::memory_order_relaxed);
        b.head.store(fresh, std::memory_order_release);  // publish; pairs with find()
      }
    }
    if (old != nullptr) {
      retire(old, where);
    }
    return 0;
  }

  // bpf_map_delete_elem: 0 or -ENOENT.
  long delete_elem(const Key& key, std::source_location where = std::source_location::current()) {
    if (orphaned("bpf_map_delete_elem", where)) {
      return -EINVAL;
    }
    detail::sched_point(sched_op::map_delete, this, "bpf_map_delete_elem");
    bucket& b = bucket_of(key);
    elem* victim = nullptr;
    {
      const detail::lock_guard lock(b.lock);
      victim = find(b, key);
      if (victim == nullptr) {
        return -ENOENT;
      }
      unlink(b, victim);
      count_.fetch_sub(1, std::memory_order_relaxed);
    }
    retire(victim, where);
    return 0;
  }

 private:
  // Derives from rcu_head: the reclaim callback gets the element back with a
  // static_cast, whatever Key and Value are.
  struct elem : rcu_head {
    std::atomic<elem*> next{nullptr};
    Key key;
    Value value;
    semantics_profile profile;  // its kernel's: whether reclaim frees the fields again
    elem(const Key& k, const Value& v, semantics_profile p)
        : rcu_head{}, key(k), value(v), profile(p) {}
  };
  struct bucket {
    detail::mutex lock;                // writers
    std::atomic<elem*> head{nullptr};  // readers walk without the lock
  };
  struct bucket_table : rcu_head {  // freed after a grace period when the map goes
    std::size_t size;
    std::unique_ptr<bucket[]> buckets;
    explicit bucket_table(std::size_t n) : rcu_head{}, size(n), buckets(new bucket[n]) {}
  };

  static std::size_t buckets_for(std::uint32_t max_entries) noexcept {
    std::size_t n = 1;
    while (n < max_entries) {
      n <<= 1;  // roundup_pow_of_two, as htab's n_buckets
    }
    return n;
  }
  static std::size_t bucket_bytes(std::uint32_t max_entries) noexcept {
    const std::size_t n = buckets_for(max_entries);
    return n > SIZE_MAX / sizeof(bucket) ? 0 : n * sizeof(bucket);
  }
  bucket& bucket_of(const Key& key) const noexcept {
    return table_->buckets[Hash{}(key) & (table_->size - 1)];
  }
  // A map its kernel's teardown orphaned refuses every operation (checked builds).
  bool orphaned(std::string_view op, std::source_location where) {
    if constexpr (contract_checks_enabled) {
      if (dependent_.orphaned.load(std::memory_order_relaxed)) [[unlikely]] {
        detail::report_map_op_misuse(contract_kind::teardown_order, name_, op,
                                     "() on a map whose kernel was destroyed before it; refused",
                                     where);
        return true;
      }
    }
    return false;
  }
  static elem* find(const bucket& b, const Key& key) noexcept {
    // Acquire pairs with the release that published each element.
    for (elem* e = b.head.load(std::memory_order_acquire); e != nullptr;
         e = e->next.load(std::memory_order_acquire)) {
      if (e->key == key) {
        return e;
      }
    }
    return nullptr;
  }
  static void link_replace(bucket& b, elem* old, elem* fresh) noexcept TASKLIFE_REQUIRES(b.lock) {
    std::atomic<elem*>* link = &b.head;
    while (link->load(std::memory_order_relaxed) != old) {
      link = &link->load(std::memory_order_relaxed)->next;
    }
    link->store(fresh, std::memory_order_release);  // publish; readers on `old` go on to its next
  }
  static void unlink(bucket& b, elem* victim) noexcept TASKLIFE_REQUIRES(b.lock) {
    std::atomic<elem*>* link = &b.head;
    while (link->load(std::memory_order_relaxed) != victim) {
      link = &link->load(std::memory_order_relaxed)->next;
    }
    // Release: a reader that reaches the successor through this link must see it
    // initialised, and the successor's own publication may have been later than
    // anything else this reader synchronised with (pairs with find()'s acquire).
    link->store(victim->next.load(std::memory_order_relaxed), std::memory_order_release);
  }
  // The element is out of the table: its slots now, its memory after a grace period.
  void retire(elem* e, std::source_location where) {
    bpf_obj_free_fields(e->value, e->profile);
    kernel_.rcu().call_rcu(e, &reclaim, where);
  }
  static void reclaim(rcu_head* head) {
    auto* e = static_cast<elem*>(head);
    if (!info(e->profile).leaks_fields_set_after_delete) {
      // The 2026 hash element destructor: a reference stashed after the delete is
      // released now. Before it, that reference leaks (the kernel's teardown reports it).
      detail::free_fields_noexcept(e->value, e->profile);
    }
    if constexpr (contract_checks_enabled) {
      detail::unregister_kptr_region(&e->value);
    }
    delete e;
  }
  bool check_rcu(std::string_view op, std::source_location where) {
    if constexpr (contract_checks_enabled) {
      if (!kernel_.rcu().rcu_read_lock_held()) [[unlikely]] {
        detail::report_map_op_misuse(contract_kind::missing_rcu_lock, name_, op,
                                     "() without rcu_read_lock(): the value it "
                                     "returns may be reclaimed at any moment",
                                     where);
        return false;
      }
    }
    return true;
  }
  void destroy() noexcept {
    for (std::size_t i = 0; i < table_->size; ++i) {
      bucket& b = table_->buckets[i];
      elem* e = b.head.exchange(nullptr, std::memory_order_relaxed);
      while (e != nullptr) {
        elem* next = e->next.load(std::memory_order_relaxed);
        detail::free_fields_noexcept(e->value, e->profile);
        kernel_.rcu().call_rcu(e, &reclaim);
        e = next;
      }
    }
    count_.store(0, std::memory_order_relaxed);
    // Readers may still be walking the buckets: they go after a grace period too.
    kernel_.rcu().call_rcu(table_, [](rcu_head* head) { delete static_cast<bucket_table*>(head); });
  }
  // The kernel is gone (and with it its RCU domain and readers): everything now.
  void destroy_orphaned() noexcept {
    for (std::size_t i = 0; i < table_->size; ++i) {
      elem* e = table_->buckets[i].head.exchange(nullptr, std::memory_order_relaxed);
      while (e != nullptr) {
        elem* next = e->next.load(std::memory_order_relaxed);
        detail::free_fields_noexcept(e->value, e->profile);
        if constexpr (contract_checks_enabled) {
          detail::unregister_kptr_region(&e->value);
        }
        delete e;
        e = next;
      }
    }
    delete table_;
  }

  kernel& kernel_;
  std::string name_;
  detail::kernel_dependent dependent_{"map", name_};
  const std::uint32_t max_entries_;
  bucket_table* table_;
  std::atomic<std::size_t> count_{0};  // relaxed: bounded by the bucket locks' order
};

// ---- array map -------------------------------------------------------------------------------

template <class Value>
class bpf_array_map {
 public:
  using key_type = std::uint32_t;
  using value_type = Value;

  bpf_array_map(kernel& k, std::uint32_t max_entries, std::string name = "array",
                std::source_location where = std::source_location::current())
      : kernel_(k),
        name_(std::move(name)),
        storage_(new storage(detail::checked_max_entries(
            k, name_, max_entries,
            max_entries > SIZE_MAX / sizeof(Value) ? 0 : sizeof(Value) * max_entries, where))) {
    if constexpr (contract_checks_enabled) {
      detail::register_values(storage_->values.get(), storage_->size, name_);
    }
    detail::kernel_access::attach_dependent(kernel_, &dependent_);
  }
  ~bpf_array_map() {
    const bool attached = detail::kernel_access::detach_dependent(&dependent_);
    for (std::uint32_t i = 0; i < storage_->size; ++i) {
      detail::free_fields_noexcept(storage_->values[i], profile_);
    }
    if (attached) {
      kernel_.rcu().call_rcu(storage_, &reclaim);
    } else {
      // Orphaned: the kernel and its readers are gone; the memory goes now.
      if constexpr (contract_checks_enabled) {
        detail::unregister_kptr_region(storage_->values.get());
      }
      delete storage_;
    }
  }
  bpf_array_map(const bpf_array_map&) = delete;
  bpf_array_map& operator=(const bpf_array_map&) = delete;

  const std::string& name() const noexcept { return name_; }
  std::uint32_t max_entries() const noexcept { return storage_->size; }

  // Every index below max_entries always has a value (zeroed at creation).
  Value* lookup_elem(std::uint32_t index,
                     std::source_location where = std::source_location::current()) {
    if (orphaned("bpf_map_lookup_elem", where)) {
      return nullptr;
    }
    if constexpr (contract_checks_enabled) {
      if (!kernel_.rcu().rcu_read_lock_held()) [[unlikely]] {
        detail::report_map_misuse(contract_kind::missing_rcu_lock, name_, "bpf_map_lookup_elem",
                                  "bpf_map_lookup_elem() without rcu_read_lock()", where);
        return nullptr;  // a handler that returns skips the lookup
      }
    }
    detail::sched_point(sched_op::map_lookup, this, "bpf_map_lookup_elem");
    if (index < storage_->size && detail::null_path("bpf_map_lookup_elem")) [[unlikely]] {
      return nullptr;  // the verifier types every lookup's result PTR_MAYBE_NULL
    }
    return index < storage_->size ? &storage_->values[index] : nullptr;
  }

  // 0, -E2BIG (index out of range), -EEXIST (BPF_NOEXIST: it always exists),
  // -EINVAL (flags). The copy skips the slots; then the element's slots are freed.
  long update_elem(std::uint32_t index, const Value& value, std::uint64_t flags,
                   std::source_location where = std::source_location::current()) {
    if (flags > BPF_EXIST || orphaned("bpf_map_update_elem", where)) {
      return -EINVAL;
    }
    if (index >= storage_->size) {
      return -E2BIG;
    }
    if (flags == BPF_NOEXIST) {
      return -EEXIST;
    }
    detail::sched_point(sched_op::map_update, this, "bpf_map_update_elem");
    Value& slot = storage_->values[index];
    slot = value;  // copy_map_value: kptr fields keep their contents
    bpf_obj_free_fields(slot, kernel_.config().profile);
    return 0;
  }

  // Arrays cannot delete: -EINVAL.
  long delete_elem(std::uint32_t, std::source_location = std::source_location::current()) {
    return -EINVAL;
  }

 private:
  struct storage : rcu_head {  // freed after a grace period when the map goes
    std::uint32_t size;
    std::unique_ptr<Value[]> values;
    explicit storage(std::uint32_t n) : rcu_head{}, size(n), values(new Value[n]()) {}
  };
  static void reclaim(rcu_head* head) {
    auto* s = static_cast<storage*>(head);
    for (std::uint32_t i = 0; i < s->size; ++i) {
      // A late xchg after the destruction began (tasklife's rule in every profile:
      // a kernel program holds its map, so no kernel reaches this).
      detail::free_fields_noexcept(s->values[i]);
    }
    if constexpr (contract_checks_enabled) {
      detail::unregister_kptr_region(s->values.get());
    }
    delete s;
  }
  bool orphaned(std::string_view op, std::source_location where) {
    if constexpr (contract_checks_enabled) {
      if (dependent_.orphaned.load(std::memory_order_relaxed)) [[unlikely]] {
        detail::report_map_op_misuse(contract_kind::teardown_order, name_, op,
                                     "() on a map whose kernel was destroyed before it; refused",
                                     where);
        return true;
      }
    }
    return false;
  }

  kernel& kernel_;
  // The kernel's profile, kept: an orphaned map's destructor must not ask the kernel.
  const semantics_profile profile_ = kernel_.config().profile;
  std::string name_;
  detail::kernel_dependent dependent_{"map", name_};
  storage* storage_;
};

// ---- the kernel's names ------------------------------------------------------------------------

template <class Map>
typename Map::value_type* bpf_map_lookup_elem(
    Map* map, const typename Map::key_type* key,
    std::source_location where = std::source_location::current()) {
  return map->lookup_elem(*key, where);
}

template <class Map>
long bpf_map_update_elem(Map* map, const typename Map::key_type* key,
                         const typename Map::value_type* value, std::uint64_t flags,
                         std::source_location where = std::source_location::current()) {
  return map->update_elem(*key, *value, flags, where);
}

template <class Map>
long bpf_map_delete_elem(Map* map, const typename Map::key_type* key,
                         std::source_location where = std::source_location::current()) {
  return map->delete_elem(*key, where);
}

// ---- task local storage (BPF_MAP_TYPE_TASK_STORAGE) -------------------------------------------
//
// kernel/bpf/bpf_task_storage.c (4cf1bc1f1045, v5.11; tracing programs a10787e6d58c):
// a map whose key is a task and whose value lives with the task (task->bpf_storage),
// one value per task and map. The program's interface is bpf_task_storage_get /
// bpf_task_storage_delete (kfunc.hpp). A value is freed
//   - by bpf_task_storage_delete, after a grace period (a program that got it inside
//     its section reads it until the section ends);
//   - with its task, in free_task (bpf_task_storage_free; b0fd1852bcc2 "bpf: Fix UAF
//     in task local storage", v6.4, moved it there from __put_task_struct): after the
//     last put_task_struct, so a usage holder keeps it past the task's grace period;
//   - when the map is destroyed, after a grace period.
// Values with kptr fields are not modelled (a static_assert). Locking: one lock
// for every task's storage list and every map's element list (the kernel has a
// lock per storage and per map bucket); its release/acquire pairs order a value's
// construction before any other thread's get of it.

inline constexpr std::uint64_t BPF_LOCAL_STORAGE_GET_F_CREATE = 1;

namespace detail {
struct task_storage_elem;
struct task_storage_access;

// What bpf_task_storage_map<V> does, with V's layout and constructors erased
// (src/task_storage.cpp).
class TASKLIFE_API task_storage_map_base {
 public:
  struct value_ops {
    std::size_t size;
    std::size_t align;
    void (*construct)(void* at, const void* init);  // init NULL: value-initialized
    void (*destroy)(void* at) noexcept;
  };
  task_storage_map_base(kernel& k, std::string name, const value_ops& ops);
  ~task_storage_map_base();
  task_storage_map_base(const task_storage_map_base&) = delete;
  task_storage_map_base& operator=(const task_storage_map_base&) = delete;

  const std::string& name() const noexcept { return name_; }
  // Values this map holds now (tasks with storage in it).
  std::size_t size() const TASKLIFE_EXCLUDES(task_storage_lock);

 private:
  friend struct task_storage_access;
  kernel& kernel_;
  std::string name_;
  value_ops ops_;
  task_storage_elem* elems_ TASKLIFE_GUARDED_BY(task_storage_lock) = nullptr;  // its values
  std::size_t count_ TASKLIFE_GUARDED_BY(task_storage_lock) = 0;
  kernel_dependent dependent_{"map", {}};
};
}  // namespace detail

// BPF_MAP_TYPE_TASK_STORAGE with values of type Value (copyable; no kptr fields).
template <class Value>
class bpf_task_storage_map : public detail::task_storage_map_base {
  static_assert(!detail::has_kptr_fields<Value>,
                "task storage values with kptr fields are not modelled");
  static_assert(std::is_copy_constructible_v<Value> && std::is_default_constructible_v<Value>,
                "a task storage value is created from a copy or value-initialized");

 public:
  using value_type = Value;
  explicit bpf_task_storage_map(kernel& k, std::string name = "task_storage")
      : task_storage_map_base(k, std::move(name), ops()) {}

 private:
  static value_ops ops() noexcept {
    return {sizeof(Value), alignof(Value),
            [](void* at, const void* init) {
              if (init != nullptr) {
                ::new (at) Value(*static_cast<const Value*>(init));
              } else {
                ::new (at) Value();
              }
            },
            [](void* at) noexcept { static_cast<Value*>(at)->~Value(); }};
  }
};

}  // namespace tasklife
