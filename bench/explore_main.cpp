// tasklife_explore_bench: the explorer's benchmarks (explore_bench.cpp).
#include "context.hpp"

int main(int argc, char** argv) {
  return tasklife::bench::run_benchmarks(argc, argv);
}
