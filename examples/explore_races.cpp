// Example: the explorer finds the kernel's historical task-lifetime races from
// the protocol alone, and proves the fixed kernels clean within the bound.
//
// Each model (explore_models.hpp) is ordinary code against the public API: a
// kernel, a few tasks, two or three simulated threads. explore() runs it under
// every schedule with at most two preemptions, every grace-period timing the
// RCU rules allow and every NULL path; a failure comes back minimised, with a
// timeline and a replay string.
#include <chrono>
#include <cstdio>
#include <string>

#include <tasklife/explore.hpp>

#include "example_checks.hpp"
#include "explore_models.hpp"

using namespace tasklife;

namespace {

void expect(const char* what, const explore::model& m, bool should_fail) {
  // Bounded by executions (a million, the default), not by the wall clock: on a
  // loaded machine a time budget ends the search before the space is exhausted.
  // The test's TIMEOUT is the wall-clock guard.
  explore::options o;
  o.time_budget = std::chrono::hours(24);
  const explore::report r = explore::explore(m, o);
  std::printf("%s\n    %s\n", what, r.summary().c_str());
  if (r.failure) {
    std::printf("    %s: %s\n    replay: %s\n",
                std::string(explore::to_string(r.failure->kind)).c_str(),
                r.failure->message.c_str(), r.failure->schedule.c_str());
  }
  example::check(should_fail ? !r.ok() : (r.ok() && r.exhausted),
                 should_fail ? "a failing schedule is found" : "no failure, space exhausted");
}

}  // namespace

int main() {
  expect("pid lookup race, rcu_users_inc (Nov 2022)",
         models::pid_lookup_race(semantics_profile::rcu_users_inc), true);
  expect("pid lookup race, current", models::pid_lookup_race(semantics_profile::current), false);
  expect("rcu_users/rcu_head union, rcu_users_inc",
         models::union_race(semantics_profile::rcu_users_inc), true);
  expect("rcu_users/rcu_head union, rcu_safe (22df776a9a86)",
         models::union_race(semantics_profile::rcu_safe), false);
  expect("the destructor of a NULL xchg, usage_based (before 1431d0b584a6)",
         models::null_xchg_dtor_race(semantics_profile::usage_based), true);
  expect("the destructor of a NULL xchg, rcu_safe (1431d0b584a6, v6.4)",
         models::null_xchg_dtor_race(semantics_profile::rcu_safe), false);
  expect("an xchg into a deleted element, rcu_safe (leaks until 2026)",
         models::xchg_after_delete_race(semantics_profile::rcu_safe), true);
  expect("an xchg into a deleted element, newest (the 2026 hash element destructor)",
         models::xchg_after_delete_race(semantics_profile::newest), false);
  expect("final put immediate (<= v6.16) under an RCU reader",
         models::final_put_race(final_put_mode::immediate), true);
  expect("final put deferred (v6.17, 8671bad873eb) under an RCU reader",
         models::final_put_race(final_put_mode::deferred), false);

  // The first race's timeline, as a bug report would show it.
  const explore::report r =
      explore::explore(models::pid_lookup_race(semantics_profile::rcu_users_inc));
  if (r.failure) {
    std::printf("\nthe pid lookup race, minimised (%u preemption(s), %zu steps):\n%s",
                r.failure->preemptions, r.failure->steps, r.failure->format_timeline().c_str());
  }
  return example::verdict();
}
