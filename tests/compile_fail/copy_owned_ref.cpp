// CompileFail.CopyOwnedRef: one acquire is one reference; a copy would be
// released twice.
// Expected: "use of deleted function owned_ref(const owned_ref&)"
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
      owned_ref<task_struct> copy = ref;  // the violation: a second owner
      typed::bpf_task_release(std::move(ref));
      typed::bpf_task_release(std::move(copy));
    }
    return 0;
  });
  (void)p.run(prog, prog);
  return 0;
}
