// The benchmark reporter: prints as Google Benchmark's console reporter does and
// keeps every run, then writes docs/benchmarks.md and its SVG chart.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace tasklife::bench {

struct result {
  std::string function;  // "BM_TaskAcquireRelease"
  std::string args;      // "shared:1"
  int threads;
  double items_per_second;  // aggregate over threads, wall clock
  double real_time_ms;      // wall-clock time of one iteration
  std::map<std::string, double> counters;
  bool error;
  std::string error_message;
};

class collecting_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override;
  const std::vector<result>& runs() const { return runs_; }

 private:
  std::vector<result> runs_;
};

void write_report(const std::vector<result>& runs, const std::string& path);
// The explorer's page (docs/benchmarks-explore.md), from tasklife_explore_bench's runs.
void write_explore_report(const std::vector<result>& runs, const std::string& path);

// A benchmark binary's main: --tasklife_report=<path> also writes the page with
// `write`; everything else goes to Google Benchmark.
int run_benchmarks(int argc, char** argv,
                   void (*write)(const std::vector<result>& runs, const std::string& path));

}  // namespace tasklife::bench
