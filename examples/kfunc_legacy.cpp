// Example: the kfuncs removed in v6.4 (f85671c6ef46), bpf_task_kptr_get and
// bpf_task_acquire_not_zero, in the two profiles that have them, and the
// rcu_users / rcu_head union that made them unsafe.
//
//   rcu_users_inc (90660309b0c7, fca1aa75518c): kptr_get reads the slot under RCU
//     and does inc_not_zero on rcu_users; acquire_not_zero is inc_not_zero.
//   usage_based (156ed20d22ee): both always return NULL, because before
//     22df776a9a86 rcu_users shared its storage with the task's rcu_head: once
//     the dead task's callback is queued and another is queued behind it, the
//     head's `next` pointer makes rcu_users non-zero again, and inc_not_zero
//     "succeeds" on a task whose free is already scheduled.
//
// Also shows the late-2022 idiom bpf_task_release(bpf_kptr_xchg(...)): release
// returned at once on NULL in these profiles (v6.4+ makes NULL a verifier error).
#include <tuple>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "example_checks.hpp"

using namespace tasklife;
using namespace example;  // check, usage, rcu_users, check_clean_shutdown, verdict

namespace {

struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};

// inc_not_zero on a pointer's low half may also find it "negative" and saturate.
void print_warning(const refcount_warning& w) {
  fmt::print("  WARNING: {}\n", w.message);
}

void run(semantics_profile profile) {
  const bool works = profile == semantics_profile::rcu_users_inc;
  fmt::print("profile {} (kptr_get flags {:#x}, acquire_not_zero flags {:#x}):\n",
             to_string(profile), kfunc_flags(profile, kfunc_id::bpf_task_kptr_get),
             kfunc_flags(profile, kfunc_id::bpf_task_acquire_not_zero));
  kernel k({.name = "legacy", .profile = profile});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "target"}).task;
  task_struct* dead = k.fork(nullptr, {.comm = "dead"}).task;
  task_struct* next = k.fork(nullptr, {.comm = "next"}).task;
  {
    auto scope = k.run_as(prog);
    bpf_array_map<task_value> map(k, 1, "tasks");
    const std::uint32_t key = 0;

    bpf_rcu_read_lock();
    task_value* v = bpf_map_lookup_elem(&map, &key);
    bpf_task_release(bpf_kptr_xchg(&v->task, bpf_task_acquire(t)));  // old is NULL: no-op
    fmt::print("  stored: usage={} rcu_users={}\n", usage(t), rcu_users(t));

    task_struct* got = bpf_task_kptr_get(&v->task);
    task_struct* nz = bpf_task_acquire_not_zero(t);
    fmt::print("  kptr_get -> {}, acquire_not_zero -> {}\n", got != nullptr ? got->comm : "NULL",
               nz != nullptr ? nz->comm : "NULL");
    if (works) {
      check(got == t && nz == t && rcu_users(t) == 5, "both acquire rcu_users (2 + slot + 2)");
    } else {
      check(got == nullptr && nz == nullptr && usage(t) == 2,
            "both gutted to NULL; the slot's reference is on usage");
    }
    bpf_task_release(got);  // NULL-safe in these profiles
    bpf_task_release(nz);
    bpf_task_release(bpf_kptr_xchg(&v->task, nullptr));
    bpf_rcu_read_unlock();
    check(usage(t) == 1 && rcu_users(t) == 2, "everything released once");

    // The union: no grace period can end while we are in the section, so both
    // tasks stay allocated with their callbacks queued, `next` behind `dead`.
    bpf_rcu_read_lock();
    k.retire(dead);  // rcu_users 0, call_rcu: the head's next = NULL
    k.retire(next);  // queued behind: dead's head->next = &next->rcu
    fmt::print("  dead task's rcu_users now reads {:#x} (the low half of a pointer)\n",
               rcu_users(dead));
    task_struct* bogus = bpf_task_acquire_not_zero(dead);
    bpf_rcu_read_unlock();
    if (works) {
      check(rcu_users(dead) != 0 && bogus == dead,
            "inc_not_zero succeeds on a dead task: the program holds a reference to a task "
            "whose free is queued");
    } else {
      check(bogus == nullptr, "156ed20d22ee: NULL, whatever the union says");
    }
    k.rcu().rcu_barrier();
    fmt::print("  after the grace period: freed={}\n", k.stats().freed);
    check(k.stats().freed == 2, "both freed regardless (releasing `bogus` would be a UAF)");
  }  // the array map is destroyed here, before the program's scope ends
  k.retire(t);
  k.retire(prog);
  check_clean_shutdown(k);
}

}  // namespace

int main() {
  using enum semantics_profile;
  const refcount_warning_sink old_sink = set_refcount_warning_sink(&print_warning);
  run(rcu_users_inc);
  run(usage_based);
  set_refcount_warning_sink(old_sink);
  for (const semantics_profile p : {rcu_safe, current}) {
    check(!kfunc_exists(p, kfunc_id::bpf_task_kptr_get) &&
              !kfunc_exists(p, kfunc_id::bpf_task_acquire_not_zero),
          fmt::format("{}: both removed (read the slot under RCU, then bpf_task_acquire)",
                      to_string(p)));
  }
  return verdict();
}
