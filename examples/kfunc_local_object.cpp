// Example: a task kptr inside a local object (bpf_obj_new / bpf_obj_drop), and
// bpf_task_release_dtor, the destructor the kernel registers for task kptrs since
// "bpf: Fix dtor CFI" (v6.8).
//
// bpf_obj_drop frees the object's kptr fields (bpf_obj_free_fields: xchg each slot
// to NULL, run the registered destructor on the old value), so a stashed task
// loses exactly one rcu_users reference, at once (the selftest
// test_task_xchg_release checks the same). The destructor is bpf_task_release in
// rcu_safe (v6.4 .. v6.7) and bpf_task_release_dtor, a void * wrapper with the
// same body (put_task_struct_rcu_user), in current. Programs never call the dtor;
// the last part calls it the way the kernel does, through a void *.
#include <tuple>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "example_checks.hpp"

using namespace tasklife;
using namespace example;  // check, usage, rcu_users, check_clean_shutdown, verdict

namespace {

// struct node { struct task_struct __kptr *task; int tag; };
struct node {
  kptr<task_struct> task;
  int tag = 0;
  static constexpr auto kptr_fields = std::make_tuple(&node::task);
};

void run(semantics_profile profile) {
  const bool has_dtor = kfunc_exists(profile, kfunc_id::bpf_task_release_dtor);
  fmt::print("profile {} (task kptr destructor: {}):\n", to_string(profile),
             has_dtor ? "bpf_task_release_dtor" : "bpf_task_release");
  kernel k({.name = "local-object", .profile = profile});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "target"}).task;
  {
    auto scope = k.run_as(prog);

    node* n = bpf_obj_new<node>();
    n->tag = 42;
    task_struct* acquired = bpf_task_acquire(t);
    check(acquired != nullptr, "acquired a live task");
    if (acquired != nullptr) {  // KF_RET_NULL
      task_struct* old = bpf_kptr_xchg(&n->task, acquired);
      check(old == nullptr && rcu_users(t) == 3, "the object holds the reference");
    }
    bpf_obj_drop(n);  // the stashed reference goes with the object, now
    fmt::print("  after bpf_obj_drop: rcu_users={}\n", rcu_users(t));
    check(rcu_users(t) == 2, "dropped by exactly one");

    if (has_dtor) {
      // What the map/object code does with a non-NULL slot: an indirect call
      // through a void (*)(void *), the signature kCFI needs.
      void (*dtor)(void*) = &bpf_task_release_dtor;
      void* stashed = bpf_task_acquire(t);
      check(stashed != nullptr && rcu_users(t) == 3, "acquired");
      dtor(stashed);
      check(rcu_users(t) == 2, "bpf_task_release_dtor = put_task_struct_rcu_user");
    }
  }
  k.retire(t);
  k.retire(prog);
  check_clean_shutdown(k);
}

}  // namespace

int main() {
  run(semantics_profile::rcu_safe);
  run(semantics_profile::current);
  return verdict();
}
