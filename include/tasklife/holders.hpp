// tasklife/holders.hpp — who holds a task's references (the kernel's ref_tracker).
//
// What it is
//   With kernel_config::track_holders, every reference taken on a task's usage or
//   rcu_users records its holder: a label ("bpf_task_acquire", "get_task_struct"),
//   the call site and, for the lifecycle's own three references, the role that
//   owns it (the reaper's and the scheduler's rcu_users, the rcu_users group's
//   usage). A release without a live holder of that counter and role is reported
//   with both sites and is not carried out; teardown lists a leaked task's holders
//   grouped by site, as ref_tracker_dir_print does. kernel::holders(t) and
//   kernel::format_holders(t) read them.
//
// Members
//   holder_counter, holder_role, holder_info
//
// Lifetime
//   A task's holders are forgotten when it is freed.
//
// Memory ordering
//   The tracker is guarded by its own mutex (one lock per tracked get and put).
#pragma once

#include <cstdint>
#include <source_location>
#include <string_view>

namespace tasklife {

enum class holder_counter : std::uint8_t { usage, rcu_users };
// Whose reference it is: the lifecycle's own three, or anyone else's.
enum class holder_role : std::uint8_t { reaper, scheduler, rcu_users_group, other };

struct holder_info {
  std::uint64_t id;
  holder_counter counter;
  holder_role role;
  std::string_view label;  // static text: "bpf_task_acquire", "get_task_struct", ...
  std::source_location taken_at;
};

}  // namespace tasklife
