// Test support: how long stress tests run. CI runs seconds; a soak sets
// TASKLIFE_STRESS_SECONDS to hours.
#pragma once

#include <chrono>
#include <cstdlib>
#include <string>

namespace tasklife::test {

// Duration of each stress test: TASKLIFE_STRESS_SECONDS (default 1, fractions allowed).
inline std::chrono::milliseconds stress_duration() {
  const char* env = std::getenv("TASKLIFE_STRESS_SECONDS");
  double seconds = 1.0;
  if (env != nullptr && *env != '\0') {
    seconds = std::stod(env);
  }
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
}

}  // namespace tasklife::test
