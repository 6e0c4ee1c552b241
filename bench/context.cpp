// The benchmark binaries' main (context.hpp).
#include "context.hpp"

#include <fstream>
#include <string>
#include <sys/utsname.h>

#include <benchmark/benchmark.h>

#include <tasklife/rcu.hpp>

#ifndef TASKLIFE_BENCH_BUILD
#error "TASKLIFE_BENCH_BUILD (the build's description) is set by bench/CMakeLists.txt"
#endif

namespace tasklife::bench {
namespace {

std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
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
  return (" " + cpuinfo_field("flags") + " ").find(" hypervisor ") != std::string::npos;
}

}  // namespace

int run_benchmarks(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  utsname uts{};
  uname(&uts);
  const rcu_native_info urcu = rcu_native_backend_info();
  benchmark::AddCustomContext("build", TASKLIFE_BENCH_BUILD);
  benchmark::AddCustomContext("cpu_model", cpuinfo_field("model name"));
  benchmark::AddCustomContext("virtual_machine", hypervisor() ? "yes (hypervisor flag)" : "no");
  benchmark::AddCustomContext("kernel", std::string(uts.sysname) + " " + uts.release);
  benchmark::AddCustomContext(
      "liburcu", "flavor " + std::string(urcu.flavor) + ", sys_membarrier " +
                     (urcu.has_sys_membarrier ? "available" : "NOT available (falls back to mb)"));
  benchmark::AddCustomContext("read_side", urcu.read_side_inlined
                                               ? "inlined (_LGPL_SOURCE, TASKLIFE_URCU_INLINE=ON)"
                                               : "library calls (TASKLIFE_URCU_INLINE=OFF)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace tasklife::bench
