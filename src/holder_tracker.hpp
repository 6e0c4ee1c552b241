// The holder tracker: one kernel's ref_tracker (holders.hpp).
//
// What it is
//   A map from task to the references recorded on it, live and released, with
//   their sites. get() records a new holder; put() retires the most recent live
//   holder of the same counter and role (the lifecycle's references are released
//   only by their owners), or reports the release and refuses it when there is
//   none: "already released" with both sites, or "no tracked reference".
//
// Members
//   get, put, holders, format, forget, clear
//
// Lifetime
//   Owned by its kernel. forget(t) drops a task's entries when it is freed;
//   clear() drops everything at teardown.
//
// Memory ordering
//   Guarded by mutex_. Holder ids come from a relaxed counter: they only need to
//   be unique.
#pragma once

#include <atomic>
#include <cstdint>
#include <source_location>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <tasklife/holders.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife {
struct task_struct;
}  // namespace tasklife

namespace tasklife::detail {

class holder_tracker {
 public:
  void get(const task_struct* t, holder_counter counter, holder_role role, std::string_view label,
           std::source_location where) TASKLIFE_EXCLUDES(mutex_);
  // False (and reported, component "holders") when there is no live holder to
  // release: the caller must not carry out the put. `op` names the release.
  bool put(const task_struct* t, holder_counter counter, holder_role role, std::string_view op,
           std::source_location where) TASKLIFE_EXCLUDES(mutex_);
  std::vector<holder_info> holders(const task_struct* t) const TASKLIFE_EXCLUDES(mutex_);
  // "usage has 1/2 users at get_task_struct (file:line); ..." grouped by site.
  std::string format(const task_struct* t) const TASKLIFE_EXCLUDES(mutex_);
  void forget(const task_struct* t) TASKLIFE_EXCLUDES(mutex_);
  void clear() TASKLIFE_EXCLUDES(mutex_);

 private:
  struct entry {
    holder_info info;
    bool live;
    std::source_location dropped_at;
  };
  mutable mutex mutex_;
  std::unordered_map<const task_struct*, std::vector<entry>> entries_ TASKLIFE_GUARDED_BY(mutex_);
  std::atomic<std::uint64_t> next_id_{1};
};

}  // namespace tasklife::detail
