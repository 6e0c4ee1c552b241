// The door to task local storage (map.hpp's bpf_task_storage_map), for the
// helpers in src/kfunc.cpp; defined in src/task_storage.cpp.
#pragma once

#include <tasklife/map.hpp>

namespace tasklife::detail {

struct task_storage_access {
  // The task's value in `m`; if it has none and `create`, a new one (a copy of
  // `init`, or value-initialized) unless the task's usage is already 0.
  // Runs the value's constructor under the storage lock: it must not call the helpers.
  static void* get(task_storage_map_base& m, task_struct* task, const void* init, bool create)
      TASKLIFE_EXCLUDES(task_storage_lock);
  // 0, or -ENOENT; the value is freed after a grace period.
  static long remove(task_storage_map_base& m, task_struct* task)
      TASKLIFE_EXCLUDES(task_storage_lock);
  static kernel& owner(task_storage_map_base& m) noexcept;
  static bool orphaned(const task_storage_map_base& m) noexcept;
  // Takes `e` off `m`'s list.
  static void unlink(task_storage_map_base& m, task_storage_elem* e)
      TASKLIFE_REQUIRES(task_storage_lock);
};

}  // namespace tasklife::detail
