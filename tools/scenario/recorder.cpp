// The trace of one execution (trace.hpp): the recorder, and where a failure goes.
#include <set>

#include "trace.hpp"

namespace tasklife::scenario {

namespace {
constexpr std::uint64_t tick =
    10;  // logical microseconds per item: room for slices around instants
}

unsigned trace_data::add_track(track_kind kind, std::string name, std::string current) {
  tracks.push_back({kind, std::move(name), std::move(current)});
  return static_cast<unsigned>(tracks.size() - 1);
}

const std::string& trace_data::task_name(std::uint64_t id) const {
  static const std::string unknown = "?";
  auto it = task_names.find(id);
  return it == task_names.end() ? unknown : it->second;
}

const std::string& trace_data::task_comm(std::uint64_t id) const {
  auto it = task_comms.find(id);
  return it == task_comms.end() ? task_name(id) : it->second;
}

recorder::recorder(trace_data& out) : out_(out), main_id_(event_thread_id()) {
  const detail::lock_guard lock(mutex_);
  out_.add_track(track_kind::main, "main (setup, teardown)");
  out_.add_track(track_kind::callbacks, "rcu callbacks");
  out_.add_track(track_kind::grace_periods, "grace periods");
  by_thread_[main_id_] = 0;
}

void recorder::push(item it) {
  out_.clock += tick;
  it.time = out_.clock;
  out_.items.push_back(std::move(it));
}

unsigned recorder::add_thread(const std::string& name, const std::string& current) {
  const detail::lock_guard lock(mutex_);
  return out_.add_track(track_kind::thread, name, current);
}

void recorder::bind_thread(unsigned track, std::uint32_t thread_id) {
  const detail::lock_guard lock(mutex_);
  by_thread_[thread_id] = track;
}

void recorder::set_main_is_rcu(bool on) {
  const detail::lock_guard lock(mutex_);
  main_is_rcu_ = on;
}

void recorder::name_task(std::uint64_t id, const std::string& name, const std::string& comm) {
  const detail::lock_guard lock(mutex_);
  out_.task_names[id] = name;
  out_.task_comms[id] = comm;
}

void recorder::step_begin(unsigned track, const std::string& text, const std::string& where) {
  const detail::lock_guard lock(mutex_);
  push({item_kind::step_begin, 0, track, text, where, std::nullopt});
}

void recorder::step_end(unsigned track) {
  const detail::lock_guard lock(mutex_);
  push({item_kind::step_end, 0, track, {}, {}, std::nullopt});
  // A section begins after its lock step and ends after its unlock step, so that
  // steps and sections nest on the thread's track.
  auto it = pending_reads_.find(track);
  if (it != pending_reads_.end()) {
    for (const item_kind k : it->second) {
      push({k,
            0,
            track,
            k == item_kind::read_begin ? "rcu read-side section" : "",
            {},
            std::nullopt});
    }
    pending_reads_.erase(it);
  }
}

void recorder::read_begin(unsigned track) {
  const detail::lock_guard lock(mutex_);
  pending_reads_[track].push_back(item_kind::read_begin);
}

void recorder::read_end(unsigned track) {
  const detail::lock_guard lock(mutex_);
  pending_reads_[track].push_back(item_kind::read_end);
}

void recorder::mark(unsigned track, const std::string& name, const std::string& detail) {
  const detail::lock_guard lock(mutex_);
  push({item_kind::mark, 0, track, name, detail, std::nullopt});
}

void recorder::on_event(const task_event& e) {
  const detail::lock_guard lock(mutex_);
  unsigned track = 1;  // unknown threads: liburcu's callback thread
  auto it = by_thread_.find(e.thread);
  if (it != by_thread_.end()) {
    track = it->second;
    if (track == 0 && main_is_rcu_) {
      track = 1;  // the explorer's own steps: callbacks
    }
  }
  push({item_kind::event, 0, track, {}, {}, e});
}

void recorder::observe(deterministic_rcu* rcu) {
  if (rcu == nullptr) {
    return;
  }
  const std::uint64_t completed = rcu->completed_grace_periods();
  const bool in_progress = rcu->grace_period_in_progress();
  const detail::lock_guard lock(mutex_);
  while (gp_completed_ < completed) {
    if (!gp_open_) {
      push({item_kind::gp_begin,
            0,
            2,
            "grace period " + std::to_string(gp_completed_ + 1),
            {},
            std::nullopt});
    }
    push({item_kind::gp_end, 0, 2, {}, {}, std::nullopt});
    gp_open_ = false;
    ++gp_completed_;
  }
  if (in_progress && !gp_open_) {
    push({item_kind::gp_begin,
          0,
          2,
          "grace period " + std::to_string(gp_completed_ + 1),
          {},
          std::nullopt});
    gp_open_ = true;
  }
}

void place_failure(trace_data& t, const std::string& kind, const std::string& message) {
  std::set<std::uint64_t> freed;
  constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::size_t found = none;
  for (std::size_t i = 0; i < t.items.size() && found == none; ++i) {
    const item& it = t.items[i];
    if (!it.ev) {
      continue;
    }
    const task_event& e = *it.ev;
    if (!is_count(e.usage) || !is_count(e.rcu_users) || freed.count(e.task_id) != 0) {
      found = i;
    } else if (e.kind == task_event_kind::free) {
      freed.insert(e.task_id);
    }
  }
  item f{item_kind::failure, 0, 0, kind, message, std::nullopt};
  std::size_t at = t.items.size();
  if (found != none) {
    at = found + 1;
    f.time = t.items[found].time + 1;  // items are tick apart: still in order
    f.track = t.items[found].track;
  } else {
    t.clock += tick;
    f.time = t.clock;
  }
  t.items.insert(t.items.begin() + static_cast<std::ptrdiff_t>(at), f);
}

}  // namespace tasklife::scenario
