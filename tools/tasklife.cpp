// tasklife: the command. Scenario files (docs/scenarios.md) run once, explored
// over every interleaving, or replayed from a schedule string, under one or
// several kernel profiles side by side; what happened comes out as a text
// timeline, Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing), an SVG
// picture and an ftrace-like text.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#include "scenario/scenario.hpp"

namespace {

using namespace tasklife;
namespace sc = tasklife::scenario;

struct outputs {
  std::string text;  // "-": stdout
  std::string json;
  std::string svg;
  std::string ftrace;
  std::string dir;
  bool quiet = false;
};

void add_outputs(CLI::App* cmd, outputs& o) {
  cmd->add_option("--json", o.json, "write the Chrome trace-event JSON here (ui.perfetto.dev)");
  cmd->add_option("--svg", o.svg, "write the SVG timeline here");
  cmd->add_option("--ftrace", o.ftrace, "write an ftrace-like text (trace-cmd report) here");
  cmd->add_option("--text", o.text, "write the text timeline here ('-': stdout, the default)");
  cmd->add_option("--out", o.dir,
                  "write every output into this directory: NAME.json, NAME.svg, NAME.txt, "
                  "NAME.ftrace");
  cmd->add_flag("-q,--quiet", o.quiet, "no timeline on stdout (summaries only)");
}

struct selection {
  std::vector<std::string> profiles;
  std::vector<std::string> final_put;
};

void add_selection(CLI::App* cmd, selection& s) {
  std::vector<std::string> names;
  for (const profile_info& p : semantics_profiles) {
    names.emplace_back(p.name);
  }
  cmd->add_option("-p,--profile", s.profiles,
                  "run under this profile instead of the scenario's (repeatable)")
      ->check(CLI::IsMember(names));
  cmd->add_option("--final-put", s.final_put, "final-put mode instead of the scenario's")
      ->check(CLI::IsMember({"immediate", "deferred"}));
}

std::vector<sc::variant> chosen(sc::scenario& s, const selection& sel) {
  if (!sel.profiles.empty()) {
    s.profiles.clear();
    for (const std::string& n : sel.profiles) {
      for (const profile_info& p : semantics_profiles) {
        if (p.name == n) {
          s.profiles.push_back(p.profile);
        }
      }
    }
  }
  if (!sel.final_put.empty()) {
    s.final_put.clear();
    for (const std::string& f : sel.final_put) {
      s.final_put.push_back(f == "deferred" ? final_put_mode::deferred : final_put_mode::immediate);
    }
  }
  return sc::variants(s);
}

// Writes a file, or says why not.
bool write_file(const std::string& path, const std::string& what,
                const std::function<void(std::ostream&)>& fill) {
  std::ofstream f(path, std::ios::binary);
  if (!f) {
    fmt::print(stderr, "tasklife: cannot write {} to {}\n", what, path);
    return false;
  }
  fill(f);
  f.close();
  if (!f) {
    fmt::print(stderr, "tasklife: writing {} to {} failed\n", what, path);
    return false;
  }
  return true;
}

bool write_outputs(const sc::scenario& s, const std::vector<sc::variant_result>& results,
                   const outputs& o) {
  std::vector<const sc::trace_data*> traces;
  for (const sc::variant_result& r : results) {
    traces.push_back(&r.trace);
  }
  outputs w = o;
  bool ok = true;
  if (!o.dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.dir, ec);
    if (ec) {
      fmt::print(stderr, "tasklife: cannot create the directory {}: {}\n", o.dir, ec.message());
      ok = false;
    }
    const std::string base = (std::filesystem::path(o.dir) / s.name).string();
    w.json = w.json.empty() ? base + ".json" : w.json;
    w.svg = w.svg.empty() ? base + ".svg" : w.svg;
    w.ftrace = w.ftrace.empty() ? base + ".ftrace" : w.ftrace;
    w.text = w.text.empty() ? base + ".txt" : w.text;
  }
  if (!o.quiet && (w.text.empty() || w.text == "-" || !o.dir.empty())) {
    sc::write_text(std::cout, traces);
  }
  // Each output: its path, what it is (the error names it), what the success line
  // says, and its writer. Only what was written is reported as written.
  struct output_file {
    const std::string& path;
    const char* what;
    const char* wrote;
    void (*write)(std::ostream&, const std::vector<const sc::trace_data*>&);
  };
  const output_file files[] = {
      {w.text, "the text timeline", "text timeline", &sc::write_text},
      {w.json, "the JSON trace",
       "JSON trace (open it at https://ui.perfetto.dev or chrome://tracing)",
       &sc::write_chrome_json},
      {w.svg, "the SVG timeline", "SVG timeline", &sc::write_svg},
      {w.ftrace, "the ftrace text", "ftrace text", &sc::write_ftrace},
  };
  std::vector<const output_file*> written;
  for (const output_file& f : files) {
    if (f.path.empty() || f.path == "-") {
      continue;
    }
    if (write_file(f.path, f.what, [&](std::ostream& out) { f.write(out, traces); })) {
      written.push_back(&f);
    } else {
      ok = false;
    }
  }
  for (const output_file* f : written) {
    fmt::print("wrote {}: {}\n", f->wrote, f->path);
  }
  return ok;
}

void print_header(const sc::scenario& s) {
  fmt::print("tasklife {}: {} — {}\n", TASKLIFE_VERSION, s.name, s.title);
  if (!s.commit.empty()) {
    fmt::print("  kernel: {}\n", s.commit);
  }
}

int conclude(const sc::scenario& s, sc::mode m, const std::vector<sc::variant_result>& results) {
  const std::vector<std::string> bad = sc::check(s, m, results);
  for (const std::string& b : bad) {
    fmt::print("EXPECTATION FAILED: {}\n", b);
  }
  if (bad.empty()) {
    fmt::print("every {} expectation holds\n", sc::to_string(m));
  }
  return bad.empty() ? 0 : 1;
}

void summary(const sc::scenario& s, const sc::variant_result& r) {
  std::string line = fmt::format("  {:<44} {}", r.v.label, r.trace.outcome);
  if (r.report) {
    line += fmt::format("  ({})", r.report->summary());
  }
  fmt::print("{}\n", line);
  if (r.failure) {
    fmt::print("      {}\n", r.failure->message);
    if (!r.failure->schedule.empty()) {
      fmt::print("      replay: tasklife replay {} '{}' -p {} --final-put {}\n",
                 s.file == "scenarios/" + s.name + ".toml" ? s.name : s.file, r.failure->schedule,
                 to_string(r.v.profile),
                 r.v.final_put == final_put_mode::deferred ? "deferred" : "immediate");
    }
  }
  for (const std::string& p : r.point_failures) {
    fmt::print("      point: {}\n", p);
  }
}

// A progress line on a terminal for long explorations.
class progress {
 public:
  explicit progress(bool on) : on_(on && ::isatty(STDERR_FILENO) != 0) {}
  ~progress() { stop(); }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;
  void start(const std::string& label) {
    stop();
    if (!on_) {
      return;
    }
    count_.store(0, std::memory_order_relaxed);
    label_ = label;
    done_ = false;
    const auto begin = std::chrono::steady_clock::now();
    worker_ = std::thread([this, begin] {
      std::unique_lock lock(mutex_);
      while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return done_; })) {
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
        const auto n = count_.load(std::memory_order_relaxed);
        fmt::print(stderr, "\r  {}: {} executions, {:.0f}/s, {:.1f} s   ", label_, n,
                   secs > 0 ? static_cast<double>(n) / secs : 0.0, secs);
        std::fflush(stderr);
      }
      fmt::print(stderr, "\r{:<78}\r", "");
    });
  }
  void stop() {
    if (worker_.joinable()) {
      {
        const std::lock_guard lock(mutex_);
        done_ = true;
      }
      cv_.notify_all();
      worker_.join();
    }
  }
  // Relaxed: a statistic for the progress line.
  std::atomic<std::uint64_t>& counter() { return count_; }

 private:
  bool on_;
  std::atomic<std::uint64_t> count_{0};
  std::string label_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread worker_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tasklife: how the Linux kernel keeps task_struct alive, simulated in user space.\n"
      "Runs scenario files (docs/scenarios.md) once, explores every interleaving of their\n"
      "threads, or replays a schedule, under each kernel profile, and writes what happened as\n"
      "a text timeline, Chrome trace-event JSON (ui.perfetto.dev), SVG and ftrace text.",
      "tasklife"};
  app.set_version_flag("--version", std::string("tasklife ") + TASKLIFE_VERSION);
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  tasklife list\n"
      "  tasklife explore pid_lookup_race --out out/    # JSON, SVG, text, ftrace in out/\n"
      "  tasklife run scenarios/usage_holder.toml --native\n"
      "  tasklife replay pid_lookup_race 'tl1-...' -p rcu_users_inc --json trace.json");

  std::string name;
  auto* list = app.add_subcommand("list", "the built-in scenarios, one line each");
  auto* show = app.add_subcommand("show", "a scenario's text (a built-in's name or a file)");
  show->add_option("scenario", name, "built-in name or file")->required();

  outputs out;
  selection sel;
  auto* run = app.add_subcommand("run", "run a scenario once under each of its profiles");
  run->add_option("scenario", name, "built-in name or file")->required();
  bool native = false;
  run->add_flag("--native", native,
                "on liburcu's real grace periods (default: the deterministic RCU backend)");
  add_selection(run, sel);
  add_outputs(run, out);

  auto* exp = app.add_subcommand("explore", "explore every interleaving of a scenario's threads");
  exp->add_option("scenario", name, "built-in name or file")->required();
  add_selection(exp, sel);
  add_outputs(exp, out);
  std::string strategy = "dfs";
  std::optional<int> bound;
  std::optional<std::uint64_t> budget;
  double seconds = 60;
  std::uint64_t seed = 1;
  unsigned jobs = 1, shard = 0, shards = 1;
  bool no_null = false;
  for (CLI::App* c : {exp}) {
    c->add_option("--strategy", strategy, "dfs, random or pct")
        ->check(CLI::IsMember({"dfs", "random", "pct"}));
    c->add_option("--bound", bound, "preemption bound (-1: unbounded; default: the scenario's)")
        ->check(CLI::Range(-1, 64));
    c->add_option("--budget", budget, "at most this many executions per profile")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000}));
    c->add_option("--time", seconds, "at most this many seconds per profile")
        ->check(CLI::Range(0.001, 86400.0));
    c->add_option("--seed", seed, "random and pct seed");
    c->add_option("--jobs", jobs, "parallel workers")->check(CLI::Range(1U, 256U));
    c->add_option("--shard", shard, "explore shard K of --shards")->check(CLI::Range(0U, 65535U));
    c->add_option("--shards", shards, "the number of shards")->check(CLI::Range(1U, 65536U));
    c->add_flag("--no-null-paths", no_null, "do not explore NULL results");
  }

  auto* rep = app.add_subcommand("replay", "replay one schedule string of an exploration");
  std::string schedule;
  rep->add_option("scenario", name, "built-in name or file")->required();
  rep->add_option("schedule", schedule, "the schedule (tl1-...)")->required();
  add_selection(rep, sel);
  add_outputs(rep, out);
  rep->add_flag("--no-null-paths", no_null, "the exploration ran without NULL paths");

  auto* chk = app.add_subcommand("check", "run and explore a scenario, checking every expectation");
  chk->add_option("scenario", name, "built-in name or file")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    fmt::print(stderr, "tasklife: {} (tasklife --help lists the options)\n", what);
    return 2;
  }

  if (list->parsed()) {
    for (const sc::builtin& b : sc::builtins()) {
      try {
        const sc::scenario s = sc::parse(b.text, b.name);
        fmt::print("{:<22} {}\n", b.name, s.title);
      } catch (const sc::parse_error& e) {
        fmt::print("{:<22} (does not parse: {})\n", b.name, e.what());
      }
    }
    return 0;
  }
  try {
    sc::scenario s = sc::find(name);
    if (show->parsed()) {
      for (const sc::builtin& b : sc::builtins()) {
        if (b.name == name) {
          fmt::print("{}", b.text);
          return 0;
        }
      }
      std::ifstream f(name);
      std::cout << f.rdbuf();
      return 0;
    }
    if (chk->parsed()) {
      print_header(s);
      const auto vs = sc::variants(s);
      const auto runs = sc::run(s, {sc::backend::deterministic, true}, vs);
      for (const auto& r : runs) {
        summary(s, r);
      }
      int rc = conclude(s, sc::mode::run, runs);
      std::vector<sc::variant_result> explored;
      for (const auto& v : vs) {
        explored.push_back(sc::explore_variant(s, v, sc::default_explore_options(s)));
        summary(s, explored.back());
      }
      rc = std::max(rc, conclude(s, sc::mode::explore, explored));
      return rc;
    }
    const std::vector<sc::variant> vs = chosen(s, sel);
    print_header(s);
    if (run->parsed()) {
      fmt::print("  run once, {}\n",
                 native ? "on liburcu (memb)" : "on the deterministic RCU backend");
      const auto results =
          sc::run(s, {native ? sc::backend::native : sc::backend::deterministic, true}, vs);
      const bool wrote = write_outputs(s, results, out);
      fmt::print("\n");
      for (const auto& r : results) {
        summary(s, r);
      }
      return std::max(conclude(s, sc::mode::run, results), wrote ? 0 : 1);
    }
    explore::options o = sc::default_explore_options(s);
    o.strategy = strategy == "random" ? explore::strategy::random
                 : strategy == "pct"  ? explore::strategy::pct
                                      : explore::strategy::dfs;
    if (bound) {
      o.preemption_bound = *bound;
    }
    if (budget) {
      o.max_executions = *budget;
    }
    o.time_budget = std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
    o.seed = seed;
    o.jobs = jobs;
    o.shard = shard;
    o.shards = shards;
    if (shard >= shards) {
      fmt::print(stderr, "tasklife: --shard {} is not below --shards {}\n", shard, shards);
      return 2;
    }
    if (no_null) {
      o.null_paths = false;
    }
    if (rep->parsed()) {
      if (vs.size() != 1) {
        fmt::print(stderr,
                   "tasklife: a schedule belongs to one variant: pick it with --profile (and "
                   "--final-put); the scenario runs {}\n",
                   vs.size());
        return 2;
      }
      std::vector<sc::variant_result> results{sc::replay_variant(s, vs.front(), schedule, o)};
      const bool wrote = write_outputs(s, results, out);
      fmt::print("\n");
      summary(s, results.front());
      return wrote ? 0 : 1;
    }
    fmt::print(
        "  explore: {}, preemption bound {}, at most {} executions and {:.0f} s per "
        "profile{}\n",
        explore::to_string(o.strategy), o.preemption_bound, o.max_executions, seconds,
        o.null_paths ? ", NULL paths" : "");
    std::vector<sc::variant_result> results;
    progress bar(!out.quiet);
    for (const sc::variant& v : vs) {
      bar.start(v.label);
      results.push_back(sc::explore_variant(s, v, o, &bar.counter()));
      bar.stop();
    }
    const bool wrote = write_outputs(s, results, out);
    fmt::print("\n");
    for (const auto& r : results) {
      summary(s, r);
    }
    return std::max(conclude(s, sc::mode::explore, results), wrote ? 0 : 1);
  } catch (const sc::parse_error& e) {
    fmt::print(stderr, "{}\n", e.what());
    return 2;
  }
}
