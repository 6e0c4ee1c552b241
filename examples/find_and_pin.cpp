// Example: find a task by pid under RCU and pin it, the core of the kernel's
// bpf_task_from_pid(): the lookup is only protected by the read-side critical
// section, so the reference must be taken inside it with inc_not_zero on
// rcu_users — a task found there may already be dying (rcu_users == 0).
#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

using namespace tasklife;

// Returns t with an rcu_users reference, or nullptr (unknown pid, or dying).
task_struct* find_and_pin(kernel& k, pid_t nr) {
  const rcu_read_guard guard(k.rcu());
  task_struct* t = find_task_by_pid_ns(nr, &k.init_pid_ns());
  if (t != nullptr && !refcount_inc_not_zero(&t->rcu_users)) {
    t = nullptr;  // found, but rcu_users already reached 0: too late
  }
  return t;
}

int main() {
  kernel k({.name = "example"});
  const rcu_thread_registration reg(k.rcu());
  task_struct* t = k.fork(nullptr, {.comm = "sleeper"}).task;

  task_struct* pinned = find_and_pin(k, t->pid);
  fmt::print("pinned '{}' pid {}: rcu_users={}\n", pinned->comm, pinned->pid,
             refcount_read(&pinned->rcu_users));

  k.retire(t);  // exit, final switch, reap: unhashed; our reference keeps rcu_users at 1
  fmt::print("after the reap: findable={}, rcu_users={}\n", find_and_pin(k, t->pid) != nullptr,
             refcount_read(&pinned->rcu_users));
  put_task_struct_rcu_user(pinned);  // the last rcu user: a grace period, then the free
  k.rcu().rcu_barrier();
  fmt::print("freed: {}\n", k.stats().freed);
  return k.stats().freed == 1 ? 0 : 1;
}
