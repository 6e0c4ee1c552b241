// Task local storage (map.hpp: bpf_task_storage_map; kfunc.hpp: its helpers),
// after kernel/bpf/bpf_task_storage.c and kernel/bpf/bpf_local_storage.c.
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <new>
#include <string>

#include <fmt/format.h>

#include <tasklife/map.hpp>

#include "task_internal.hpp"
#include "task_storage_internal.hpp"

namespace tasklife::detail {

// One value of one task in one map (the kernel's bpf_local_storage_elem).
struct task_storage_elem {
  rcu_head rcu;  // the free after a delete or the map's destruction
  task_storage_map_base* map;
  task_struct* task;
  // The task's values and the map's: linked under the lock. A list taken off its
  // owner (the task's at free_task, the map's at its destruction) is walked without
  // it, through next_detached (no one else can reach it any more).
  task_storage_elem* task_next TASKLIFE_GUARDED_BY(task_storage_lock);
  task_storage_elem* map_prev TASKLIFE_GUARDED_BY(task_storage_lock);
  task_storage_elem* map_next TASKLIFE_GUARDED_BY(task_storage_lock);
  void (*destroy)(void*) noexcept;
  std::size_t align;
  void* value;
};

// Every task's list and every map's list (task.hpp; map.hpp, Memory ordering).
constinit mutex task_storage_lock;

namespace {

task_storage_elem* elem_of_rcu(rcu_head* rhp) noexcept {
  return reinterpret_cast<task_storage_elem*>(reinterpret_cast<char*>(rhp) -
                                              offsetof(task_storage_elem, rcu));
}

void free_elem(task_storage_elem* e) noexcept {
  e->destroy(e->value);
  ::operator delete(e->value, std::align_val_t(e->align));
  delete e;
}

void reclaim_elem(rcu_head* rhp) {
  free_elem(elem_of_rcu(rhp));
}

// The next value of a list no one else can reach (detached under the lock before).
task_storage_elem* next_detached(task_storage_elem* e, task_storage_elem* task_storage_elem::*link)
    TASKLIFE_NO_THREAD_SAFETY_ANALYSIS {
  return e->*link;
}

// Unlinks `e` from its map's list (the task's list is the caller's business).
void unlink_from_map(task_storage_elem* e) TASKLIFE_REQUIRES(task_storage_lock) {
  task_storage_access::unlink(*e->map, e);
}

// free_task's bpf_task_storage_free: the task's values go with it. No reader can
// still reach them: the free comes after the last usage put, and after the grace
// period that followed rcu_users reaching 0.
void free_task_storage(task_struct* t) noexcept TASKLIFE_EXCLUDES(task_storage_lock) {
  task_storage_elem* list = nullptr;
  {
    const lock_guard lock(task_storage_lock);
    list = std::exchange(t->priv.bpf_storage, nullptr);
    for (task_storage_elem* e = list; e != nullptr; e = e->task_next) {
      unlink_from_map(e);
    }
  }
  while (list != nullptr) {
    task_storage_elem* const next = next_detached(list, &task_storage_elem::task_next);
    free_elem(list);
    list = next;
  }
}

}  // namespace

void task_storage_access::unlink(task_storage_map_base& m, task_storage_elem* e) {
  if (e->map_prev != nullptr) {
    e->map_prev->map_next = e->map_next;
  } else {
    m.elems_ = e->map_next;
  }
  if (e->map_next != nullptr) {
    e->map_next->map_prev = e->map_prev;
  }
  e->map_prev = e->map_next = nullptr;
  --m.count_;
}

task_storage_map_base::task_storage_map_base(kernel& k, std::string name, const value_ops& ops)
    : kernel_(k), name_(std::move(name)), ops_(ops) {
  dependent_.name = name_;
  // Release: pairs with free_task's acquire load of the hook.
  task_storage_free_hook.store(&free_task_storage, std::memory_order_release);
  kernel_access::attach_dependent(kernel_, &dependent_);
}

task_storage_map_base::~task_storage_map_base() {
  const bool attached = kernel_access::detach_dependent(&dependent_);
  // bpf_local_storage_map_free: every value leaves its task, and is freed after a
  // grace period (a program may still read one it got in its section).
  task_storage_elem* list = nullptr;
  {
    const lock_guard lock(task_storage_lock);
    list = std::exchange(elems_, nullptr);
    count_ = 0;
    // Orphaned (its kernel destroyed first): the tasks may be gone with it (a
    // leaked task is buried, in unchecked builds freed, without free_task), so
    // their lists are not touched; nothing can reach the values any more.
    for (task_storage_elem* e = attached ? list : nullptr; e != nullptr; e = e->map_next) {
      task_storage_elem** link = &e->task->priv.bpf_storage;
      while (*link != nullptr && *link != e) {
        link = &(*link)->task_next;
      }
      if (*link == e) {
        *link = e->task_next;
      }
    }
  }
  while (list != nullptr) {
    task_storage_elem* const next = next_detached(list, &task_storage_elem::map_next);
    if (attached) {
      kernel_.rcu().call_rcu(&list->rcu, &reclaim_elem);
    } else {
      free_elem(list);  // orphaned: the kernel and its readers are gone
    }
    list = next;
  }
}

std::size_t task_storage_map_base::size() const {
  const lock_guard lock(task_storage_lock);
  return count_;
}

void* task_storage_access::get(task_storage_map_base& m, task_struct* task, const void* init,
                               bool create) {
  const lock_guard lock(task_storage_lock);
  for (task_storage_elem* e = task->priv.bpf_storage; e != nullptr; e = e->task_next) {
    if (e->map == &m) {
      return e->value;
    }
  }
  // "only allocate new storage, when the task is refcounted"
  if (!create || refcount_read(&task->usage) == 0) {
    return nullptr;
  }
  void* value = ::operator new(m.ops_.size, std::align_val_t(m.ops_.align));
  try {
    m.ops_.construct(value, init);
  } catch (...) {
    ::operator delete(value, std::align_val_t(m.ops_.align));
    throw;
  }
  auto* e = new task_storage_elem{
      {}, &m, task, task->priv.bpf_storage, nullptr, m.elems_, m.ops_.destroy, m.ops_.align, value};
  task->priv.bpf_storage = e;
  if (m.elems_ != nullptr) {
    m.elems_->map_prev = e;
  }
  m.elems_ = e;
  ++m.count_;
  return value;
}

long task_storage_access::remove(task_storage_map_base& m, task_struct* task) {
  task_storage_elem* found = nullptr;
  {
    const lock_guard lock(task_storage_lock);
    for (task_storage_elem** link = &task->priv.bpf_storage; *link != nullptr;
         link = &(*link)->task_next) {
      if ((*link)->map == &m) {
        found = *link;
        *link = found->task_next;
        unlink(m, found);
        break;
      }
    }
  }
  if (found == nullptr) {
    return -ENOENT;
  }
  m.kernel_.rcu().call_rcu(&found->rcu, &reclaim_elem);  // bpf_selem_free: after a grace period
  return 0;
}

kernel& task_storage_access::owner(task_storage_map_base& m) noexcept {
  return m.kernel_;
}

bool task_storage_access::orphaned(const task_storage_map_base& m) noexcept {
  return m.dependent_.orphaned.load(std::memory_order_relaxed);
}

}  // namespace tasklife::detail
