// The scaffolding every compile-fail case shares, so that a case file holds only
// the program body that breaks its rule (see CMakeLists.txt).
//
// A case is a BPF program written against the typed API. It calls one runner,
// named after the program's section, with its body:
//
//   run_tracing   SEC("tp_btf/task_newtask"): the argument is a trusted task
//   run_task_free SEC("lsm/task_free"): the argument is trusted but not RCU-safe
//   run_syscall   SEC("syscall"): sleepable, no implicit RCU section, no argument
//
// The runner makes a kernel with one task, `prog`, and a one-element array map of
// task_value, and runs the body once as `prog`. The body takes what it uses:
// `(task_struct* arg)`, `(task_struct* arg, task_value& v)`, `(task_value& v)` or
// `()`, where `v` is the map's element, looked up for it as a program would with
// bpf_map_lookup_elem (array values live as long as the map, so `v` stays valid
// outside the lookup's RCU section). The body's lambda is not a template: its
// errors are reported at its own lines in the case file, where the driver looks
// for them.
//
// A call to a refusing overload (one whose static_assert states the rule) returns
// void. Such a call is cast to void or written as a bare statement: `auto r = ...`
// would add a second error ("'void r' has incomplete type") before the rule's.
#pragma once

#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include <tasklife/kernel.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

namespace tasklife::compile_fail {

// struct __tasks_kfunc_map_value { struct task_struct __kptr *task; };
struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

namespace detail {

template <class Body>
int call_body(Body& body, task_struct* arg, task_value& v) {
  if constexpr (std::is_invocable_r_v<int, Body&, task_struct*, task_value&>) {
    return body(arg, v);
  } else if constexpr (std::is_invocable_r_v<int, Body&, task_struct*>) {
    return body(arg);
  } else if constexpr (std::is_invocable_r_v<int, Body&, task_value&>) {
    return body(v);
  } else {
    static_assert(std::is_invocable_r_v<int, Body&>,
                  "a case body takes (task_struct*), (task_struct*, task_value&), "
                  "(task_value&) or (), and returns int");
    return body();
  }
}

template <class Body>
int run_program(prog_type type, const char* section, bool has_arg, Body body) {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  int ret = 0;
  {
    bpf_array_map<task_value> map(k, 1);
    bpf_prog p(k, type, section, [&map, &body](task_struct* arg) {
      const std::uint32_t key = 0;
      task_value* v = nullptr;
      {
        const rcu_guard lookup;
        v = bpf_map_lookup_elem(&map, &key);
      }
      return v != nullptr ? call_body(body, arg, *v) : -1;
    });
    ret = p.run(prog, has_arg ? prog : nullptr).ret;
  }  // the map goes before its kernel, releasing what the body stored
  k.retire(prog);
  return ret;
}

}  // namespace detail

template <class Body>
int run_tracing(Body body) {
  return detail::run_program(prog_type::tracing, "tp_btf/task_newtask", true, std::move(body));
}

template <class Body>
int run_task_free(Body body) {
  return detail::run_program(prog_type::lsm, "lsm/task_free", true, std::move(body));
}

template <class Body>
int run_syscall(Body body) {
  return detail::run_program(prog_type::syscall, "syscall", false, std::move(body));
}

}  // namespace tasklife::compile_fail

// A case reads like the BPF program it stands for: unqualified kfunc and type names.
using namespace tasklife;                // NOLINT(google-build-using-namespace)
using namespace tasklife::compile_fail;  // NOLINT(google-build-using-namespace)
