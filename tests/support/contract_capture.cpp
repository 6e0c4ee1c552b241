#include "contract_capture.hpp"

namespace tasklife::test {
namespace {

std::mutex g_mutex;
std::vector<std::string> g_violations;                       // guarded by g_mutex
std::vector<contract_capture::captured_warning> g_warnings;  // guarded by g_mutex

void capturing_handler(const contract_violation& v) {
  {
    const std::lock_guard lock(g_mutex);
    g_violations.push_back(v.message);
  }
  throw contract_error(v.message);
}

void capturing_sink(const refcount_warning& w) {
  const std::lock_guard lock(g_mutex);
  g_warnings.push_back({w, refcount_read(w.ref)});
}

}  // namespace

contract_capture::contract_capture()
    : previous_handler_(set_contract_handler(&capturing_handler)),
      previous_sink_(set_refcount_warning_sink(&capturing_sink)) {
  clear();
  refcount_reset_warnings();
}

contract_capture::~contract_capture() {
  set_contract_handler(previous_handler_);
  set_refcount_warning_sink(previous_sink_);
  refcount_reset_warnings();
  clear();
}

std::vector<std::string> contract_capture::violations() const {
  const std::lock_guard lock(g_mutex);
  return g_violations;
}

std::vector<contract_capture::captured_warning> contract_capture::refcount_warnings() const {
  const std::lock_guard lock(g_mutex);
  return g_warnings;
}

void contract_capture::clear() {
  const std::lock_guard lock(g_mutex);
  g_violations.clear();
  g_warnings.clear();
}

}  // namespace tasklife::test
