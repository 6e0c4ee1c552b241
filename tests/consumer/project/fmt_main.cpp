// The opt-in fmt formatter (tasklife/fmt.hpp): a traced task's history printed with fmt.
#include <cstdio>
#include <string>

#include <tasklife/fmt.hpp>
#include <tasklife/tasklife.hpp>

int main() {
  tasklife::kernel k({.name = "fmt", .record_history = true});
  tasklife::task_struct* t = k.fork(nullptr, {.comm = "worker"}).task;
  if (t == nullptr) {
    return 1;
  }
  const std::string line = fmt::format("{}", k.history(t).front());
  k.do_exit(t);
  k.finish_task_switch(t);
  k.wait_task_zombie(t);
  k.rcu().rcu_barrier();
  std::printf("consumer_fmt: %s\n", line.c_str());
  return line.find("fork") != std::string::npos && k.stats().freed == 1 ? 0 : 1;
}
