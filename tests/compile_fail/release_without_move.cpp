// CompileFail.ReleaseWithoutMove: releasing consumes the reference; an lvalue
// owned_ref would stay usable after the release.
// Expected: "releasing consumes the reference: pass std::move(ref)"
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
    auto acquired = typed::bpf_task_acquire(task);
    if (acquired) {
      owned_ref<task_struct> ref = std::move(acquired).take();
      typed::bpf_task_release(ref);  // the violation: not given up with std::move
    }
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
