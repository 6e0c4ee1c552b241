// Example: bpf_task_from_pid (3f0e6f2b41d3) and bpf_task_from_vpid (675c3596ff32,
// v6.13) in the `current` profile, with a container (a child pid namespace).
//
// A pid number means something only relative to a namespace (docs/kernel.md §3.3,
// Alexei's remark on the Dec-2022 docs): bpf_task_from_pid resolves in init_pid_ns,
// bpf_task_from_vpid in the namespace of the task the program runs as. A program
// inside the container that passes its own view of a pid to bpf_task_from_pid
// gets another task, or none. Both are KF_ACQUIRE | KF_RET_NULL: NULL-check, then
// release.
#include <cstdint>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "example_checks.hpp"

using namespace tasklife;
using namespace example;  // check, usage, rcu_users, check_clean_shutdown, verdict

namespace {

// What a program gets for `nr` from each kfunc; releases what it acquired.
void lookup(std::int32_t nr, const task_struct* want_pid, const task_struct* want_vpid) {
  task_struct* by_pid = bpf_task_from_pid(nr);
  task_struct* by_vpid = bpf_task_from_vpid(nr);
  fmt::print("  nr {:>4}: from_pid -> {:<9} from_vpid -> {}\n", nr,
             by_pid != nullptr ? by_pid->comm : "NULL",
             by_vpid != nullptr ? by_vpid->comm : "NULL");
  check(by_pid == want_pid && by_vpid == want_vpid, "each resolves in its own namespace");
  if (by_pid != nullptr) {
    bpf_task_release(by_pid);
  }
  if (by_vpid != nullptr) {
    bpf_task_release(by_vpid);
  }
}

}  // namespace

int main() {
  kernel k({.name = "from-pid", .profile = semantics_profile::current});
  task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
  task_struct* cinit = k.fork(init, {.comm = "cinit", .new_pid_ns = true}).task;
  task_struct* prog = k.fork(cinit, {.comm = "prog"}).task;  // runs inside the container
  task_struct* worker = k.fork(cinit, {.comm = "worker"}).task;
  fmt::print("root pids: init={} cinit={} prog={} worker={}\n", init->pid, cinit->pid, prog->pid,
             worker->pid);
  {
    auto scope = k.run_as(prog);
    fmt::print("prog's view (vpids): cinit={} prog={} worker={}\n", task_pid_vnr(cinit),
               task_pid_vnr(prog), task_pid_vnr(worker));
    check(task_pid_vnr(cinit) == 1 && task_pid_vnr(prog) == 2 && task_pid_vnr(worker) == 3,
          "the container numbers its tasks from 1");

    lookup(1, init, cinit);                   // 1: init in the root, cinit in the container
    lookup(task_pid_vnr(prog), cinit, prog);  // prog's vpid 2 is cinit's root pid
    lookup(prog->pid, prog, worker);          // prog's root pid 3 is worker's vpid
    lookup(worker->pid, worker, nullptr);     // 4: nothing in the container
    lookup(9999, nullptr, nullptr);           // nobody
    lookup(-1, nullptr, nullptr);             // invalid: NULL, no diagnostic

    // The reference outlives the number: the worker exits and is reaped while the
    // program holds it; its vpid then resolves to nothing.
    const std::int32_t vpid = task_pid_vnr(worker);
    task_struct* ref = bpf_task_from_vpid(vpid);
    check(ref == worker, "from_vpid finds the worker");
    k.retire(worker);  // another CPU: exit, final switch, the parent's reap
    task_struct* again = bpf_task_from_vpid(vpid);
    fmt::print("  worker reaped: from_vpid({}) -> {}, our reference: rcu_users={}\n", vpid,
               again == nullptr ? "NULL" : again->comm, refcount_read(&ref->rcu_users));
    check(again == nullptr && refcount_read(&ref->rcu_users) == 1,
          "unhashed, but still allocated for the holder");
    if (again != nullptr) {
      bpf_task_release(again);
    }
    bpf_task_release(ref);  // the last rcu user: freed after a grace period
  }
  k.retire(prog);
  k.retire(cinit);
  k.retire(init);
  check_clean_shutdown(k);
  return verdict();
}
