// CompileFail.ReleaseUncheckedResult: bpf_task_acquire may return NULL; the
// verifier wants the check before the result goes anywhere, release included.
// Expected: "Possibly NULL pointer passed to trusted arg0"
#include <tasklife/kernel.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/typed.hpp>

using namespace tasklife;

int main() {
  kernel k;
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  bpf_prog p(k, prog_type::tracing, "tp_btf/task_newtask", [](task_struct* arg) {
    const auto task = trusted_ptr<task_struct>::from_prog_arg(arg);
    auto acquired = typed::bpf_task_acquire(task);
    typed::bpf_task_release(acquired);  // the violation: a maybe_ref, not checked
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
