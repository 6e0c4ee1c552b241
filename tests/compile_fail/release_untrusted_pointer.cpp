// CompileFail.ReleaseUntrustedPointer: a slot read outside any RCU section is
// untrusted: only comparable with NULL.
// Expected: "R1 must be referenced or trusted"
#include <tuple>

#include <tasklife/kernel.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::syscall, "syscall", [](task_struct*) {
    auto* obj = bpf_obj_new<task_value>();
    const untrusted_ptr<task_struct> seen = read(obj->task);
    if (seen) {
      typed::bpf_task_release(seen);  // the violation: PTR_UNTRUSTED
    }
    bpf_obj_drop(obj);
    return 0;
  });
  (void)p.run(prog);
  return 0;
}
