// tasklife: the command. Scenario files (docs/scenarios.md) run once, explored
// over every interleaving, or replayed from a schedule string, under one or
// several kernel profiles side by side; what happened comes out as a text
// timeline, Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing), an SVG
// picture and an ftrace-like text.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
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
  const CLI::Validator path(
      [](std::string& v) { return v.empty() ? std::string("an empty path") : std::string(); },
      "PATH");
  cmd->add_option("--json", o.json, "write the Chrome trace-event JSON here (ui.perfetto.dev)")
      ->check(path);
  cmd->add_option("--svg", o.svg, "write the SVG timeline here")->check(path);
  cmd->add_option("--ftrace", o.ftrace, "write an ftrace-like text (trace-cmd report) here")
      ->check(path);
  cmd->add_option("--text", o.text, "write the text timeline here ('-': stdout, the default)")
      ->check(path);
  cmd->add_option("--out", o.dir,
                  "write every output into this directory: NAME.json, NAME.svg, NAME.txt, "
                  "NAME.ftrace")
      ->check(path);
  cmd->add_flag("-q,--quiet", o.quiet,
                "no timeline on stdout and no progress line on stderr (summaries only)");
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

// The exit status of an output that could not be written (docs/scenarios.md §1):
// 2, like a bad command line; 1 is a failed expectation.
constexpr int exit_unwritable = 2;
constexpr int exit_usage = 2;

// What is wrong with the output options, or "" (checked before anything runs):
// no empty path, '-' (stdout) only for the text timeline, no path given twice.
std::string output_problem(const outputs& o) {
  const std::pair<const char*, const std::string*> given[] = {
      {"--text", &o.text}, {"--json", &o.json}, {"--svg", &o.svg}, {"--ftrace", &o.ftrace}};
  std::map<std::string, const char*> seen;
  for (const auto& [flag, path] : given) {
    if (path->empty()) {
      continue;  // not given (CLI11 leaves it empty; an empty argument is caught below)
    }
    if (*path == "-" && std::string_view(flag) != "--text") {
      return fmt::format("{} -: only the text timeline goes to stdout; give {} a file", flag, flag);
    }
    // The same file by two spellings ("x", "./x", "d/../x") is the same file.
    std::error_code ec;
    const std::filesystem::path abs = std::filesystem::absolute(*path, ec);
    const std::string key = *path == "-" || ec ? *path : abs.lexically_normal().string();
    auto [it, fresh] = seen.emplace(key, flag);
    if (!fresh) {
      return fmt::format("{} and {} both write to '{}'", it->second, flag, *path);
    }
  }
  return {};
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

// `word` as one shell word: as it is if it is plain, else in single quotes.
std::string shell_quote(std::string_view word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("_-./=:,+@%").find(c) != std::string_view::npos;
  });
  if (plain) {
    return std::string(word);
  }
  std::string out = "'";
  for (const char c : word) {
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  return out + "'";
}

void summary(const sc::scenario& s, const sc::variant_result& r) {
  std::string outcome = r.trace.outcome;
  if (r.how == sc::mode::explore && !r.replayed && !r.failure && !r.complete) {
    outcome += " (not every interleaving: " + r.stopped + ")";
  }
  fmt::print("  {:<44} {}\n", r.v.label, outcome);
  if (r.report) {
    fmt::print("      {}\n", r.report->summary());
  }
  if (r.failure) {
    fmt::print("      {}\n", r.failure->message);
    if (!r.failure->schedule.empty()) {
      // A built-in by its name; a file by a path find() reads as a file (a bare
      // name that is also a built-in's gets "./").
      std::string file = s.builtin ? s.name : s.file;
      if (!s.builtin && sc::find_builtin(file) != nullptr) {
        file = "./" + file;
      }
      fmt::print("      replay: tasklife replay {} {} -p {} --final-put {}\n", shell_quote(file),
                 shell_quote(r.failure->schedule), to_string(r.v.profile),
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

// A whole number in lo .. hi, in decimal digits only: CLI11 alone would wrap "-1"
// into an unsigned option and take a number past 2^64.
CLI::Validator whole(std::uint64_t lo, std::uint64_t hi) {
  return {[lo, hi](std::string& v) -> std::string {
            std::uint64_t n = 0;
            const char* end = v.data() + v.size();
            const auto [at, ec] = std::from_chars(v.data(), end, n);
            if (v.empty() || ec == std::errc::invalid_argument || at != end) {
              return fmt::format("'{}' is not a whole number", v);
            }
            if (ec == std::errc::result_out_of_range || n < lo || n > hi) {
              return fmt::format("{} is not between {} and {}", v, lo, hi);
            }
            return {};
          },
          fmt::format("INT in [{} - {}]", lo, hi)};
}

// A number of seconds: finite, in lo .. hi (CLI::Range lets NaN through).
CLI::Validator seconds_between(double lo, double hi) {
  return {[lo, hi](std::string& v) -> std::string {
            char* end = nullptr;
            const double d = std::strtod(v.c_str(), &end);
            if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(d)) {
              return fmt::format("'{}' is not a number of seconds", v);
            }
            if (d < lo || d > hi) {
              return fmt::format("{} is not between {} and {}", v, lo, hi);
            }
            return {};
          },
          fmt::format("SECONDS in [{} - {}]", lo, hi)};
}

constexpr std::string_view commands[] = {"list", "show", "run", "explore", "replay", "check"};

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
  exp->add_option("--strategy", strategy, "dfs, random or pct")
      ->check(CLI::IsMember({"dfs", "random", "pct"}));
  exp->add_option("--bound", bound, "preemption bound (-1: unbounded; default: the scenario's)")
      ->check(CLI::Range(-1, sc::max_preemption_bound));
  exp->add_option("--budget", budget, "at most this many executions per profile")
      ->check(whole(1, sc::max_executions_limit));
  exp->add_option("--time", seconds, "at most this many seconds per profile")
      ->check(seconds_between(0.001, 86400.0));
  exp->add_option("--seed", seed, "random and pct seed")
      ->check(whole(0, std::numeric_limits<std::uint64_t>::max()));
  exp->add_option("--jobs", jobs, "parallel workers")->check(whole(1, 256));
  exp->add_option("--shard", shard, "explore shard K of --shards")->check(whole(0, 65535));
  exp->add_option("--shards", shards, "the number of shards")->check(whole(1, 65536));
  exp->add_flag("--no-null-paths", no_null, "do not explore NULL results");

  auto* rep = app.add_subcommand("replay", "replay one schedule string of an exploration");
  std::string schedule;
  rep->add_option("scenario", name, "built-in name or file")->required();
  rep->add_option("schedule", schedule, "the schedule (tl1-...)")->required();
  add_selection(rep, sel);
  add_outputs(rep, out);
  rep->add_flag("--no-null-paths", no_null, "the exploration ran without NULL paths");

  auto* chk = app.add_subcommand("check", "run and explore a scenario, checking every expectation");
  chk->add_option("scenario", name, "built-in name or file")->required();

  // The first word names the command (CLI11 would only say that one is required).
  if (argc > 1) {
    const std::string_view first = argv[1];
    const bool known =
        std::find(std::begin(commands), std::end(commands), first) != std::end(commands);
    if (!known && first != "-h" && first != "--help" && first != "--version") {
      fmt::print(stderr,
                 "tasklife: unknown {} '{}': expected a command: list, show, run, explore, "
                 "replay or check (tasklife --help lists them)\n",
                 first.rfind('-', 0) == 0 ? "option" : "command", first);
      return exit_usage;
    }
  }
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
    return exit_usage;
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
  // What the command line alone says is wrong, before anything is printed or run.
  auto usage = [](const std::string& why) {
    fmt::print(stderr, "tasklife: {}\n", why);
    return exit_usage;
  };
  if (const std::string p = output_problem(out); !p.empty()) {
    return usage(p);
  }
  for (std::size_t i = 0; i < sel.profiles.size(); ++i) {
    if (std::count(sel.profiles.begin(), sel.profiles.begin() + static_cast<std::ptrdiff_t>(i),
                   sel.profiles[i]) != 0) {
      return usage(fmt::format("--profile {} is given twice", sel.profiles[i]));
    }
  }
  if (exp->parsed() && shard >= shards) {
    return usage(fmt::format("--shard {} is not below --shards {} (shards are numbered from 0)",
                             shard, shards));
  }
  if (rep->parsed()) {
    if (const auto p = explore::schedule_problem(schedule)) {
      return usage("bad schedule: " + *p);
    }
  }
  if (sc::find_builtin(name) != nullptr && ::access(name.c_str(), F_OK) == 0) {
    // Not silently: the built-in wins over a file named like it.
    fmt::print(stderr, "tasklife: note: '{}' is the built-in scenario; the file is ./{}\n", name,
               name);
  }
  try {
    if (show->parsed()) {
      if (const sc::builtin* b = sc::find_builtin(name)) {
        fmt::print("{}", b->text);
      } else {
        fmt::print("{}", sc::read_file(name));
      }
      return 0;
    }
    sc::scenario s = sc::find(name);
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
    if (rep->parsed() && vs.size() != 1) {
      return usage(fmt::format(
          "a schedule belongs to one variant, and the scenario runs {}: pick one with --profile "
          "(and --final-put)",
          vs.size()));
    }
    if (run->parsed()) {
      print_header(s);
      fmt::print("  run once, {}\n",
                 native ? "on liburcu (memb)" : "on the deterministic RCU backend");
      const auto results =
          sc::run(s, {native ? sc::backend::native : sc::backend::deterministic, true}, vs);
      const bool wrote = write_outputs(s, results, out);
      fmt::print("\n");
      for (const auto& r : results) {
        summary(s, r);
      }
      return std::max(conclude(s, sc::mode::run, results), wrote ? 0 : exit_unwritable);
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
    if (no_null) {
      o.null_paths = false;
    }
    if (rep->parsed()) {
      std::vector<sc::variant_result> results{sc::replay_variant(s, vs.front(), schedule, o)};
      const sc::variant_result& r = results.front();
      if (r.failure && r.failure->kind == explore::failure_kind::nondeterminism) {
        // A well-formed string the scenario's model does not follow: made from
        // another scenario, another variant, or another version of this file.
        return usage(fmt::format(
            "the schedule belongs to another scenario or variant: it does not match '{}' under "
            "{} (replay it with the scenario, --profile and --final-put the exploration "
            "printed; or the scenario depends on something the explorer does not control). {}",
            s.name, r.v.label, r.failure->message));
      }
      print_header(s);
      const bool wrote = write_outputs(s, results, out);
      fmt::print("\n");
      summary(s, r);
      return wrote ? 0 : exit_unwritable;
    }
    print_header(s);
    fmt::print("  explore: {}, preemption bound {}, at most {} executions and {} s per profile{}\n",
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
    return std::max(conclude(s, sc::mode::explore, results), wrote ? 0 : exit_unwritable);
  } catch (const sc::parse_error& e) {
    fmt::print(stderr, "{}\n", e.what());
    return exit_usage;
  }
}
