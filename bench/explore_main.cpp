// tasklife_explore_bench: the explorer's benchmarks (explore_bench.cpp).
// --tasklife_report=<path> also writes the Markdown page.
#include "report.hpp"

int main(int argc, char** argv) {
  return tasklife::bench::run_benchmarks(argc, argv, &tasklife::bench::write_explore_report);
}
