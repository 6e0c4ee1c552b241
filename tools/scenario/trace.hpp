// tools/scenario/trace.hpp — what one execution of a scenario did, and the ways
// to look at it: a text timeline, Chrome trace-event JSON (Perfetto,
// chrome://tracing), an SVG picture and an ftrace-like text.
//
// What it is
//   trace_data is the record of one execution: its tracks (the main thread that
//   runs setup and teardown, one per simulated thread, the RCU callbacks, the grace
//   periods), and in order the items that happened on them: step begin and end, the
//   task events the kernel recorded (with the counters after each), RCU read-side
//   sections, grace periods, named points, and the failure. Time is logical: one
//   tick per item, in the order things happened (a deterministic execution gives
//   the same trace every time, byte for byte); each event also keeps the kernel's
//   own clock.
//
//   recorder is how an execution fills one in: the interpreter calls it around
//   each step and the kernel's event listener hands it every event; the thread an
//   event came from (task_event::thread) picks its track.
//
// Members
//   track_kind, track, item_kind, item, trace_data, recorder
//   write_text, write_chrome_json, write_svg, write_ftrace (over one trace per variant)
//
// Lifetime
//   Values. A recorder writes into a trace_data it does not own.
//
// Memory ordering
//   recorder's methods take its mutex: events arrive from liburcu's callback
//   thread while a step runs on another.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/history.hpp>
#include <tasklife/thread_safety.hpp>

namespace tasklife::scenario {

// The longest prefix of s of at most n bytes that ends between UTF-8 characters
// (a comm, a label: every output stays valid UTF-8).
std::size_t utf8_prefix(std::string_view s, std::size_t n) noexcept;

enum class track_kind : std::uint8_t { main, thread, callbacks, grace_periods };

struct track {
  track_kind kind = track_kind::main;
  std::string name;
  std::string current;  // the simulated thread's current task (ftrace's TASK-PID), if any
};

enum class item_kind : std::uint8_t {
  step_begin,  // text: the step; detail: file:line
  step_end,
  event,       // ev
  read_begin,  // an RCU read-side section begins (after the lock)
  read_end,    // ... ends (after the unlock)
  gp_begin,    // a grace period starts
  gp_end,      // ... ends
  mark,        // a named point (mark and expect steps); text: its name
  failure,     // text: the failure's kind; detail: its message
};

struct item {
  item_kind kind = item_kind::mark;
  std::uint64_t time = 0;  // logical
  unsigned track = 0;
  std::string text;
  std::string detail;
  std::optional<task_event> ev;
};

struct trace_data {
  std::string title;     // the variant: "pid_lookup_race under rcu_users_inc"
  std::string outcome;   // "clean", "fails: refcount_warning", ...
  std::string schedule;  // the replay string, when the execution came from the explorer
  std::vector<track> tracks;
  std::vector<item> items;
  std::map<std::uint64_t, std::string> task_names;  // task id -> the scenario's name
  std::map<std::uint64_t, std::string> task_comms;  // task id -> its comm, as the kernel has it
  std::uint64_t clock = 0;

  unsigned add_track(track_kind kind, std::string name, std::string current = {});
  const std::string& task_name(std::uint64_t id) const;
  const std::string& task_comm(std::uint64_t id) const;  // the name when unknown
};

// Fills a trace_data from an execution.
class recorder {
 public:
  // The tracks "main", "rcu callbacks" and "grace periods" exist from the start.
  explicit recorder(trace_data& out);

  // A simulated thread's track; `thread_id` is its event_thread_id().
  unsigned add_thread(const std::string& name, const std::string& current);
  void bind_thread(unsigned track, std::uint32_t thread_id);
  // While true, events from the main OS thread are the explorer's RCU steps.
  void set_main_is_rcu(bool on);
  void name_task(std::uint64_t id, const std::string& name, const std::string& comm);

  void step_begin(unsigned track, const std::string& text, const std::string& where);
  void step_end(unsigned track);
  void read_begin(unsigned track);
  void read_end(unsigned track);
  void mark(unsigned track, const std::string& name, const std::string& detail = {});
  void on_event(const task_event& e);
  // Looks at the deterministic backend: records grace periods that began or ended.
  void observe(deterministic_rcu* rcu);
  unsigned main_track() const noexcept { return 0; }
  unsigned callback_track() const noexcept { return 1; }
  unsigned gp_track() const noexcept { return 2; }

 private:
  void push(item it) TASKLIFE_REQUIRES(mutex_);

  detail::mutex mutex_;
  trace_data& out_ TASKLIFE_GUARDED_BY(mutex_);
  std::map<std::uint32_t, unsigned> by_thread_ TASKLIFE_GUARDED_BY(mutex_);
  std::map<unsigned, std::vector<item_kind>> pending_reads_ TASKLIFE_GUARDED_BY(mutex_);
  std::uint32_t main_id_;
  bool main_is_rcu_ TASKLIFE_GUARDED_BY(mutex_) = false;
  bool gp_open_ TASKLIFE_GUARDED_BY(mutex_) = false;
  std::uint64_t gp_completed_ TASKLIFE_GUARDED_BY(mutex_) = 0;
};

// The failure, placed at the first item that shows it (a counter past any count,
// an event on a freed task), else at the end of the execution (teardown's reports).
void place_failure(trace_data& t, const std::string& kind, const std::string& message);

// One trace per variant, side by side.
void write_text(std::ostream& out, const std::vector<const trace_data*>& traces);
void write_chrome_json(std::ostream& out, const std::vector<const trace_data*>& traces);
void write_svg(std::ostream& out, const std::vector<const trace_data*>& traces);
void write_ftrace(std::ostream& out, const std::vector<const trace_data*>& traces);

// A counter value as a count: values past 0xffff are no counts (a saturated
// refcount, the poison of freed memory, a callback head's pointer over rcu_users).
constexpr bool is_count(unsigned v) noexcept {
  return v < 0x10000U;
}

}  // namespace tasklife::scenario
