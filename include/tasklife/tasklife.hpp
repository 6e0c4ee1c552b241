// tasklife/tasklife.hpp — the umbrella header: everything tasklife offers.
//
// Layers, bottom up (each header one concept; see docs/design.md):
//   check.hpp     contract checks and the violation handler
//   refcount.hpp  the kernel's saturating refcount_t
//   thread_safety.hpp  locks whose rules clang checks (-Wthread-safety)
//   rcu.hpp       the RCU domain over liburcu (the only layer that touches it)
//   deterministic_rcu.hpp  the backend whose grace periods end only when told
//   task.hpp      task_struct, usage/rcu_users and the kernel's lifetime functions
//   pid.hpp       pid namespaces and lock-free lookup by number
//   profile.hpp   the kernel's history as semantics profiles, with their capabilities
//   history.hpp   per-task lifetime events, recorded on demand (one table of kinds)
//   holders.hpp   who holds a task's references (ref_tracker)
//   tracepoint.hpp  task_newtask, sched_process_exit, sched_process_free
//   current.hpp   `current`: the task a thread runs as
//   kernel.hpp    the simulated system: its parts and the lifecycle
//   map.hpp       kptr slots, hash and array maps, local objects
//   kfunc.hpp     the BPF task kfuncs in each semantics profile
//   prog.hpp      programs and the verifier's reference rules at run time
//   typed.hpp     the kfuncs over types carrying the verifier's state
#pragma once

#include <tasklife/check.hpp>
#include <tasklife/current.hpp>
#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/history.hpp>
#include <tasklife/holders.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/profile.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/refcount.hpp>
#include <tasklife/task.hpp>
#include <tasklife/thread_safety.hpp>
#include <tasklife/tracepoint.hpp>
#include <tasklife/typed.hpp>
