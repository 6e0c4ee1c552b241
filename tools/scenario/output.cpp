// The ways to look at traces (trace.hpp): text, Chrome trace-event JSON, SVG, ftrace.
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "trace.hpp"

namespace tasklife::scenario {

std::size_t utf8_prefix(std::string_view s, std::size_t n) noexcept {
  if (n >= s.size()) {
    return s.size();
  }
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0U) == 0x80U) {
    --n;  // s[n] continues a character: cut before its first byte
  }
  return n;
}

namespace {

// ---- what the writers share ---------------------------------------------------------------------
enum class flow_kind : std::uint8_t { reference, rcu_callback };

struct flow {
  flow_kind kind;
  std::size_t from;  // item indices
  std::size_t to;
};

// Which counter an event takes a reference on (+1) or drops one from (-1).
int reference_delta(task_event_kind k, bool& usage) {
  switch (k) {
    case task_event_kind::get:
    case task_event_kind::tryget:
      usage = true;
      return 1;
    case task_event_kind::put:
    case task_event_kind::put_many:
      usage = true;
      return -1;
    case task_event_kind::rcu_user_get:
      usage = false;
      return 1;
    case task_event_kind::rcu_user_put:
      usage = false;
      return -1;
    default:
      return 0;
  }
}

// Acquire -> release: a release pairs with the latest open acquire of the same
// counter of the same task on its own track, else with the oldest open one. Only
// references taken after the fork are paired (fork's own shares have no acquire).
// call_rcu -> callback: gp_requested -> gp_elapsed, free_deferred -> free.
std::vector<flow> flows_of(const trace_data& t) {
  std::vector<flow> out;
  std::map<std::pair<std::uint64_t, bool>, std::vector<std::size_t>> open;
  std::map<std::uint64_t, std::size_t> requested, deferred;
  for (std::size_t i = 0; i < t.items.size(); ++i) {
    const item& it = t.items[i];
    if (!it.ev) {
      continue;
    }
    const task_event& e = *it.ev;
    bool usage = false;
    const int d = reference_delta(e.kind, usage);
    auto& list = open[{e.task_id, usage}];
    if (d > 0) {
      list.push_back(i);
    } else if (d < 0 && !list.empty()) {
      auto same = std::find_if(list.rbegin(), list.rend(),
                               [&](std::size_t a) { return t.items[a].track == it.track; });
      const auto pick = same != list.rend() ? std::next(same).base() : list.begin();
      out.push_back({flow_kind::reference, *pick, i});
      list.erase(pick);
    }
    if (e.kind == task_event_kind::gp_requested) {
      requested[e.task_id] = i;
    } else if (e.kind == task_event_kind::gp_elapsed && requested.count(e.task_id) != 0) {
      out.push_back({flow_kind::rcu_callback, requested[e.task_id], i});
      requested.erase(e.task_id);
    } else if (e.kind == task_event_kind::free_deferred) {
      deferred[e.task_id] = i;
    } else if (e.kind == task_event_kind::free && deferred.count(e.task_id) != 0) {
      out.push_back({flow_kind::rcu_callback, deferred[e.task_id], i});
      deferred.erase(e.task_id);
    }
  }
  return out;
}

struct span {
  std::uint64_t begin, end;
  std::string name;
};

// Grace periods: the backend's own when it was observed (deterministic), else
// each task's wait from call_rcu to its callback (liburcu's are not visible).
std::vector<span> grace_periods(const trace_data& t, bool& derived) {
  std::vector<span> out;
  constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::size_t open = none;  // the item that began the grace period in progress
  for (std::size_t i = 0; i < t.items.size(); ++i) {
    const item& it = t.items[i];
    if (it.kind == item_kind::gp_begin) {
      open = i;
    } else if (it.kind == item_kind::gp_end && open != none) {
      out.push_back({t.items[open].time, it.time, t.items[open].text});
      open = none;
    }
  }
  if (open != none) {
    out.push_back({t.items[open].time, t.clock + 1, t.items[open].text + " (still going)"});
  }
  derived = out.empty();
  if (derived) {
    for (const flow& f : flows_of(t)) {
      if (f.kind == flow_kind::rcu_callback &&
          t.items[f.from].ev->kind == task_event_kind::gp_requested) {
        out.push_back({t.items[f.from].time, t.items[f.to].time,
                       "grace period for " + t.task_name(t.items[f.from].ev->task_id)});
      }
    }
  }
  return out;
}

std::string counter_text(unsigned v) {
  if (is_count(v)) {
    return std::to_string(v);
  }
  if (v == 0x6b6b6b6bU) {
    return "0x6b6b6b6b (poison: freed)";
  }
  if (v >= 0xc0000000U / 2 && v <= 0xc0000000U + 0x40000000U / 2) {
    return fmt::format("{:#x} (saturated)", v);
  }
  return fmt::format("{:#x} (not a count)", v);
}

std::string event_line(const trace_data& t, const task_event& e) {
  return fmt::format("{} (pid {}) {}  usage={} rcu_users={}{}{}", t.task_name(e.task_id), e.pid,
                     to_string(e.kind), counter_text(e.usage), counter_text(e.rcu_users),
                     e.detail.empty() ? "" : "  ", e.detail);
}

std::string xml(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        // Control characters are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t') {
          out += c;
        }
    }
  }
  return out;
}

// At most n bytes of s, "~" marking a cut, which falls between UTF-8 characters.
std::string clip(std::string_view s, std::size_t n) {
  if (s.size() <= n) {
    return std::string(s);
  }
  return std::string(s.substr(0, utf8_prefix(s, n > 1 ? n - 1 : 0))) + "~";
}

// A comm in an ftrace line: whitespace would split the line's fields, so it
// becomes '_' (trace-cmd prints a comm's bytes as they are).
std::string ftrace_comm(std::string_view comm) {
  std::string out(comm.empty() ? std::string_view("<none>") : comm);
  std::replace_if(
      out.begin(), out.end(),
      [](char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
      },
      '_');
  return out;
}

}  // namespace

// ---- text --------------------------------------------------------------------------------------
void write_text(std::ostream& out, const std::vector<const trace_data*>& traces) {
  for (const trace_data* tp : traces) {
    const trace_data& t = *tp;
    out << fmt::format("\n== {}: {} ==\n", t.title, t.outcome);
    if (!t.schedule.empty()) {
      out << fmt::format("   schedule: {}\n", t.schedule);
    }
    std::size_t w = 4;
    for (const track& tr : t.tracks) {
      w = std::max(w, tr.name.size() > 24 ? std::size_t{24} : tr.name.size());
    }
    std::map<unsigned, int> depth;
    for (const item& it : t.items) {
      const std::string who = clip(t.tracks[it.track].name, w);
      const std::string indent(static_cast<std::size_t>(2 * depth[it.track]), ' ');
      switch (it.kind) {
        case item_kind::step_begin:
          out << fmt::format("{:>7}  {:<{}}  {}{}\n", it.time, who, w, indent, it.text);
          ++depth[it.track];
          break;
        case item_kind::step_end:
          --depth[it.track];
          break;
        case item_kind::event:
          out << fmt::format("{:>7}  {:<{}}  {}  {}   -- {}\n", it.time, who, w, indent,
                             event_line(t, *it.ev), explain(it.ev->kind));
          break;
        case item_kind::read_begin:
          out << fmt::format("{:>7}  {:<{}}  {}[ read-side section begins\n", it.time, who, w,
                             indent);
          ++depth[it.track];
          break;
        case item_kind::read_end:
          --depth[it.track];
          out << fmt::format("{:>7}  {:<{}}  {}] read-side section ends\n", it.time, who, w,
                             std::string(static_cast<std::size_t>(2 * depth[it.track]), ' '));
          break;
        case item_kind::gp_begin:
          out << fmt::format("{:>7}  {:<{}}  {} starts\n", it.time, who, w, it.text);
          break;
        case item_kind::gp_end:
          out << fmt::format("{:>7}  {:<{}}  grace period ends\n", it.time, who, w);
          break;
        case item_kind::mark:
          out << fmt::format("{:>7}  {:<{}}  {}== point '{}'{}\n", it.time, who, w, indent, it.text,
                             it.detail.empty() ? "" : " (" + it.detail + ")");
          break;
        case item_kind::failure:
          out << fmt::format("{:>7}  {:<{}}  !! FAILURE {}: {}\n", it.time, who, w, it.text,
                             it.detail);
          break;
      }
    }
  }
}

// ---- Chrome trace-event JSON
// -----------------------------------------------------------------------
void write_chrome_json(std::ostream& out, const std::vector<const trace_data*>& traces) {
  using json = nlohmann::ordered_json;
  json events = json::array();
  std::uint64_t next_flow = 1;
  for (std::size_t p = 0; p < traces.size(); ++p) {
    const trace_data& t = *traces[p];
    const int pid = static_cast<int>(p) + 1;
    auto base = [&](std::string_view ph, std::string_view name, std::string_view cat,
                    std::uint64_t ts, unsigned track) {
      json e;
      e["name"] = name;
      e["cat"] = cat;
      e["ph"] = ph;
      e["ts"] = ts;
      e["pid"] = pid;
      e["tid"] = track + 1;
      return e;
    };
    json pn = base("M", "process_name", "__metadata", 0, 0);
    pn["args"] = {{"name", fmt::format("{} — {}", t.title, t.outcome)}};
    events.push_back(pn);
    json ps = base("M", "process_sort_index", "__metadata", 0, 0);
    ps["args"] = {{"sort_index", p}};
    events.push_back(ps);
    for (unsigned i = 0; i < t.tracks.size(); ++i) {
      json tn = base("M", "thread_name", "__metadata", 0, i);
      tn["args"] = {{"name", t.tracks[i].name}};
      events.push_back(tn);
      json ts = base("M", "thread_sort_index", "__metadata", 0, i);
      ts["args"] = {{"sort_index", i == 0 ? 0 : (i <= 2 ? 100 + i : i)}};
      events.push_back(ts);
    }
    std::map<unsigned, std::vector<std::string>> open;  // B names per track
    for (const item& it : t.items) {
      switch (it.kind) {
        case item_kind::step_begin: {
          json e = base("B", it.text, "step", it.time, it.track);
          e["args"] = {{"where", it.detail}};
          events.push_back(e);
          open[it.track].push_back(it.text);
          break;
        }
        case item_kind::read_begin:
          events.push_back(base("B", "rcu read-side section", "rcu", it.time, it.track));
          open[it.track].push_back("rcu read-side section");
          break;
        case item_kind::step_end:
        case item_kind::read_end: {
          auto& names = open[it.track];
          const std::string name = names.empty() ? std::string("?") : names.back();
          if (!names.empty()) {
            names.pop_back();
          }
          events.push_back(
              base("E", name, it.kind == item_kind::step_end ? "step" : "rcu", it.time, it.track));
          break;
        }
        case item_kind::event: {
          const task_event& e = *it.ev;
          if (t.tracks[it.track].kind == track_kind::callbacks) {
            // A slice of its own, for the instant and the flows to bind to.
            json x = base("X", fmt::format("callback: {}", to_string(e.kind)), "rcu", it.time - 2,
                          it.track);
            x["dur"] = 4;
            events.push_back(x);
          }
          json i = base("i", to_string(e.kind), "task", it.time, it.track);
          i["s"] = "t";
          i["args"] = {{"task", t.task_name(e.task_id)},
                       {"pid", e.pid},
                       {"usage", counter_text(e.usage)},
                       {"rcu_users", counter_text(e.rcu_users)},
                       {"detail", std::string(e.detail)},
                       {"what the kernel does", std::string(explain(e.kind))},
                       {"kernel time (ns)", e.time_ns}};
          events.push_back(i);
          for (const auto& [name, v] : {std::pair<std::string_view, unsigned>{"usage", e.usage},
                                        {"rcu_users", e.rcu_users}}) {
            json c = base("C", fmt::format("{} {}", t.task_name(e.task_id), name), "counter",
                          it.time, 0);
            // Values that are no counts (saturated, poison) are drawn as -1.
            c["args"] = {{"value", is_count(v) ? static_cast<long long>(v) : -1LL}};
            events.push_back(c);
          }
          break;
        }
        case item_kind::gp_begin:
        case item_kind::gp_end:
          break;  // below, as complete slices
        case item_kind::mark: {
          json m = base("i", it.text, "mark", it.time, it.track);
          m["s"] = "t";
          events.push_back(m);
          break;
        }
        case item_kind::failure: {
          json f = base("i", "FAILURE: " + it.text, "failure", it.time, it.track);
          f["s"] = "p";
          f["args"] = {{"message", it.detail}, {"schedule", t.schedule}};
          events.push_back(f);
          break;
        }
      }
    }
    bool derived = false;
    std::uint64_t async_id = 1;
    for (const span& g : grace_periods(t, derived)) {
      if (derived) {
        // liburcu's waits may overlap: async slices.
        json b = base("b", g.name, "rcu", g.begin, 2);
        b["id"] = async_id;
        json e = base("e", g.name, "rcu", g.end, 2);
        e["id"] = async_id++;
        events.push_back(b);
        events.push_back(e);
      } else {
        json x = base("X", g.name, "rcu", g.begin, 2);
        x["dur"] = g.end - g.begin;
        events.push_back(x);
      }
    }
    for (const flow& f : flows_of(t)) {
      const item& a = t.items[f.from];
      const item& b = t.items[f.to];
      const std::string name =
          f.kind == flow_kind::reference
              ? fmt::format("reference on {}", t.task_name(a.ev->task_id))
              : fmt::format("call_rcu -> callback ({})", t.task_name(a.ev->task_id));
      const std::string_view cat = f.kind == flow_kind::reference ? "reference" : "rcu";
      json s = base("s", name, cat, a.time, a.track);
      s["id"] = next_flow;
      json e = base("f", name, cat, b.time, b.track);
      e["id"] = next_flow++;
      e["bp"] = "e";
      events.push_back(s);
      events.push_back(e);
    }
  }
  json doc;
  doc["traceEvents"] = events;
  doc["displayTimeUnit"] = "ms";
  doc["otherData"] = {{"generator", "tasklife"},
                      {"time",
                       "logical: 10 us per recorded step, event or point, in the order "
                       "they happened"}};
  out << doc.dump(1) << "\n";
}

// ---- SVG: time runs down, a column per thread and per task's counters -------------------------
void write_svg(std::ostream& out, const std::vector<const trace_data*>& traces) {
  constexpr int row = 15, top = 84, col_w = 230, counter_w = 64, gap = 30, time_w = 44;
  // Renderers refuse pictures past 32767 px (rsvg-convert, cairo): a panel draws
  // at most max_rows rows and max_counters counter columns, says what it left out,
  // and the whole picture is scaled down to fit if it is still too large.
  constexpr int max_rows = 1500, max_px = 32000;
  constexpr std::size_t max_counters = 32;
  struct panel {
    const trace_data* t;
    std::vector<unsigned> columns;      // tracks shown (gp track: bands instead)
    std::vector<std::uint64_t> tasks;   // counter columns
    std::map<std::uint64_t, int> y_of;  // time -> y
    int rows = 0;                       // drawn
    int width = 0;
    int x0 = 0;
    int elided_rows = 0;
    std::size_t elided_tasks = 0;
  };
  std::vector<panel> panels;
  int x = 10;
  int height = 0;
  for (const trace_data* t : traces) {
    panel p{t, {}, {}, {}, 0, 0, x};
    std::set<unsigned> used;
    std::set<std::uint64_t> tasks;
    for (const item& it : t->items) {
      used.insert(it.track);
      if (it.ev && tasks.insert(it.ev->task_id).second) {
        if (p.tasks.size() < max_counters) {
          p.tasks.push_back(it.ev->task_id);
        } else {
          ++p.elided_tasks;
        }
      }
      const bool has_row = it.kind == item_kind::step_begin || it.kind == item_kind::event ||
                           it.kind == item_kind::mark || it.kind == item_kind::failure ||
                           it.kind == item_kind::gp_begin || it.kind == item_kind::gp_end;
      if (p.rows >= max_rows) {
        p.elided_rows += has_row ? 1 : 0;
        continue;  // not drawn: y_of has no row for it
      }
      p.y_of[it.time] = top + (p.rows + 1) * row;
      if (has_row) {
        ++p.rows;
      }
    }
    for (unsigned i = 0; i < t->tracks.size(); ++i) {
      if (used.count(i) != 0 && t->tracks[i].kind != track_kind::grace_periods) {
        p.columns.push_back(i);
      }
    }
    p.width = time_w + static_cast<int>(p.columns.size()) * col_w +
              static_cast<int>(p.tasks.size()) * counter_w;
    x += p.width + gap;
    height = std::max(height, top + (p.rows + 1) * row + 40);
    panels.push_back(std::move(p));
  }
  const int width = x;
  height += 30;
  const double scale = std::min(1.0, static_cast<double>(max_px) / std::max(width, height));
  out << fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"DejaVu Sans Mono, monospace\" font-size=\"10\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      static_cast<int>(width * scale), static_cast<int>(height * scale), width, height);
  for (const panel& p : panels) {
    const trace_data& t = *p.t;
    const bool failed = t.outcome.rfind("fails", 0) == 0;
    auto y_at = [&](std::uint64_t time) {
      auto it = p.y_of.lower_bound(time);
      return it == p.y_of.end() ? top + (p.rows + 1) * row : it->second;
    };
    auto col_x = [&](unsigned track) {
      const auto it = std::find(p.columns.begin(), p.columns.end(), track);
      return p.x0 + time_w + static_cast<int>(it - p.columns.begin()) * col_w;
    };
    const int bottom = top + (p.rows + 1) * row;
    // Whether an item is past the rows drawn.
    auto elided = [&](std::uint64_t time) { return p.y_of.lower_bound(time) == p.y_of.end(); };
    out << fmt::format(
        "<text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>\n"
        "<text x=\"{}\" y=\"34\" font-size=\"12\" fill=\"{}\">{}</text>\n",
        p.x0, xml(t.title), p.x0, failed ? "#c0141e" : "#1a7f37", xml(t.outcome));
    if (p.elided_rows > 0 || p.elided_tasks > 0) {
      out << fmt::format(
          "<text x=\"{}\" y=\"48\" fill=\"#c0141e\">not drawn: {} later rows, the counters of "
          "{} more tasks (the text, JSON and ftrace outputs have them all)</text>\n",
          p.x0, p.elided_rows, p.elided_tasks);
    }
    // Grace periods: bands across the panel.
    bool derived = false;
    for (const span& g : grace_periods(t, derived)) {
      const int y1 = y_at(g.begin);
      const int y2 = std::max(y_at(g.end), y1 + 3);
      out << fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#8c8cff\" "
          "fill-opacity=\"{}\"><title>{}</title></rect>\n"
          "<text x=\"{}\" y=\"{}\" fill=\"#4b4bb4\" font-size=\"9\">{}</text>\n",
          p.x0, y1, p.width, y2 - y1, derived ? "0.08" : "0.16", xml(g.name), p.x0 + 2, y1 + 9,
          xml(clip(g.name, 8)));
    }
    // Column headers and lanes.
    for (const unsigned c : p.columns) {
      const int cx = col_x(c);
      out << fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ddd\"/>\n"
          "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>\n",
          cx, top - 14, col_w - 6, bottom - top + 18, cx + 3, top - 4,
          xml(clip(t.tracks[c].name +
                       (t.tracks[c].current.empty() ? "" : " (as " + t.tracks[c].current + ")"),
                   36)));
    }
    const int cx0 = p.x0 + time_w + static_cast<int>(p.columns.size()) * col_w;
    for (std::size_t i = 0; i < p.tasks.size(); ++i) {
      const int cx = cx0 + static_cast<int>(i) * counter_w;
      out << fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\n"
          "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>\n"
          "<text x=\"{}\" y=\"{}\" font-size=\"8\"><tspan fill=\"#1f5fbf\">usage</tspan> "
          "<tspan fill=\"#d9730d\">rcu</tspan></text>\n",
          cx, top - 14, counter_w - 4, bottom - top + 18, cx + 2, top - 26,
          xml(clip(t.task_name(p.tasks[i]), 10)), cx + 2, top - 4);
    }
    // Read-side sections: a green bar at the lane's left edge; steps: boxes, drawn
    // below everything else of the panel.
    std::ostringstream front;
    std::ostream& back = out;
    std::map<unsigned, std::vector<std::uint64_t>> opened_read, opened_step;
    std::map<unsigned, std::vector<std::string>> step_text;
    for (const item& it : t.items) {
      if (elided(it.time) && it.kind != item_kind::failure) {
        continue;  // the failure is drawn at the bottom
      }
      const int y = y_at(it.time);
      const int cx = it.track < t.tracks.size() && std::find(p.columns.begin(), p.columns.end(),
                                                             it.track) != p.columns.end()
                         ? col_x(it.track)
                         : p.x0 + time_w;
      switch (it.kind) {
        case item_kind::read_begin:
          opened_read[it.track].push_back(it.time);
          break;
        case item_kind::read_end:
          if (!opened_read[it.track].empty()) {
            const int y1 = y_at(opened_read[it.track].back());
            const int depth = static_cast<int>(opened_read[it.track].size());
            opened_read[it.track].pop_back();
            front << fmt::format(
                "<rect x=\"{}\" y=\"{}\" width=\"4\" height=\"{}\" fill=\"#2da44e\">"
                "<title>RCU read-side section</title></rect>\n",
                cx + 1 + 5 * (depth - 1), y1 - 10, std::max(y - y1, 4));
          }
          break;
        case item_kind::step_begin:
          opened_step[it.track].push_back(it.time);
          step_text[it.track].push_back(it.text);
          front << fmt::format(
              "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}<title>{} ({})</title></text>\n"
              "<text x=\"{}\" y=\"{}\" fill=\"#999\" font-size=\"8\">{}</text>\n",
              cx + 12, y, xml(clip(it.text, 34)), xml(it.text), xml(it.detail), p.x0 + 2, y,
              it.time);
          break;
        case item_kind::step_end:
          if (!opened_step[it.track].empty()) {
            const int y1 = y_at(opened_step[it.track].back());
            opened_step[it.track].pop_back();
            step_text[it.track].pop_back();
            back << fmt::format(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"#e8eef8\" "
                "fill-opacity=\"0.5\" stroke=\"#7a9cc6\"/>\n",
                cx + 9, y1 - 11, col_w - 18, std::max(y - y1, row - 2));
          }
          break;
        case item_kind::event: {
          const task_event& e = *it.ev;
          const bool bad = !is_count(e.usage) || !is_count(e.rcu_users);
          front << fmt::format(
              "<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{}\"/>\n"
              "<text x=\"{}\" y=\"{}\" fill=\"{}\">{}<title>{} -- {}</title></text>\n",
              cx + 16, y - 3, bad ? "#c0141e" : "#555", cx + 22, y, bad ? "#c0141e" : "#333",
              xml(clip(fmt::format("{} {} {}/{}", t.task_name(e.task_id), to_string(e.kind),
                                   is_count(e.usage) ? std::to_string(e.usage) : "!",
                                   is_count(e.rcu_users) ? std::to_string(e.rcu_users) : "!"),
                       33)),
              xml(event_line(t, e)), xml(explain(e.kind)));
          if (!is_count(e.usage) || !is_count(e.rcu_users)) {
            // counters drawn below
          }
          break;
        }
        case item_kind::gp_begin:
        case item_kind::gp_end:
          break;
        case item_kind::mark:
          front << fmt::format(
              "<text x=\"{}\" y=\"{}\" fill=\"#6f42c1\" font-style=\"italic\">&#9670; {}</text>\n",
              cx + 12, y, xml(clip(it.text, 32)));
          break;
        case item_kind::failure:
          front << fmt::format(
              "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#c0141e\" "
              "stroke-width=\"2\"/>\n"
              "<text x=\"{}\" y=\"{}\" fill=\"#c0141e\" font-weight=\"bold\">FAILURE {}: "
              "{}<title>{}</title></text>\n",
              p.x0, y - 4, p.x0 + p.width, y - 4, p.x0 + time_w, y + 9, xml(it.text),
              xml(clip(it.detail, static_cast<std::size_t>(p.width / 6) - 20)), xml(it.detail));
          break;
      }
    }
    out << front.str();
    // The counters: step lines, value to the right, time down.
    for (std::size_t i = 0; i < p.tasks.size(); ++i) {
      const int cx = cx0 + static_cast<int>(i) * counter_w;
      unsigned max = 3;
      for (const item& it : t.items) {
        if (it.ev && it.ev->task_id == p.tasks[i]) {
          max = std::max({max, is_count(it.ev->usage) ? it.ev->usage : 0U,
                          is_count(it.ev->rcu_users) ? it.ev->rcu_users : 0U});
        }
      }
      const double unit = static_cast<double>(counter_w - 16) / max;
      for (const bool usage : {true, false}) {
        std::string points;
        double last_x = -1;
        int last_y = 0;
        for (const item& it : t.items) {
          if (!it.ev || it.ev->task_id != p.tasks[i] || elided(it.time)) {
            continue;
          }
          const unsigned v = usage ? it.ev->usage : it.ev->rcu_users;
          const double vx = is_count(v) ? cx + 4 + (usage ? 0 : 2) + v * unit : cx + counter_w - 8;
          const int y = y_at(it.time) - 3;
          if (last_x >= 0) {
            points += fmt::format(" {:.1f},{}", last_x, y);
          }
          points += fmt::format(" {:.1f},{}", vx, y);
          last_x = vx;
          last_y = y;
          if (!is_count(v)) {
            out << fmt::format(
                "<text x=\"{}\" y=\"{}\" fill=\"#c0141e\" font-size=\"9\">!</text>\n",
                cx + counter_w - 12, y + 3);
          }
        }
        if (last_x >= 0) {
          points += fmt::format(" {:.1f},{}", last_x, std::max(last_y, bottom));
          out << fmt::format(
              "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"/>\n",
              points, usage ? "#1f5fbf" : "#d9730d");
        }
      }
    }
    if (!t.schedule.empty()) {
      out << fmt::format("<text x=\"{}\" y=\"{}\" fill=\"#666\">schedule: {}</text>\n", p.x0,
                         bottom + 28, xml(t.schedule));
    }
  }
  out << fmt::format(
      "<text x=\"10\" y=\"{}\" fill=\"#555\">time runs down (logical: one row per step, event or "
      "point); boxes: steps; green bars: RCU read-side sections; blue bands: grace periods; "
      "right: usage (blue) and rcu_users (orange) of each task; ! : not a count "
      "(saturated, poisoned); red line: the failure</text>\n</svg>\n",
      height - 10);
}

// ---- ftrace-like text --------------------------------------------------------------------------
void write_ftrace(std::ostream& out, const std::vector<const trace_data*>& traces) {
  for (const trace_data* tp : traces) {
    const trace_data& t = *tp;
    out << fmt::format("# tracer: nop\n# tasklife: {} ({})\n#\n", t.title, t.outcome);
    out << "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
           "#              | |         |   |||||     |         |\n";
    // The TASK column is the running task's comm-pid, as trace-cmd prints it; a
    // thread that runs as no task shows its own name and pid 0.
    std::map<std::string, std::pair<std::string, pid_t>> task_of;  // scenario name -> comm, pid
    for (const item& it : t.items) {
      if (it.ev && it.ev->kind == task_event_kind::fork) {
        task_of[t.task_name(it.ev->task_id)] = {t.task_comm(it.ev->task_id), it.ev->pid};
      }
    }
    for (const item& it : t.items) {
      const track& tr = t.tracks[it.track];
      auto cur = task_of.find(tr.current);
      const bool as_task = !tr.current.empty() && cur != task_of.end();
      const std::string comm = ftrace_comm(as_task ? cur->second.first : tr.name);
      const pid_t pid = as_task ? cur->second.second : 0;
      const std::string head = fmt::format("{:>16}-{:<7} [000] ..... {:>12.6f}: ", clip(comm, 16),
                                           pid, static_cast<double>(it.time) / 1e6);
      if (it.kind == item_kind::step_begin) {
        out << head << "tracing_mark_write: " << it.text << "\n";
      } else if (it.kind == item_kind::mark) {
        out << head << "tracing_mark_write: point " << it.text << "\n";
      } else if (it.kind == item_kind::failure) {
        out << head << "tracing_mark_write: FAILURE " << it.text << ": " << it.detail << "\n";
      } else if (it.kind == item_kind::gp_begin || it.kind == item_kind::gp_end) {
        out << head
            << fmt::format("rcu_grace_period: rcuname=tasklife gp_seq={} {}\n", it.time,
                           it.kind == item_kind::gp_begin ? "start" : "end");
      } else if (it.ev) {
        const task_event& e = *it.ev;
        const std::string name = ftrace_comm(t.task_comm(e.task_id));
        switch (e.kind) {
          case task_event_kind::fork:
            out << head
                << fmt::format("task_newtask: pid={} comm={} clone_flags=0 oom_score_adj=0\n",
                               e.pid, name);
            break;
          case task_event_kind::exit:
            out << head
                << fmt::format("sched_process_exit: comm={} pid={} prio=120\n", name, e.pid);
            break;
          case task_event_kind::free:
            out << head
                << fmt::format("sched_process_free: comm={} pid={} prio=120\n", name, e.pid);
            break;
          default:
            out << head
                << fmt::format("tasklife_{}: comm={} pid={} usage={} rcu_users={}{}{}\n",
                               to_string(e.kind), name, e.pid, counter_text(e.usage),
                               counter_text(e.rcu_users),
                               e.detail.empty() ? "" : " detail=", e.detail);
        }
      }
    }
    out << "\n";
  }
}

}  // namespace tasklife::scenario
