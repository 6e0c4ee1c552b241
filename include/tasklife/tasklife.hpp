// tasklife/tasklife.hpp — the umbrella header: everything tasklife offers.
//
// Layers, bottom up (each header one concept; see docs/design.md):
//   check.hpp     contract checks and the violation handler
//   refcount.hpp  the kernel's saturating refcount_t
//   rcu.hpp       the RCU domain over liburcu (the only layer that touches it)
#pragma once

#include <tasklife/check.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/refcount.hpp>
