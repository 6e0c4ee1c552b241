// tasklife/tasklife.hpp — the umbrella header: everything tasklife offers.
//
// Layers, bottom up (each header one concept; see docs/design.md):
//   check.hpp     contract checks and the violation handler
//   refcount.hpp  the kernel's saturating refcount_t
//   rcu.hpp       the RCU domain over liburcu (the only layer that touches it)
//   task.hpp      task_struct, usage/rcu_users and the kernel's lifetime functions
//   pid.hpp       pid namespaces and lock-free lookup by number
//   history.hpp   per-task lifetime events, recorded on demand
//   kernel.hpp    the simulated system: lifecycle, current, tracepoints, teardown
//   map.hpp       kptr slots, hash and array maps, local objects
//   kfunc.hpp     the BPF task kfuncs in each semantics profile
//   prog.hpp      programs and the verifier's reference rules at run time
//   typed.hpp     the kfuncs over types carrying the verifier's state
#pragma once

#include <tasklife/check.hpp>
#include <tasklife/history.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/refcount.hpp>
#include <tasklife/task.hpp>
#include <tasklife/typed.hpp>
