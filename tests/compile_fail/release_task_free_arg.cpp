// CompileFail.ReleaseTaskFreeArg: the lsm/task_free argument is the task being
// freed; the program holds no reference to it.
// Expected: "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID"
#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::lsm, "lsm/task_free", [](task_struct* arg) {
    const auto dying = task_free_arg<task_struct>::from_prog_arg(arg);
    typed::bpf_task_release(dying);  // the violation: not referenced
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
