// CompileFail.ReleaseTrustedPointer: a tracepoint's argument is trusted, not
// referenced: the program holds no reference to give back.
// Expected: "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID"
#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    typed::bpf_task_release(task);  // the violation: trusted, not referenced
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
