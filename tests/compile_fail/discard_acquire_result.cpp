// CompileFail.DiscardAcquireResult: an acquiring kfunc's result is a reference;
// discarding it leaks it ([[nodiscard]], an error under -Werror=unused-result).
// Expected: "ignoring return value of ... bpf_task_acquire ... nodiscard"
#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    typed::bpf_task_acquire(task);  // the violation: the reference is dropped on the floor
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
