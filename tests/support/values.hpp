// Test support: the map value the tests share.
#pragma once

#include <tuple>

#include <tasklife/map.hpp>
#include <tasklife/task.hpp>

namespace tasklife::test {

// struct __tasks_kfunc_map_value { struct task_struct __kptr *task; }: the map value
// of the kernel's selftests (tools/testing/selftests/bpf/progs/task_kfunc_common.h),
// also used as a local object's type (bpf_obj_new).
struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

}  // namespace tasklife::test
