// Example: the pid-lookup race of docs/kernel.md §3, reproduced deterministically.
//
// bpf_task_from_pid is an RCU section around two steps: find_task_by_pid_ns, then
// bpf_task_acquire. Here a program runs those two halves itself, and between them
// "another CPU" (this thread, by hand) lets the parent reap the zombie it found:
// the task is unhashed and its rcu_users drops 1 -> 0, which queues the free
// behind a grace period. The pointer is still valid memory (we are inside the
// RCU section), but the task is dying.
//
//   rcu_users_inc (90660309b0c7, 3f0e6f2b41d3): refcount_inc from 0 -> the
//     "addition on 0; use-after-free" warning, the counter saturates, the kfunc
//     returns the task anyway, and the grace period frees it under the program.
//   usage_based (156ed20d22ee): get_task_struct pins usage, so the memory
//     outlives the grace period until the program's release. Safe.
//   current (d02c48fa1139): refcount_inc_not_zero fails -> NULL. Nothing leaks,
//     nothing dangles.
#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "example_checks.hpp"

using namespace tasklife;
using namespace example;  // check, usage, rcu_users, check_clean_shutdown, verdict

namespace {

// Prints the kernel's WARN text instead of the default stderr line.
void print_warning(const refcount_warning& w) {
  fmt::print("  WARNING: {} (counter now {}, saturated={})\n", w.message,
             static_cast<int>(refcount_read(w.ref)), w.saturated);
}

// Prints a contract violation and lets tasklife skip the operation.
void print_violation(const contract_violation& v) {
  fmt::print("  tasklife reports ({}): {}\n", v.component, v.message);
}

struct outcome {
  task_struct* found;
  task_struct* acquired;
};

// The schedule: the victim is a zombie whose final switch is done (rcu_users 1,
// still hashed); the program finds it, the parent reaps it, the program acquires.
outcome run_race(kernel& k, task_struct* victim) {
  bpf_rcu_read_lock();
  task_struct* found = find_task_by_pid_ns(victim->pid, &k.init_pid_ns());  // first half
  const bool reaped = k.wait_task_zombie(victim);  // other CPU: unhash, rcu_users 1 -> 0
  fmt::print("  found '{}' pid {}; reaped meanwhile={}, rcu_users={}\n", found->comm, found->pid,
             reaped, refcount_read(&found->rcu_users));
  task_struct* acquired = bpf_task_acquire(found);  // second half
  bpf_rcu_read_unlock();
  fmt::print("  acquire -> {}\n", acquired == nullptr ? "NULL" : acquired->comm);
  return {found, acquired};
}

void race(semantics_profile profile) {
  fmt::print("profile {}:\n", to_string(profile));
  refcount_reset_warnings();  // WARN_ONCE: re-arm, so this run's warning prints
  const refcount_warning_sink old_sink = set_refcount_warning_sink(&print_warning);

  kernel k({.name = "pid-race", .profile = profile});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* victim = k.fork(nullptr, {.comm = "victim"}).task;
  k.do_exit(victim);
  k.finish_task_switch(victim);  // zombie: hashed, rcu_users == 1
  {
    auto scope = k.run_as(prog);
    const outcome r = run_race(k, victim);
    const std::uint64_t uaf = refcount_warnings_seen(REFCOUNT_ADD_UAF);
    switch (profile) {
      case semantics_profile::rcu_users_inc: {
        check(r.acquired == r.found && uaf == 1, "the acquire cannot fail: ADD_UAF warning");
        k.rcu().rcu_barrier();  // the grace period the reap requested ends
        fmt::print("  after the grace period: freed={} while the program holds it\n",
                   k.stats().freed);
        check(k.stats().freed == 1, "the task was freed under the program");
        if constexpr (debug_checks_enabled) {
          // The program's release is now a use-after-free; tasklife (full checks,
          // the task is in quarantine) reports it instead of touching freed memory.
          const std::uint64_t before = contract_violations_seen();
          const contract_handler old_handler = set_contract_handler(&print_violation);
          bpf_task_release(r.acquired);
          set_contract_handler(old_handler);
          check(contract_violations_seen() == before + 1, "the release is a detected UAF");
        }
        break;
      }
      case semantics_profile::usage_based:
        check(r.acquired == r.found && uaf == 0, "get_task_struct: no warning");
        k.rcu().rcu_barrier();
        check(k.stats().freed == 0 && refcount_read(&r.acquired->usage) == 1,
              "the program's usage keeps the memory past the grace period");
        bpf_task_release(r.acquired);  // put_task_struct: the last usage, freed now
        check(k.stats().freed == 1, "freed by the program's release");
        break;
      default:
        check(r.acquired == nullptr && uaf == 0, "inc_not_zero fails: NULL, no warning");
        check(refcount_read(&r.found->rcu_users) == 0, "the dead counter stays 0");
        k.rcu().rcu_barrier();
        check(k.stats().freed == 1, "freed once, after the grace period");
        break;
    }
  }
  k.retire(prog);
  check_clean_shutdown(k);
  set_refcount_warning_sink(old_sink);
}

}  // namespace

int main() {
  race(semantics_profile::rcu_users_inc);
  race(semantics_profile::usage_based);
  race(semantics_profile::current);
  return verdict();
}
