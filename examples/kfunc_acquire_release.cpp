// Example: bpf_get_current_task_btf, bpf_task_acquire, bpf_task_release and
// bpf_rcu_read_lock/unlock in the `current` profile (v6.4+, d02c48fa1139).
//
// The v6.4 acquire is refcount_inc_not_zero(&p->rcu_users) (KF_ACQUIRE | KF_RCU |
// KF_RET_NULL): it succeeds on an exiting task that is still an RCU user, the
// reference it returns keeps the task allocated across the reap, and it returns
// NULL for a task whose rcu_users already reached 0 (the program must NULL-check).
// A last part runs the same acquire/release under every profile to show which
// counter each one moves.
#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "example_checks.hpp"

using namespace tasklife;
using namespace example;  // check, usage, rcu_users, check_clean_shutdown, verdict

namespace {

void current_profile() {
  fmt::print("profile current:\n");
  kernel k({.name = "acquire-release", .profile = semantics_profile::current});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* target = k.fork(nullptr, {.comm = "target"}).task;
  task_struct* victim = k.fork(nullptr, {.comm = "victim"}).task;
  {
    auto scope = k.run_as(prog);  // from here on this thread is a BPF program of `prog`

    // current is trusted: it may be acquired without an RCU section.
    task_struct* self = bpf_get_current_task_btf();
    check(self == prog, "bpf_get_current_task_btf() is the task the program runs as");
    if (task_struct* ref = bpf_task_acquire(self); ref != nullptr) {  // KF_RET_NULL
      fmt::print("  acquired current '{}': rcu_users={}\n", ref->comm, rcu_users(ref));
      check(rcu_users(ref) == 3, "acquire moved rcu_users 2 -> 3");
      bpf_task_release(ref);
    }
    check(rcu_users(prog) == 2, "release moved it back to 2");

    // An exiting task is still an RCU user: the acquire succeeds ("keep it as-is").
    k.do_exit(target);  // zombie; rcu_users still 2
    task_struct* ref = bpf_task_acquire(target);
    check(ref == target, "acquire of an exiting (zombie) task succeeds");
    k.finish_task_switch(target);  // the scheduler's rcu_users: 3 -> 2
    k.wait_task_zombie(target);    // unhashed, the reaper's: 2 -> 1
    fmt::print("  after the reap: rcu_users={} usage={} freed={}\n", rcu_users(ref), usage(ref),
               k.stats().freed);
    check(rcu_users(ref) == 1 && k.stats().freed == 0, "our reference keeps the reaped task");
    bpf_task_release(ref);  // 1 -> 0: call_rcu(delayed_put_task_struct); freed after a GP

    // A task whose rcu_users reached 0 while we were inside an RCU section: its
    // memory is still valid, but acquire returns NULL and leaves the counter at 0.
    bpf_rcu_read_lock();
    k.retire(victim);  // another CPU: exit, final switch, reap -> rcu_users 0
    task_struct* late = bpf_task_acquire(victim);
    fmt::print("  acquire of a dying task: {} (rcu_users={})\n",
               late == nullptr ? "NULL" : "non-NULL", rcu_users(victim));
    check(late == nullptr && rcu_users(victim) == 0, "acquire of a dying task returns NULL");
    bpf_rcu_read_unlock();
  }
  k.retire(prog);
  check_clean_shutdown(k);
}

// The same acquire/release on a live task, in each profile: which counter moves.
void every_profile() {
  using enum semantics_profile;
  for (const semantics_profile profile : {rcu_users_inc, usage_based, rcu_safe, current}) {
    kernel k({.name = "acquire-release", .profile = profile});
    task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
    {
      auto scope = k.run_as(prog);
      task_struct* ref = bpf_task_acquire(bpf_get_current_task_btf());
      fmt::print("{:>13}: acquire -> usage={} rcu_users={}  flags={:#x}\n", to_string(profile),
                 usage(prog), rcu_users(prog), kfunc_flags(profile, kfunc_id::bpf_task_acquire));
      const bool on_usage = profile == usage_based;
      check(ref == prog && (on_usage ? usage(prog) == 2 && rcu_users(prog) == 2
                                     : usage(prog) == 1 && rcu_users(prog) == 3),
            on_usage ? "usage_based acquires usage (get_task_struct)" : "acquires rcu_users");
      bpf_task_release(ref);
      check(usage(prog) == 1 && rcu_users(prog) == 2, "release undoes exactly that");
    }
    k.retire(prog);
    check_clean_shutdown(k);
  }
}

}  // namespace

int main() {
  current_profile();
  every_profile();
  return verdict();
}
