// CompileFail.DereferenceUncheckedResult: an acquiring kfunc's result may be
// NULL; a maybe_ref has no operator-> until it is checked and taken.
// Expected: "base operand of '->' has non-pointer type maybe_ref"
#include <utility>

#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    auto found = typed::bpf_task_from_pid(arg->pid);
    const int pid = found->pid;  // the violation: not checked
    if (found) {
      typed::bpf_task_release(std::move(found).take());
    }
    return pid > 0 ? 0 : 1;
  });
  (void)p.run(prog, prog);
  return 0;
}
