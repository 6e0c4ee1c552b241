// Writes docs/benchmarks.md and docs/benchmarks-acquire-release.svg from one run.
#include "report.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <sys/utsname.h>
#include <thread>

#include <fmt/format.h>

#include <tasklife/tasklife.hpp>

#ifndef TASKLIFE_BENCH_BUILD
#define TASKLIFE_BENCH_BUILD "unknown"
#endif
#ifndef TASKLIFE_BENCH_ANALYSIS
#define TASKLIFE_BENCH_ANALYSIS ""
#endif

namespace tasklife::bench {

void collecting_reporter::ReportRuns(const std::vector<Run>& runs) {
  for (const Run& r : runs) {
    // With repetitions, keep the median of each benchmark (and nothing else).
    if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") {
      continue;
    }
    result x;
    x.function = r.run_name.function_name;
    x.args = r.run_name.args;
    x.threads = static_cast<int>(r.threads);
    const auto it = r.counters.find("items_per_second");
    x.items_per_second = it != r.counters.end() ? static_cast<double>(it->second) : 0.0;
    x.real_time_ms = r.GetAdjustedRealTime() * (r.time_unit == benchmark::kMillisecond   ? 1.0
                                                : r.time_unit == benchmark::kMicrosecond ? 1e-3
                                                : r.time_unit == benchmark::kNanosecond  ? 1e-6
                                                                                         : 1e3);
    for (const auto& [name, counter] : r.counters) {
      x.counters[name] = static_cast<double>(counter);
    }
    x.error = r.error_occurred;
    x.error_message = r.error_message;
    runs_.push_back(std::move(x));
  }
  ConsoleReporter::ReportRuns(runs);
}

namespace {

class results {
 public:
  explicit results(const std::vector<result>& runs) : runs_(runs) {}
  const result* find(std::string_view function, std::string_view args, int threads) const {
    for (const result& r : runs_) {
      if (r.function == function && r.args == args && r.threads == threads && !r.error) {
        return &r;
      }
    }
    return nullptr;
  }
  // Aggregate million operations per second, or nullopt if it did not run.
  std::optional<double> mops(std::string_view function, std::string_view args, int threads) const {
    const result* r = find(function, args, threads);
    if (r == nullptr || r->items_per_second <= 0.0) {
      return std::nullopt;
    }
    return r->items_per_second / 1e6;
  }
  // Wall-clock nanoseconds per operation on each thread.
  std::optional<double> ns(std::string_view function, std::string_view args, int threads) const {
    const auto m = mops(function, args, threads);
    if (!m) {
      return std::nullopt;
    }
    return 1e3 * threads / *m;
  }
  std::optional<double> ms(std::string_view function, std::string_view args, int threads) const {
    const result* r = find(function, args, threads);
    return r == nullptr ? std::nullopt : std::optional<double>(r->real_time_ms);
  }
  std::optional<double> counter(std::string_view function, std::string_view args, int threads,
                                const std::string& name) const {
    const result* r = find(function, args, threads);
    if (r == nullptr) {
      return std::nullopt;
    }
    const auto it = r->counters.find(name);
    return it == r->counters.end() ? std::nullopt : std::optional<double>(it->second);
  }

 private:
  const std::vector<result>& runs_;
};

std::string fmt_opt(std::optional<double> v, const char* spec = "{:.2f}") {
  return v ? fmt::format(fmt::runtime(spec), *v) : std::string("—");
}

std::string read_first(const char* path, const char* key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown";
}

bool hypervisor() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      return line.find(" hypervisor") != std::string::npos;
    }
  }
  return false;
}

struct target_row {
  std::string what;
  std::string measured;
  std::string target;
  std::optional<bool> met;
};

// One line chart: aggregate throughput against threads.
void write_chart(const results& rs, const std::string& svg_path) {
  struct series {
    std::string label;
    std::string function;
    std::string args;
    std::string color;
    bool dashed;
  };
  const std::vector<series> lines = {
      {"tasklife bpf_task_acquire+release, same task", "BM_TaskAcquireRelease", "shared:1",
       "#1f77b4", false},
      {"floor: CAS inc_not_zero + dec, same counter", "BM_FloorCasIncNotZeroDec", "shared:1",
       "#2ca02c", false},
      {"std::shared_ptr copy+destroy, same object", "BM_AltSharedPtrCopy", "shared:1", "#d62728",
       false},
      {"tasklife, a task per thread", "BM_TaskAcquireRelease", "shared:0", "#1f77b4", true},
      {"floor, a counter per thread", "BM_FloorCasIncNotZeroDec", "shared:0", "#2ca02c", true},
      {"std::shared_ptr, an object per thread", "BM_AltSharedPtrCopy", "shared:0", "#d62728", true},
  };
  const std::vector<int> threads = {1, 2, 4};
  double ymax = 1.0;
  for (const series& s : lines) {
    for (int t : threads) {
      if (const auto m = rs.mops(s.function, s.args, t)) {
        ymax = std::max(ymax, *m);
      }
    }
  }
  ymax = std::ceil(ymax / 20.0) * 20.0;
  const double W = 760, H = 420, left = 70, right = 250, top = 40, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  auto x_of = [&](std::size_t i) {
    return left + pw * static_cast<double>(i) / static_cast<double>(threads.size() - 1);
  };
  auto y_of = [&](double v) { return top + ph * (1.0 - v / ymax); };
  std::ostringstream svg;
  svg << fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n",
      W, H);
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg << fmt::format(
      "<text x=\"{}\" y=\"22\" font-size=\"14\">acquire + release: aggregate "
      "throughput (M ops/s) against threads</text>\n",
      left);
  for (int i = 0; i <= 4; ++i) {
    const double v = ymax * i / 4.0;
    svg << fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n",
                       left, y_of(v), left + pw, y_of(v));
    svg << fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.0f}</text>\n", left - 8,
                       y_of(v) + 4, v);
  }
  for (std::size_t i = 0; i < threads.size(); ++i) {
    svg << fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x_of(i),
                       top + ph + 20, threads[i]);
  }
  svg << fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">threads</text>\n",
                     left + pw / 2, top + ph + 42);
  svg << fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", left,
                     top + ph, left + pw, top + ph);
  svg << fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", left,
                     top, left, top + ph);
  double legend_y = top + 10;
  for (const series& s : lines) {
    std::string points;
    for (std::size_t i = 0; i < threads.size(); ++i) {
      if (const auto m = rs.mops(s.function, s.args, threads[i])) {
        points += fmt::format("{:.1f},{:.1f} ", x_of(i), y_of(*m));
      }
    }
    const char* dash = s.dashed ? " stroke-dasharray=\"6,4\"" : "";
    svg << fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>\n", s.color,
        dash, points);
    svg << fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\" "
        "stroke-width=\"2\"{}/>\n",
        left + pw + 12, legend_y, left + pw + 36, legend_y, s.color, dash);
    svg << fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n", left + pw + 40,
                       legend_y + 4, s.label);
    legend_y += 22;
  }
  svg << "</svg>\n";
  std::ofstream(svg_path) << svg.str();
}

}  // namespace

void write_report(const std::vector<result>& runs, const std::string& path) {
  const results rs(runs);
  std::ostringstream md;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  utsname uts{};
  uname(&uts);
  const rcu_native_info urcu = rcu_native_backend_info();

  md << "# Benchmarks\n\n"
     << "Generated by `scripts/bench` (do not edit by hand: the analysis at the end comes from "
        "`bench/analysis.md`). Every ratio on this page comes from one run of one binary, "
        "`build/release/bench/tasklife_bench`, in which the floors and the alternatives run "
        "beside tasklife. Rates are aggregate over the threads (wall clock); a time is the "
        "wall-clock time of one operation on one thread.\n\n";
  md << "## Machine and build\n\n| | |\n|---|---|\n";
  md << fmt::format("| date | {} |\n", date);
  md << fmt::format("| CPU | {} |\n", read_first("/proc/cpuinfo", "model name"));
  md << fmt::format("| cores | {} |\n", std::thread::hardware_concurrency());
  md << fmt::format("| virtual machine | {} |\n", hypervisor() ? "yes (hypervisor flag)" : "no");
  md << fmt::format("| kernel | {} {} |\n", uts.sysname, uts.release);
  md << fmt::format("| liburcu | flavor {}, sys_membarrier {} |\n", urcu.flavor,
                    urcu.has_sys_membarrier ? "available" : "NOT available (falls back to mb)");
  md << fmt::format("| read side | {} |\n", urcu.read_side_inlined
                                                ? "inlined (_LGPL_SOURCE, TASKLIFE_URCU_INLINE=ON)"
                                                : "library calls (TASKLIFE_URCU_INLINE=OFF)");
  md << fmt::format("| build | {} |\n\n", TASKLIFE_BENCH_BUILD);

  // ---- targets ----
  std::vector<target_row> targets;
  auto ratio = [](std::optional<double> a, std::optional<double> b) -> std::optional<double> {
    if (!a || !b || *b == 0.0) {
      return std::nullopt;
    }
    return *a / *b;
  };
  auto le = [](std::optional<double> v, double limit) -> std::optional<bool> {
    return v ? std::optional<bool>(*v <= limit) : std::nullopt;
  };
  auto ge = [](std::optional<double> v, double limit) -> std::optional<bool> {
    return v ? std::optional<bool>(*v >= limit) : std::nullopt;
  };
  // A time against another (ns per operation): met if a / b <= limit. Returns a / b.
  auto ns_at_most = [&](std::string what, std::optional<double> a, std::optional<double> b,
                        std::string goal, double limit) {
    const auto r = ratio(a, b);
    targets.push_back({std::move(what),
                       fmt::format("{} ns vs {} ns = {}×", fmt_opt(a), fmt_opt(b), fmt_opt(r)),
                       std::move(goal), le(r, limit)});
    return r;
  };
  // A throughput against another (M ops/s): met if a / b >= limit. `shown` formats a, b, a / b.
  auto mops_at_least = [&](std::string what, std::optional<double> a, std::optional<double> b,
                           const char* shown, std::string goal, double limit) {
    const auto r = ratio(a, b);
    targets.push_back({std::move(what),
                       fmt::format(fmt::runtime(shown), fmt_opt(a), fmt_opt(b), fmt_opt(r)),
                       std::move(goal), ge(r, limit)});
  };
  const auto acq1 = rs.ns("BM_TaskAcquireRelease", "shared:0", 1);
  const auto floor1 = rs.ns("BM_FloorCasIncNotZeroDec", "shared:0", 1);
  const auto r1 = ns_at_most("acquire+release, 1 thread, vs CAS inc_not_zero + dec", acq1, floor1,
                             "≤ 1.10×", 1.10);
  const auto chk_off = rs.ns("BM_TaskAcquireReleaseChecked", "checker:0", 1);
  const auto r_off = ratio(chk_off, floor1);
  targets.push_back({"the same inside a program run, checker compiled in but off",
                     fmt::format("{} ns = {}×", fmt_opt(chk_off), fmt_opt(r_off)), "≤ 1.10×",
                     le(r_off, 1.10)});
  ns_at_most("typed API vs raw API, 1 thread", rs.ns("BM_TaskAcquireReleaseTyped", "shared:0", 1),
             acq1, "≤ 1.05×", 1.05);
  ns_at_most("same task, 2 threads, vs the floor under the same contention",
             rs.ns("BM_TaskAcquireRelease", "shared:1", 2),
             rs.ns("BM_FloorCasIncNotZeroDec", "shared:1", 2), "≤ 1.10×", 1.10);
  mops_at_least("a task per thread: aggregate at 2 threads / 1 thread",
                rs.mops("BM_TaskAcquireRelease", "shared:0", 2),
                rs.mops("BM_TaskAcquireRelease", "shared:0", 1), "{} / {} M ops/s = {}×", "≥ 1.8×",
                1.8);
  ns_at_most("RCU read guard vs liburcu's inlined lock/unlock", rs.ns("BM_RcuReadGuard", "", 1),
             rs.ns("BM_FloorUrcuReadLockUnlock", "", 1), "≤ 1.2×", 1.2);
  ns_at_most("from_pid + release, 100k tasks, 1 thread, vs raw RCU array lookup",
             rs.ns("BM_TaskFromPidRelease", "tasks:100000", 1),
             rs.ns("BM_FloorRcuArrayLookupIncNotZero", "tasks:100000", 1), "≤ 1.3×", 1.3);
  mops_at_least("from_pid + release, 100k tasks, 2 threads, vs shared_mutex + unordered_map",
                rs.mops("BM_TaskFromPidRelease", "tasks:100000", 2),
                rs.mops("BM_AltSharedMutexMapLookup", "tasks:100000", 2),
                "{} vs {} M ops/s = {}× faster", "≥ 3×", 3.0);
  ns_at_most("bpf_kptr_xchg vs a raw atomic exchange", rs.ns("BM_KptrXchg", "", 1),
             rs.ns("BM_FloorAtomicExchange", "", 1), "≤ 1.1×", 1.1);
  const auto churn2 = rs.mops("BM_LifecycleChurn", "", 2);
  targets.push_back(
      {"lifecycle churn, 2 threads (fork → exit → switch → reap; GP and free on "
       "liburcu's worker)",
       fmt::format("{} M tasks/s", fmt_opt(churn2)), "≥ 1 M tasks/s", ge(churn2, 1.0)});
  const auto peak =
      rs.counter("BM_LifecycleChurnMemory", "tasks:1000000", 1, "peak_heap_growth_kb");
  const auto backlog =
      rs.counter("BM_LifecycleChurnMemory", "tasks:1000000", 1, "max_callback_backlog");
  const auto task_bytes = rs.counter("BM_LifecycleChurnMemory", "tasks:1000000", 1, "task_bytes");
  std::optional<double> bound;
  if (backlog && task_bytes) {
    // Alive at once: the 2 churning threads' tasks plus those awaiting their grace period.
    bound = 2.0 * (2.0 + *backlog) * *task_bytes / 1024.0;
  }
  targets.push_back(
      {"peak memory churning 1M tasks on 2 threads vs 2× the tasks alive at once (incl. the "
       "callback backlog)",
       fmt::format("{} KiB peak heap growth; backlog ≤ {} tasks of {} B; bound {} KiB",
                   fmt_opt(peak, "{:.0f}"), fmt_opt(backlog, "{:.0f}"),
                   fmt_opt(task_bytes, "{:.0f}"), fmt_opt(bound, "{:.0f}")),
       "≤ bound", (peak && bound) ? std::optional<bool>(*peak <= *bound) : std::nullopt});

  md << "## Headline\n\n";
  md << fmt::format(
      "`bpf_task_acquire` + `bpf_task_release` on a live task, one thread: **{} ns** per pair, "
      "against **{} ns** for the bare CAS `inc_not_zero` + release-`dec` floor ({}×) and {} ns "
      "for a `std::shared_ptr` copy.\n\n",
      fmt_opt(acq1), fmt_opt(floor1), fmt_opt(r1),
      fmt_opt(rs.ns("BM_AltSharedPtrCopy", "shared:0", 1)));
  md << "## Targets\n\n| target | measured | goal | met |\n|---|---|---|---|\n";
  for (const target_row& t : targets) {
    md << fmt::format("| {} | {} | {} | {} |\n", t.what, t.measured, t.target,
                      !t.met ? "not measured" : (*t.met ? "yes" : "**no**"));
  }

  // ---- per-scenario tables ----
  auto row = [&](std::string_view label, std::string_view fn, std::string_view args, int threads) {
    return fmt::format("| {} | {} | {} | {} |\n", label, threads, fmt_opt(rs.ns(fn, args, threads)),
                       fmt_opt(rs.mops(fn, args, threads)));
  };
  const std::string head =
      "| benchmark | threads | ns/op per thread | M ops/s (all threads) |\n"
      "|---|---|---|---|\n";
  md << "\n## 1. acquire + release on a live task\n\n"
     << "`shared:1`: every thread on the same task (one cache line bouncing between cores); "
        "`shared:0`: a task (counter, object) per thread.\n\n"
     << head;
  for (const char* args : {"shared:0", "shared:1"}) {
    for (int t : {1, 2, 4}) {
      md << row(fmt::format("tasklife raw ({})", args), "BM_TaskAcquireRelease", args, t);
      md << row(fmt::format("tasklife typed ({})", args), "BM_TaskAcquireReleaseTyped", args, t);
      md << row(fmt::format("floor: CAS inc_not_zero + dec ({})", args), "BM_FloorCasIncNotZeroDec",
                args, t);
      md << row(fmt::format("floor: atomic inc + dec ({})", args), "BM_FloorAtomicIncDec", args, t);
      md << row(fmt::format("std::shared_ptr copy ({})", args), "BM_AltSharedPtrCopy", args, t);
    }
  }
  for (int t : {1, 2, 4}) {
    md << row("std::atomic<std::shared_ptr> load", "BM_AltAtomicSharedPtrLoad", "", t);
  }
  md << "\n![acquire/release throughput against threads](benchmarks-acquire-release.svg)\n";

  md << "\n## 2. bpf_task_from_pid + release\n\n" << head;
  for (const char* args : {"tasks:1000", "tasks:100000", "tasks:1000000"}) {
    for (int t : {1, 2}) {
      md << row(fmt::format("tasklife ({})", args), "BM_TaskFromPidRelease", args, t);
      md << row(fmt::format("floor: RCU array + inc_not_zero ({})", args),
                "BM_FloorRcuArrayLookupIncNotZero", args, t);
      md << row(
          fmt::format("ablation: the floor's loop over tasklife's table and tasks ({})", args),
          "BM_FloorTasklifeTableLookup", args, t);
    }
  }
  for (int t : {1, 2}) {
    md << row("shared_mutex + unordered_map (tasks:100000)", "BM_AltSharedMutexMapLookup",
              "tasks:100000", t);
    md << row("mutex + unordered_map (tasks:100000)", "BM_AltMutexMapLookup", "tasks:100000", t);
  }

  md << "\n## 3. RCU\n\n" << head;
  for (int t : {1, 2, 4}) {
    md << row("tasklife rcu_read_guard", "BM_RcuReadGuard", "", t);
    md << row("floor: liburcu memb inlined lock/unlock", "BM_FloorUrcuReadLockUnlock", "", t);
  }
  md << row("synchronize_rcu (no reader)", "BM_SynchronizeRcu", "", 1);
  md << row("call_rcu enqueue", "BM_CallRcuEnqueue", "", 1);
  md << row("call_rcu end to end (100k callbacks + one rcu_barrier)", "BM_CallRcuEndToEnd",
            "batch:100000", 1);
  md << "\n`rcu_barrier` has a floor of about 10 ms in liburcu 0.13 (its callback worker sleeps "
        "10 ms between batches): the end-to-end figure includes one barrier per 100k callbacks.\n";

  md << "\n## 4. kptrs and maps\n\n" << head;
  md << row("bpf_kptr_xchg (one exchange)", "BM_KptrXchg", "", 1);
  md << row("floor: atomic exchange", "BM_FloorAtomicExchange", "", 1);
  md << row("map lookup + RCU slot read + acquire + release", "BM_MapLookupAcquireRelease", "", 1);

  md << "\n## 5. Lifecycle churn\n\n" << head;
  for (int t : {1, 2}) {
    md << row("fork → exit → final switch → reap (GP and free asynchronous)", "BM_LifecycleChurn",
              "", t);
  }
  md << fmt::format(
      "\nChurning tasks on 2 threads: peak heap growth (bytes malloc handed out, sampled every "
      "1024 tasks) and the largest callback backlog. {} bytes per task (task_struct + one pid "
      "level, before malloc's own overhead).\n\n| tasks churned | peak heap growth (KiB) | largest "
      "backlog (tasks) | M tasks/s |\n|---|---|---|---|\n",
      fmt_opt(task_bytes, "{:.0f}"));
  for (const char* args : {"tasks:1000000", "tasks:3000000"}) {
    md << fmt::format(
        "| {} | {} | {} | {} |\n", args + 6,
        fmt_opt(rs.counter("BM_LifecycleChurnMemory", args, 1, "peak_heap_growth_kb"), "{:.0f}"),
        fmt_opt(rs.counter("BM_LifecycleChurnMemory", args, 1, "max_callback_backlog"), "{:.0f}"),
        fmt_opt(rs.mops("BM_LifecycleChurnMemory", args, 1)));
  }

  md << "\n## 6. The checker\n\n" << head;
  md << row("acquire + release inside a program run, checker off", "BM_TaskAcquireReleaseChecked",
            "checker:0", 1);
  md << row("acquire + release inside a program run, checker on (record)",
            "BM_TaskAcquireReleaseChecked", "checker:1", 1);
  md << row("outside any program (checker compiled in, not running)", "BM_TaskAcquireRelease",
            "shared:0", 1);

  std::ifstream analysis(TASKLIFE_BENCH_ANALYSIS);
  if (analysis) {
    md << "\n" << std::string(std::istreambuf_iterator<char>(analysis), {});
  }
  std::ofstream(path) << md.str();

  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  write_chart(rs, dir + "/benchmarks-acquire-release.svg");
}

void write_explore_report(const std::vector<result>& runs, const std::string& path) {
  const results rs(runs);
  std::ostringstream md;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  md << "# The explorer's benchmarks\n\n"
     << "Generated by `scripts/bench` from one run of `build/release/bench/tasklife_explore_bench` "
        "(do not edit by hand). The explorer runs on a fully checked build of the library "
        "(TASKLIFE_CHECKS=full), so that a model's use-after-free lands in quarantined memory "
        "and is reported. One core; the models are those of `examples/explore_models.hpp`.\n\n";
  md << fmt::format("| | |\n|---|---|\n| date | {} |\n| CPU | {} |\n| build | {} |\n\n", date,
                    read_first("/proc/cpuinfo", "model name"), TASKLIFE_BENCH_BUILD);
  const auto pid_rate = rs.mops("BM_ExplorePidRace2Threads", "", 1);
  const auto stash_rate = rs.mops("BM_ExploreStash3Threads", "", 1);
  md << "## Targets\n\n| target | measured | goal | met |\n|---|---|---|---|\n";
  auto yes = [](bool b) { return b ? "yes" : "**no**"; };
  if (pid_rate) {
    md << fmt::format(
        "| executions per second, 2-thread pid-race model | {:.0f} /s | ≥ 100,000 /s | {} |\n",
        *pid_rate * 1e6, yes(*pid_rate * 1e6 >= 100000.0));
  } else {
    md << "| executions per second, 2-thread pid-race model | missing | ≥ 100,000 /s | **no** |\n";
  }
  for (const auto& [label, fn] :
       {std::pair{"pid-lookup race (rcu_users_inc)", "BM_ExploreFirstFailurePidRace"},
        std::pair{"rcu_users/rcu_head union (rcu_users_inc)", "BM_ExploreFirstFailureUnion"},
        std::pair{"the destructor of a NULL xchg (usage_based)", "BM_ExploreFirstFailureNullDtor"},
        std::pair{"an xchg into a deleted element (rcu_safe)",
                  "BM_ExploreFirstFailureXchgAfterDelete"},
        std::pair{"immediate final put under a reader", "BM_ExploreFirstFailureFinalPut"}}) {
    const auto t = rs.ms(fn, "", 1);
    const auto n = rs.counter(fn, "", 1, "executions_to_failure");
    md << fmt::format("| first failure, {} | {} ms, {} executions | < 50 ms and < 5,000 | {} |\n",
                      label, fmt_opt(t, "{:.3f}"), fmt_opt(n, "{:.0f}"),
                      t && n ? yes(*t < 50.0 && *n < 5000.0) : "**no**");
  }
  md << "\n## Executions per second\n\n| model | executions per exploration | executions/s "
        "|\n|---|---|---|\n";
  md << fmt::format(
      "| pid-lookup race, current (2 threads), whole space | {} | {} |\n",
      fmt_opt(rs.counter("BM_ExplorePidRace2Threads", "", 1, "executions_per_exploration"),
              "{:.0f}"),
      pid_rate ? fmt::format("{:.0f}", *pid_rate * 1e6) : "missing");
  md << fmt::format(
      "| stash (the union protocol), current (3 threads), whole space | {} | {} |\n",
      fmt_opt(rs.counter("BM_ExploreStash3Threads", "", 1, "executions_per_exploration"), "{:.0f}"),
      stash_rate ? fmt::format("{:.0f}", *stash_rate * 1e6) : "missing");
  md << "\n## The reduction (unbounded search of the pid-lookup race, current)\n\n"
        "| sleep sets | executions | pruned options |\n|---|---|---|\n";
  for (const char* arg : {"reduction:1", "reduction:0"}) {
    md << fmt::format(
        "| {} | {} | {} |\n", arg[10] == '1' ? "on" : "off",
        fmt_opt(rs.counter("BM_ExploreReduction", arg, 1, "executions_per_exploration"), "{:.0f}"),
        fmt_opt(rs.counter("BM_ExploreReduction", arg, 1, "pruned"), "{:.0f}"));
  }
  md << "\n## The same race as a stress test on real threads\n\n"
     << fmt::format(
            "50 ms of the pid-lookup race (rcu_users_inc) on liburcu with two real threads a "
            "trial (fork a victim, one thread looks it up by pid and releases it, the other "
            "retires it): {} trials, the bug seen in {} of them.\n",
            fmt_opt(rs.counter("BM_StressPidRace", "", 1, "trials"), "{:.0f}"),
            fmt_opt(rs.counter("BM_StressPidRace", "", 1, "bug_seen"), "{:.0f}"));
  md << fmt::format(
      "\n50 ms of the destructor of a NULL xchg (usage_based) the same way (a program takes the "
      "local object out of the element and drops it, a syscall deletes the element): {} "
      "trials, the bug (a bpf_obj_drop(NULL) report) seen in {} of them.\n",
      fmt_opt(rs.counter("BM_StressNullDtor", "", 1, "trials"), "{:.0f}"),
      fmt_opt(rs.counter("BM_StressNullDtor", "", 1, "bug_seen"), "{:.0f}"));
  md << fmt::format(
      "\n50 ms of the xchg into a deleted element (rcu_safe) the same way (a program looks the "
      "element up and exchanges current into it, a syscall deletes the element): {} trials, "
      "the bug (a reference left in the deleted element) seen in {} of them.\n",
      fmt_opt(rs.counter("BM_StressXchgAfterDelete", "", 1, "trials"), "{:.0f}"),
      fmt_opt(rs.counter("BM_StressXchgAfterDelete", "", 1, "bug_seen"), "{:.0f}"));
  std::ofstream(path) << md.str();
}

int run_benchmarks(int argc, char** argv,
                   void (*write)(const std::vector<result>& runs, const std::string& path)) {
  std::string report_path;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::string flag = "--tasklife_report=";
    if (arg.rfind(flag, 0) == 0) {
      report_path = arg.substr(flag.size());
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) {
    return 1;
  }
  collecting_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  if (!report_path.empty()) {
    write(reporter.runs(), report_path);
    std::printf("wrote %s\n", report_path.c_str());
  }
  return 0;
}

}  // namespace tasklife::bench
