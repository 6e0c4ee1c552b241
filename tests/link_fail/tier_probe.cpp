// Compiled against one tier's headers (tests/link_fail/CMakeLists.txt): forks a task,
// lets it die and be reaped, and prints the tier the code was compiled for.
#include <cstdio>

#include <tasklife/tasklife.hpp>

int main() {
  tasklife::kernel k;
  tasklife::task_struct* t = k.fork(nullptr, {.comm = "probe"}).task;
  if (t == nullptr) {
    return 1;
  }
  k.do_exit(t);
  k.finish_task_switch(t);
  k.wait_task_zombie(t);
  k.rcu().rcu_barrier();
  std::printf("tier probe: compiled for checks=%s, tasklife %s, freed %llu\n", TASKLIFE_TIER_NAME,
              TASKLIFE_VERSION, static_cast<unsigned long long>(k.stats().freed));
  return k.stats().freed == 1 ? 0 : 1;
}
