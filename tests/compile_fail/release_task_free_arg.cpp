// CompileFail.ReleaseTaskFreeArg (docs/verifier.md, rule R3): the lsm/task_free
// argument is the task being freed; the program holds no reference to it.
// Expected: "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID"
#include "case_prelude.hpp"

int main() {
  return run_task_free([](task_struct* arg) {
    const auto dying = task_free_arg<task_struct>::from_prog_arg(arg);
    typed::bpf_task_release(dying);  // the violation: not referenced
    return 0;
  });
}
