// Example: storing a task in a map with bpf_kptr_xchg, in the `current` profile.
//
//   1. insert: the selftests' tasks_kfunc_map_insert idiom (task_kfunc_common.h):
//      insert an empty value with BPF_NOEXIST, look it up, acquire, xchg the
//      reference in; a reference that comes back out is released (-EEXIST).
//   2. use: read the kptr inside bpf_rcu_read_lock and bpf_task_acquire it (KF_RCU;
//      the v6.4 replacement for bpf_task_kptr_get, f85671c6ef46).
//   3. take: xchg NULL in; what comes out is the program's, exactly once.
//   4. delete: the map's destructor for task kptrs (bpf_task_release_dtor since
//      v6.8) runs synchronously; the element's memory waits for a grace period.
//   5. xchg after delete: a program still holding the value pointer stashes a
//      reference into the deleted element; tasklife releases it when the element
//      is reclaimed, one grace period later (`current`: the 2026 hash element
//      destructor; the older profiles leak it, as their kernels did).
//   6. map destruction releases what is still stored.
#include <cerrno>
#include <cstdint>
#include <tuple>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "example_checks.hpp"

using namespace tasklife;
using namespace example;  // check, usage, rcu_users, check_clean_shutdown, verdict

namespace {

// struct __tasks_kfunc_map_value { struct task_struct __kptr *task; };
struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};
using task_map = bpf_hash_map<std::int32_t, task_value>;

// tasks_kfunc_map_insert, keyed by p->pid (read directly: docs/kernel.md §6.1).
// Runs inside the program's RCU section (a non-sleepable program's implicit one).
long tasks_kfunc_map_insert(task_map& map, task_struct* p) {
  const std::int32_t pid = p->pid;
  const task_value local{};  // local.task = NULL
  if (const long status = bpf_map_update_elem(&map, &pid, &local, BPF_NOEXIST); status != 0) {
    return status;
  }
  task_value* v = bpf_map_lookup_elem(&map, &pid);
  if (v == nullptr) {
    bpf_map_delete_elem(&map, &pid);
    return -ENOENT;
  }
  task_struct* acquired = bpf_task_acquire(p);
  if (acquired == nullptr) {
    return -ENOENT;
  }
  if (task_struct* old = bpf_kptr_xchg(&v->task, acquired); old != nullptr) {
    bpf_task_release(old);
    return -EEXIST;
  }
  return 0;
}

}  // namespace

int main() {
  kernel k({.name = "map-stash", .profile = semantics_profile::current});
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "target"}).task;
  const std::int32_t pid = t->pid;
  {
    auto scope = k.run_as(prog);
    task_map map(k, 16, "tasks");

    fmt::print("1. insert\n");
    bpf_rcu_read_lock();
    check(tasks_kfunc_map_insert(map, t) == 0, "stored: insert returned 0");
    check(tasks_kfunc_map_insert(map, t) == -EEXIST, "again: BPF_NOEXIST says -EEXIST");
    bpf_rcu_read_unlock();
    fmt::print("   rcu_users={} (2 + the map's)\n", rcu_users(t));
    check(rcu_users(t) == 3, "the map holds one reference");

    fmt::print("2. use under RCU\n");
    bpf_rcu_read_lock();
    task_value* v = bpf_map_lookup_elem(&map, &pid);
    task_struct* rcu_ptr = v != nullptr ? v->task.get() : nullptr;  // MEM_RCU: not releasable
    task_struct* ref = rcu_ptr != nullptr ? bpf_task_acquire(rcu_ptr) : nullptr;
    bpf_rcu_read_unlock();
    check(ref == t && rcu_users(t) == 4, "acquired what the slot points to");
    if (ref != nullptr) {
      bpf_task_release(ref);
    }

    fmt::print("3. take\n");
    bpf_rcu_read_lock();
    v = bpf_map_lookup_elem(&map, &pid);
    task_struct* out = bpf_kptr_xchg(&v->task, nullptr);
    task_struct* again = bpf_kptr_xchg(&v->task, nullptr);
    bpf_rcu_read_unlock();
    check(out == t && again == nullptr, "xchg hands the reference out exactly once");
    bpf_task_release(out);
    check(rcu_users(t) == 2, "released by the program, not by the map");

    fmt::print("4. delete\n");
    bpf_rcu_read_lock();
    check(tasks_kfunc_map_insert(map, t) == -EEXIST, "the element is still there: -EEXIST");
    v = bpf_map_lookup_elem(&map, &pid);
    check(bpf_kptr_xchg(&v->task, bpf_task_acquire(t)) == nullptr, "stored into the empty slot");
    bpf_rcu_read_unlock();
    check(rcu_users(t) == 3, "the map holds one reference");
    check(bpf_map_delete_elem(&map, &pid) == 0, "deleted");
    fmt::print("   after the delete, before any grace period: rcu_users={}\n", rcu_users(t));
    check(rcu_users(t) == 2, "the destructor ran synchronously");

    fmt::print("5. xchg after delete\n");
    bpf_rcu_read_lock();
    check(tasks_kfunc_map_insert(map, t) == 0, "stored again");
    v = bpf_map_lookup_elem(&map, &pid);               // the program keeps this value pointer...
    bpf_map_delete_elem(&map, &pid);                   // ...while another CPU deletes the element
    const bool slot_freed = v->task.get() == nullptr;  // memory still valid under RCU
    task_struct* late = bpf_kptr_xchg(&v->task, bpf_task_acquire(t));
    bpf_rcu_read_unlock();
    check(slot_freed && late == nullptr, "the delete emptied the slot; the late xchg stored");
    fmt::print("   stashed into a deleted element: rcu_users={}\n", rcu_users(t));
    check(rcu_users(t) == 3, "the late reference is held by the dead element");
    k.rcu().rcu_barrier();  // the element is reclaimed: bpf_obj_free_fields again
    fmt::print("   after the element's grace period: rcu_users={}\n", rcu_users(t));
    check(rcu_users(t) == 2, "released exactly once at reclaim, not leaked");

    fmt::print("6. destroy the map with a task stored\n");
    bpf_rcu_read_lock();
    check(tasks_kfunc_map_insert(map, t) == 0, "stored");
    bpf_rcu_read_unlock();
  }  // ~task_map (the map is destroyed before the program's scope ends), then the scope
  check(rcu_users(t) == 2, "map destruction released the stored reference");
  k.retire(t);
  k.retire(prog);
  check_clean_shutdown(k);
  return verdict();
}
