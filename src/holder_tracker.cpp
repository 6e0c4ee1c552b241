// The holder tracker (holder_tracker.hpp).
#include "holder_tracker.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include <tasklife/check.hpp>
#include <tasklife/task.hpp>

#include "task_internal.hpp"

namespace tasklife::detail {
namespace {

std::string_view counter_name(holder_counter c) {
  return c == holder_counter::usage ? "usage" : "rcu_users";
}

bool same_site(const holder_info& a, const holder_info& b) {
  return a.label == b.label && a.taken_at.line() == b.taken_at.line() &&
         std::string_view(a.taken_at.file_name()) == b.taken_at.file_name();
}

}  // namespace

void holder_tracker::get(const task_struct* t, holder_counter counter, holder_role role,
                         std::string_view label, std::source_location where) {
  // Relaxed: ids only need to be unique.
  const holder_info info{next_id_.fetch_add(1, std::memory_order_relaxed), counter, role, label,
                         where};
  const lock_guard lock(mutex_);
  entries_[t].push_back(entry{info, true, {}});
}

bool holder_tracker::put(const task_struct* t, holder_counter counter, holder_role role,
                         std::string_view op, std::source_location where) {
  std::string report;
  contract_kind kind = contract_kind::over_release;
  std::source_location earlier{};
  bool has_earlier = false;
  {
    const lock_guard lock(mutex_);
    std::vector<entry>& entries = entries_[t];
    // The most recent live holder of this counter with this role: the lifecycle's
    // own references are released only by their own owners.
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      if (it->live && it->info.counter == counter && it->info.role == role) {
        it->live = false;
        it->dropped_at = where;
        return true;
      }
    }
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      if (!it->live && it->info.counter == counter && it->info.role == role) {
        report = fmt::format(
            "{}: reference already released: {} of task '{}' (pid {}) was taken by {} at {}:{} "
            "and released at {}:{}",
            op, counter_name(counter), t->comm, t->pid, it->info.label,
            it->info.taken_at.file_name(), it->info.taken_at.line(), it->dropped_at.file_name(),
            it->dropped_at.line());
        kind = contract_kind::double_release;
        earlier = it->dropped_at;
        has_earlier = true;
        break;
      }
    }
    if (report.empty()) {
      report = fmt::format("{}: no tracked {} reference of task '{}' (pid {}) to release", op,
                           counter_name(counter), t->comm, t->pid);
    }
  }
  contract_violation v{kind, "holders", op, describe_task(t), std::move(report), where};
  v.earlier = earlier;
  v.has_earlier = has_earlier;
  report_contract_violation(v);
  return false;
}

std::vector<holder_info> holder_tracker::holders(const task_struct* t) const {
  std::vector<holder_info> out;
  const lock_guard lock(mutex_);
  const auto it = entries_.find(t);
  if (it != entries_.end()) {
    for (const entry& e : it->second) {
      if (e.live) {
        out.push_back(e.info);
      }
    }
  }
  return out;
}

std::string holder_tracker::format(const task_struct* t) const {
  const std::vector<holder_info> live = holders(t);
  std::string out;
  for (const holder_counter counter : {holder_counter::rcu_users, holder_counter::usage}) {
    std::size_t total = 0;
    // Grouped by (label, site), in order of first appearance.
    std::vector<std::pair<const holder_info*, std::size_t>> groups;
    for (const holder_info& h : live) {
      if (h.counter != counter) {
        continue;
      }
      ++total;
      auto group = std::find_if(groups.begin(), groups.end(),
                                [&](const auto& g) { return same_site(*g.first, h); });
      if (group != groups.end()) {
        ++group->second;
      } else {
        groups.emplace_back(&h, 1);
      }
    }
    for (const auto& [first, count] : groups) {
      out += fmt::format("{}{} has {}/{} users at {} ({}:{})", out.empty() ? "" : "; ",
                         counter_name(counter), count, total, first->label,
                         first->taken_at.file_name(), first->taken_at.line());
    }
  }
  return out;
}

void holder_tracker::forget(const task_struct* t) {
  const lock_guard lock(mutex_);
  entries_.erase(t);
}

void holder_tracker::clear() {
  const lock_guard lock(mutex_);
  entries_.clear();
}

}  // namespace tasklife::detail
