// tasklife/fmt.hpp — printing tasklife's values with fmt (opt-in).
//
// What it is
//   fmt::formatter specialisations for tasklife's printable values, for programs
//   that use fmt themselves. tasklife uses fmt only inside the library (a private
//   dependency): no other tasklife header includes fmt, so the umbrella header
//   stays cheaper to parse and no FMT_* macro reaches a program that does not ask
//   for it. Including this header makes fmt a dependency of your target: link
//   fmt::fmt (CMake) or add `fmt` to your pkg-config modules.
//
// Members
//   fmt::formatter<task_event>   one line: sequence number, time since the kernel
//                                was created (us), pid, kind, usage, rcu_users and the
//                                detail text if any — the demo's and the logs' format
//
// Lifetime
//   Formatting reads the event only; a task_event is a value (history.hpp).
//
// Memory ordering
//   None: formatting touches no shared state.
#pragma once

#include <string_view>

#include <fmt/format.h>

#include <tasklife/history.hpp>

template <>
struct fmt::formatter<tasklife::task_event> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const tasklife::task_event& e, FormatContext& ctx) const {
    auto out = fmt::format_to(
        ctx.out(), "#{:<4} {:>9.3f} us  pid {:<6} {:<14} usage={:<2} rcu_users={:<2}", e.seq,
        static_cast<double>(e.time_ns) / 1000.0, e.pid, tasklife::to_string(e.kind),
        static_cast<int>(e.usage), static_cast<int>(e.rcu_users));
    if (!e.detail.empty()) {
      out = fmt::format_to(out, " {}", e.detail);
    }
    return out;
  }
};
