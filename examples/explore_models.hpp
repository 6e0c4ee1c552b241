// The explorer's models of the kernel's historical task-lifetime races, shared
// by the examples, the tests and the benchmarks. Each is an ordinary function of
// the kernel profile (or final-put mode) it runs under: the same protocol, once
// under the kernel that had the bug and once under the kernels that fixed it.
#pragma once

#include <atomic>
#include <tuple>

#include <tasklife/explore.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>

namespace tasklife::models {

// struct __tasks_kfunc_map_value (the kernel selftests' task_kfunc_common.h).
struct task_value {
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_value::task);
};
using task_map = bpf_hash_map<pid_t, task_value>;

// ---- the pid-lookup race (docs/kernel.md §3) --------------------------------------------
// A program looks a task up by pid (bpf_task_from_pid) while its parent reaps it.
inline explore::model pid_lookup_race(semantics_profile profile) {
  return [profile](explore::execution& x) {
    kernel k(x.config({.name = "race", .profile = profile, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* victim = k.fork(init, {.comm = "victim"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    const pid_t pid = victim->pid;
    x.thread("program", [&] {
      const current_task_scope as(prog);
      task_struct* t = bpf_task_from_pid(pid);
      if (t != nullptr) {
        bpf_task_release(t);
      }
    });
    x.thread("reaper", [&] { k.retire(victim); });
    x.run();
    k.retire(prog);
    k.retire(init);
  };
}

// ---- the rcu_users / rcu_head union (docs/kernel.md §4) -----------------------------------
//
// `victim` has exited and been reaped; only a stashed reference (a local object's
// kptr) keeps it. Its owner takes it out and drops it; another dead task's last reference is
// dropped too, so its callback is queued behind victim's; a program acquires the task in the slot
// under RCU and releases it after its section. With the union (<= v6.3) the queued callback's
// `next` pointer overwrote victim's dead rcu_users, so the acquire's inc_not_zero succeeds on a
// task whose free is already queued, and the program's release comes after the free. v6.4
// (22df776a9a86) gave rcu_users its own storage, and the same protocol is safe.
inline explore::model union_race(semantics_profile profile) {
  return [profile](explore::execution& x) {
    kernel k(x.config({.name = "union", .profile = profile, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* victim = k.fork(init, {.comm = "victim"}).task;
    task_struct* other = k.fork(init, {.comm = "other"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    task_struct* other_ref = nullptr;
    task_value* stash = nullptr;  // a local object with a task kptr (bpf_obj_new)
    {
      const current_task_scope as(prog);
      stash = bpf_obj_new<task_value>();
      bpf_kptr_xchg(&stash->task, bpf_task_acquire(victim));
      other_ref = bpf_task_acquire(other);
    }
    k.retire(victim);  // only the stash's reference is left
    k.retire(other);   // only other_ref is left
    x.thread("owner", [&] {
      const current_task_scope as(prog);
      if (task_struct* old = bpf_kptr_xchg(&stash->task, nullptr); old != nullptr) {
        bpf_task_release(old);  // victim's rcu_users reaches 0: its callback is queued
      }
    });
    x.thread("other", [&] {
      const current_task_scope as(prog);
      bpf_task_release(other_ref);  // other's callback is queued behind victim's
    });
    x.thread("program", [&] {
      const current_task_scope as(prog);
      bpf_rcu_read_lock();
      task_struct* got = nullptr;
      if (kfunc_exists(profile, kfunc_id::bpf_task_kptr_get)) {
        got = bpf_task_kptr_get(&stash->task);  // the Nov/Dec 2022 way
      } else if (task_struct* p = stash->task.get(); p != nullptr) {
        got = bpf_task_acquire(p);  // v6.4+: an RCU pointer, KF_RCU acquire
      }
      bpf_rcu_read_unlock();
      if (got != nullptr) {
        bpf_task_release(got);  // after the section: the free may have come
      }
    });
    x.run();
    {
      const current_task_scope as(prog);
      bpf_obj_drop(stash);
    }
    k.retire(prog);
    k.retire(init);
  };
}

// ---- the destructor of a NULL xchg (before 1431d0b584a6, v6.4) ---------------------------
//
// A hash element holds a local object (bpf_obj_new) that itself holds a task, so
// its type has a field to free. A program takes the object out of the element and
// drops it; a syscall deletes the element. When the program came first, the
// delete frees an empty slot: before 1431d0b584a6 "bpf: Only invoke kptr dtor
// following non-NULL xchg" (Mar 2023, v6.4) bpf_obj_free_fields called the
// destructor on whatever the exchange took out, NULL too, and a local object's
// drop of NULL frees the fields of an object at address NULL. The task
// destructor of those kernels, bpf_task_release, began with "if (!p) return;"
// (fb2211a57c11 removed it once the destructor stopped), so a task slot alone
// would show nothing: the local object is what makes the NULL a bug.
struct task_node {  // a program-allocated type with a task kptr
  kptr<task_struct> task;
  static constexpr auto kptr_fields = std::make_tuple(&task_node::task);
};
struct node_value {  // a map value with a kptr to a local object
  kptr<task_node> node;
  static constexpr auto kptr_fields = std::make_tuple(&node_value::node);
};
using node_map = bpf_hash_map<int, node_value>;

inline explore::model null_xchg_dtor_race(semantics_profile profile) {
  return [profile](explore::execution& x) {
    kernel k(x.config({.name = "null-dtor", .profile = profile, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    {
      node_map map(k, 4, "stash");
      const int key = 1;
      {
        const current_task_scope as(prog);
        (void)map.update_elem(key, node_value{}, BPF_NOEXIST);
        const rcu_read_guard guard(k.rcu());
        task_node* n = bpf_obj_new<task_node>();
        (void)bpf_kptr_xchg(&n->task, bpf_task_acquire(bpf_get_current_task_btf()));
        (void)bpf_kptr_xchg(&map.lookup_elem(key)->node, n);
      }
      x.thread("program", [&] {
        const current_task_scope as(prog);
        bpf_rcu_read_lock();
        if (node_value* v = bpf_map_lookup_elem(&map, &key); v != nullptr) {
          if (task_node* old = bpf_kptr_xchg(&v->node, static_cast<task_node*>(nullptr));
              old != nullptr) {
            bpf_obj_drop(old);
          }
        }
        bpf_rcu_read_unlock();
      });
      x.thread("deleter", [&] { (void)bpf_map_delete_elem(&map, &key); });
      x.run();
    }
    k.retire(prog);
    k.retire(init);
  };
}

// ---- the xchg into a deleted element (Hou Tao's report, May 2025) ------------------------
//
// A program looks an element up (a value pointer, valid until its RCU section
// ends), acquires current and exchanges it into the element; a syscall deletes
// the element meanwhile. When the delete falls between the lookup and the xchg,
// the delete-time bpf_obj_free_fields has already run, and the reference the
// program stores is never released: every kernel leaked it until the 2026
// destructor of the BPF memory allocator for hash elements (htab_mem_dtor),
// which frees the fields again when the element's memory goes. The leak is
// reported when the kernel is torn down.
inline explore::model xchg_after_delete_race(semantics_profile profile) {
  return [profile](explore::execution& x) {
    kernel k(x.config({.name = "late-xchg", .profile = profile, .pid_max = 64}));
    task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
    task_struct* prog = k.fork(init, {.comm = "prog"}).task;
    {
      task_map map(k, 4, "__tasks_kfunc_map");
      const pid_t key = prog->pid;
      (void)map.update_elem(key, task_value{}, BPF_NOEXIST);
      x.thread("program", [&] {
        const current_task_scope as(prog);
        bpf_rcu_read_lock();
        if (task_value* v = bpf_map_lookup_elem(&map, &key); v != nullptr) {
          if (task_struct* acquired = bpf_task_acquire(bpf_get_current_task_btf());
              acquired != nullptr) {
            if (task_struct* old = bpf_kptr_xchg(&v->task, acquired); old != nullptr) {
              bpf_task_release(old);
            }
          }
        }
        bpf_rcu_read_unlock();
      });
      x.thread("deleter", [&] { (void)bpf_map_delete_elem(&map, &key); });
      x.run();
    }
    k.rcu().rcu_barrier();  // the elements' reclaim: where the 2026 kernel frees again
    k.retire(prog);
    k.retire(init);
  };
}

// ---- the final put: immediate (<= v6.16) and deferred (v6.17, 8671bad873eb) ---------------
//
// A task already reaped and past its grace period is kept only by a usage
// reference, published in a shared pointer. A reader inside an RCU section reads
// the pointer and then looks at the task (tryget_task_struct); the holder clears
// the pointer and drops its reference. With the immediate final put the memory
// goes at once, under the reader; deferred, it goes one grace period later, after
// every reader that could have seen the pointer.
inline explore::model final_put_race(final_put_mode mode) {
  return [mode](explore::execution& x) {
    kernel k(x.config({.name = "final-put", .pid_max = 64, .final_put = mode}));
    task_struct* t = k.fork(nullptr, {.comm = "held"}).task;
    get_task_struct(t);  // the holder's reference
    k.retire(t);
    k.rcu().rcu_barrier();  // reaped, grace period over: only the holder keeps it
    std::atomic<task_struct*> shared{t};
    x.thread("reader", [&] {
      const rcu_thread_registration reg(k.rcu());
      const rcu_read_guard guard(k.rcu());
      explore::yield(&shared);
      task_struct* p = shared.load();
      if (p != nullptr) {
        explore::yield(&shared);
        if (task_struct* ref = tryget_task_struct(p); ref != nullptr) {
          put_task_struct(ref);
        }
      }
    });
    x.thread("holder", [&] {
      explore::yield(&shared);
      task_struct* p = shared.exchange(nullptr);
      put_task_struct(p);  // the last reference
    });
    x.run();
  };
}

}  // namespace tasklife::models
