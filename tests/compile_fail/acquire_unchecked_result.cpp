// CompileFail.AcquireUncheckedResult: bpf_task_acquire's result may be NULL; it
// cannot be passed to another kfunc before the check.
// Expected: "Possibly NULL pointer passed to trusted arg0"
// The result is cast to void: the refusing overload returns void, so `auto r =`
// would add a second error ("'void r' has incomplete type") before the rule's.
#include <utility>

#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    auto first = typed::bpf_task_acquire(task);
    (void)typed::bpf_task_acquire(first);  // the violation: `first` is not checked
    if (first) {
      typed::bpf_task_release(std::move(first).take());
    }
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
