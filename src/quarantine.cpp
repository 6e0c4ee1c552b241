// The quarantine of freed tasks (quarantine.hpp).
#include "quarantine.hpp"

#include <cstddef>

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

void task_quarantine::destroy(task_struct* t) noexcept {
  if constexpr (contract_checks_enabled) {
    const lock_guard lock(known_mutex_);
    known_.erase(t);
  }
  delete t;
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
  TASKLIFE_ASAN_POISON(t, offsetof(task_struct, pid));
}

void task_quarantine::unpoison(task_struct* t) noexcept {
  TASKLIFE_ASAN_UNPOISON(t, offsetof(task_struct, pid));
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
    unpoison(evicted);
    destroy(evicted);
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
    unpoison(t);
    destroy(t);
  }
}

std::size_t task_quarantine::size() const {
  const lock_guard lock(fifo_mutex_);
  return size_;
}

}  // namespace tasklife::detail
