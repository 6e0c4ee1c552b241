// tasklife_explore_bench: the explorer's benchmarks (explore_bench.cpp).
// --tasklife_report=<path> also writes the Markdown page.
#include <cstdio>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "report.hpp"

int main(int argc, char** argv) {
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
  tasklife::bench::collecting_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  if (!report_path.empty()) {
    tasklife::bench::write_explore_report(reporter.runs(), report_path);
    std::printf("wrote %s\n", report_path.c_str());
  }
  return 0;
}
