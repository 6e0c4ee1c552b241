// Contract violations: the process-wide handler and its default.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>

#include <fmt/format.h>

#include <tasklife/check.hpp>

#include "observer.hpp"

namespace tasklife {
namespace {

constexpr std::string_view kKindNames[] = {
#define TASKLIFE_CONTRACT_KIND_NAME(name, text) #name,
    TASKLIFE_CONTRACT_KINDS(TASKLIFE_CONTRACT_KIND_NAME)
#undef TASKLIFE_CONTRACT_KIND_NAME
};
// NOLINTBEGIN(bugprone-suspicious-missing-comma): a kind's text is split over adjacent
// literals on purpose; the X-macro puts the comma after each whole row.
constexpr std::string_view kKindTexts[] = {
#define TASKLIFE_CONTRACT_KIND_TEXT(name, text) text,
    // NOLINTNEXTLINE(bugprone-suspicious-missing-comma): long texts are adjacent literals
    TASKLIFE_CONTRACT_KINDS(TASKLIFE_CONTRACT_KIND_TEXT)
#undef TASKLIFE_CONTRACT_KIND_TEXT
};
// NOLINTEND(bugprone-suspicious-missing-comma)
static_assert(std::size(kKindNames) == static_cast<std::size_t>(contract_kind::count_));

void default_contract_handler(const contract_violation& v) {
  fmt::print(stderr, "tasklife: {} contract violated ({}) at {}:{} ({}):\n  {}\n", v.component,
             to_string(v.kind), v.where.file_name(), v.where.line(), v.where.function_name(),
             v.message);
  std::fflush(stderr);
  std::abort();
}

// Acquire/release: pairs with set_contract_handler (see check.hpp).
std::atomic<contract_handler> g_handler{&default_contract_handler};
// Relaxed: a statistic; nothing is ordered by it.
std::atomic<std::uint64_t> g_violations{0};

contract_handler load_handler() noexcept {
  return g_handler.load(std::memory_order_acquire);
}

}  // namespace

std::string_view to_string(contract_kind kind) noexcept {
  const auto i = static_cast<std::size_t>(kind);
  return i < std::size(kKindNames) ? kKindNames[i] : std::string_view("unknown");
}

std::string_view explain(contract_kind kind) noexcept {
  const auto i = static_cast<std::size_t>(kind);
  return i < std::size(kKindTexts) ? kKindTexts[i] : std::string_view("an unknown kind");
}

contract_handler set_contract_handler(contract_handler handler) noexcept {
  if (handler == nullptr) {
    handler = &default_contract_handler;
  }
  return g_handler.exchange(handler, std::memory_order_acq_rel);
}

std::uint64_t contract_violations_seen() noexcept {
  return g_violations.load(std::memory_order_relaxed);
}

namespace detail {

constinit thread_local const thread_observer* tls_observer = nullptr;

void report_contract_violation(const contract_violation& v) {
  g_violations.fetch_add(1, std::memory_order_relaxed);
  if (const thread_observer* o = tls_observer) {
    o->contract(o->context, v);  // the explorer records it; the operation is skipped
    return;
  }
  load_handler()(v);
}

void report_contract_violation_noexcept(const contract_violation& v) noexcept {
  g_violations.fetch_add(1, std::memory_order_relaxed);
  if (const thread_observer* o = tls_observer) {
    o->contract(o->context, v);  // records, never throws
    return;
  }
  try {
    load_handler()(v);
  } catch (...) {
    // A throwing handler cannot unwind through a destructor or a thread's exit:
    // the violation has been counted and, by the handler, recorded; say so and go on.
    fmt::print(stderr,
               "tasklife: {} contract violated ({}, in a context that cannot throw):\n  {}\n",
               v.component, to_string(v.kind), v.message);
  }
}

}  // namespace detail
}  // namespace tasklife
