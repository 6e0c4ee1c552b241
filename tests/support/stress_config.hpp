// Test support: how long stress tests run. CI runs seconds; a soak sets
// TASKLIFE_STRESS_SECONDS to hours.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
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

// The base seed of a stress run: TASKLIFE_STRESS_SEED (decimal or 0x...) replays
// a failure; otherwise a fresh random one (print it with SCOPED_TRACE).
inline std::uint64_t stress_seed() {
  const char* env = std::getenv("TASKLIFE_STRESS_SEED");
  if (env != nullptr && *env != '\0') {
    return std::stoull(env, nullptr, 0);
  }
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32U) ^ rd();
}

// SplitMix64: derives independent per-thread seeds from the base seed.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31U);
}

}  // namespace tasklife::test
