// The benchmark binaries' main: Google Benchmark with tasklife's context.
#pragma once

namespace tasklife::bench {

// Runs the registered benchmarks as Google Benchmark's own main does, after adding
// to the context every output carries (the JSON of --benchmark_out=<file>
// --benchmark_out_format=json included) what the pages need to say where a figure
// comes from: the build, the CPU model, whether it is a virtual machine, the kernel,
// liburcu's flavor and read side. Google Benchmark adds the date, the load average
// and the CPU count itself; scripts/bench adds the commit
// (--benchmark_context=commit=...). scripts/bench-report writes the pages from it.
int run_benchmarks(int argc, char** argv);

}  // namespace tasklife::bench
