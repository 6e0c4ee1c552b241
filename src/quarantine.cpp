// The quarantine of freed tasks (quarantine.hpp).
#include "quarantine.hpp"

#include <cstddef>
#include <new>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <tasklife/check.hpp>
#include <tasklife/task.hpp>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TASKLIFE_ASAN_POISON(addr, size) __asan_poison_memory_region((addr), (size))
#define TASKLIFE_ASAN_UNPOISON(addr, size) __asan_unpoison_memory_region((addr), (size))
#else
#define TASKLIFE_ASAN_POISON(addr, size) ((void)(addr), (void)(size))
#define TASKLIFE_ASAN_UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

namespace tasklife::detail {

namespace {

// The process-wide pool of freed task memory and the teardown tombstones (see
// quarantine.hpp). Never destroyed: what it holds must stay valid until exit.
struct graveyard {
  mutex m;
  task_struct* head TASKLIFE_GUARDED_BY(m) = nullptr;  // oldest pooled task
  task_struct* tail TASKLIFE_GUARDED_BY(m) = nullptr;
  std::unordered_set<const task_struct*> pooled TASKLIFE_GUARDED_BY(m);
  std::unordered_map<const task_struct*, std::string> tombstones TASKLIFE_GUARDED_BY(m);
};

graveyard& the_graveyard() {
  static graveyard* g = new graveyard;  // NOLINT: deliberately never destroyed
  return *g;
}

void asan_poison(task_struct* t) noexcept {
  TASKLIFE_ASAN_POISON(t, offsetof(task_struct, pid));
}
void asan_unpoison(task_struct* t) noexcept {
  TASKLIFE_ASAN_UNPOISON(t, offsetof(task_struct, pid));
}

// A task out of its quarantine, still poisoned: into the pool, newest last.
void pool_put(task_struct* t) noexcept {
  graveyard& g = the_graveyard();
  const lock_guard lock(g.m);
  t->priv.quarantine_next = nullptr;
  if (g.tail != nullptr) {
    g.tail->priv.quarantine_next = t;
  } else {
    g.head = t;
  }
  g.tail = t;
  try {
    g.pooled.insert(t);
  } catch (...) {  // out of memory for the record: the task is still pooled, only unnamed
  }
}

}  // namespace

task_struct* allocate_task() {
  if constexpr (debug_checks_enabled) {
    task_struct* t = nullptr;
    {
      graveyard& g = the_graveyard();
      const lock_guard lock(g.m);
      t = g.head;
      if (t != nullptr) {
        g.head = t->priv.quarantine_next;
        if (g.head == nullptr) {
          g.tail = nullptr;
        }
        g.pooled.erase(t);
      }
    }
    if (t != nullptr) {
      // The memory of a task freed long ago becomes a new task: its old object
      // ends (its deeper pid levels are freed) and a fresh one begins there.
      asan_unpoison(t);
      t->~task_struct();
      return new (t) task_struct;
    }
  }
  return new task_struct;
}

void bury_task(task_struct* t, std::string_view kernel) noexcept {
  t->priv.magic.store(task_torn_down_magic, std::memory_order_relaxed);
  graveyard& g = the_graveyard();
  const lock_guard lock(g.m);
  try {
    g.tombstones.insert_or_assign(t, std::string(kernel));
  } catch (...) {  // out of memory for the name: the tombstone is kept all the same
  }
}

graveyard_state graveyard_lookup(const task_struct* t) noexcept {
  if constexpr (!contract_checks_enabled) {
    return graveyard_state::unknown;
  }
  graveyard& g = the_graveyard();
  const lock_guard lock(g.m);
  if (g.tombstones.contains(t)) {
    return graveyard_state::tombstone;
  }
  return g.pooled.contains(t) ? graveyard_state::pooled : graveyard_state::unknown;
}

std::string graveyard_kernel_name(const task_struct* t) {
  graveyard& g = the_graveyard();
  const lock_guard lock(g.m);
  const auto it = g.tombstones.find(t);
  return it == g.tombstones.end() ? std::string() : it->second;
}

void task_quarantine::admit(const task_struct* t) {
  if constexpr (contract_checks_enabled) {
    const lock_guard lock(known_mutex_);
    known_.insert(t);
  }
}

bool task_quarantine::knows(const task_struct* t) const {
  if constexpr (contract_checks_enabled) {
    const lock_guard lock(known_mutex_);
    return known_.contains(t);
  } else {
    return t != nullptr;
  }
}

void task_quarantine::forget(const task_struct* t) noexcept {
  if constexpr (contract_checks_enabled) {
    const lock_guard lock(known_mutex_);
    known_.erase(t);
  }
}

void task_quarantine::destroy(task_struct* t) noexcept {
  forget(t);
  delete t;
}

void task_quarantine::bury(task_struct* t, std::string_view kernel) noexcept {
  if constexpr (contract_checks_enabled) {
    forget(t);
    bury_task(t, kernel);
  } else {
    delete t;  // no registry to tell a tombstone by: the memory goes
  }
}

void task_quarantine::poison(task_struct* t) noexcept {
  // What the kernel's slab would write (POISON_FREE); identity and the freeing
  // event stay readable (in priv and after `pid`) for the report, the rest is
  // hidden from raw access under ASan.
  refcount_set(&t->usage, static_cast<int>(task_freed_magic));
  refcount_set(&t->rcu_users, static_cast<int>(task_freed_magic));
  t->flags.store(task_freed_magic, std::memory_order_relaxed);
  t->state.store(task_freed_magic, std::memory_order_relaxed);
  t->priv.magic.store(task_freed_magic, std::memory_order_relaxed);
  asan_poison(t);
}

void task_quarantine::release(task_struct* t) {
  if constexpr (!debug_checks_enabled) {
    destroy(t);
    return;
  }
  poison(t);
  task_struct* evicted = nullptr;
  {
    const lock_guard lock(fifo_mutex_);
    t->priv.quarantine_next = nullptr;
    if (tail_ != nullptr) {
      tail_->priv.quarantine_next = t;
    } else {
      head_ = t;
    }
    tail_ = t;
    ++size_;
    if (size_ > capacity_) {
      evicted = head_;
      head_ = evicted->priv.quarantine_next;
      if (head_ == nullptr) {
        tail_ = nullptr;
      }
      --size_;
    }
  }
  if (evicted != nullptr) {
    forget(evicted);
    pool_put(evicted);  // still poisoned: a later use is still reported
  }
}

void task_quarantine::drain() {
  task_struct* list = nullptr;
  {
    const lock_guard lock(fifo_mutex_);
    list = head_;
    head_ = nullptr;
    tail_ = nullptr;
    size_ = 0;
  }
  while (task_struct* t = list) {
    list = t->priv.quarantine_next;
    forget(t);
    pool_put(t);
  }
}

std::size_t task_quarantine::size() const {
  const lock_guard lock(fifo_mutex_);
  return size_;
}

}  // namespace tasklife::detail
