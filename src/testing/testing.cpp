// tasklife::testing: the GoogleTest helpers (testing.hpp).
#include <algorithm>
#include <mutex>

#include <fmt/format.h>

#include <tasklife/testing.hpp>

namespace tasklife::testing {
namespace {

std::mutex g_mutex;
std::vector<std::string> g_violations;                       // guarded by g_mutex
std::vector<contract_capture::captured_warning> g_warnings;  // guarded by g_mutex
contract_handler g_previous_handler = nullptr;
refcount_warning_sink g_previous_sink = nullptr;

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

contract_capture::contract_capture() {
  g_previous_handler = set_contract_handler(&capturing_handler);
  g_previous_sink = set_refcount_warning_sink(&capturing_sink);
  clear();
  refcount_reset_warnings();
}

contract_capture::~contract_capture() {
  set_contract_handler(g_previous_handler);
  set_refcount_warning_sink(g_previous_sink);
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

std::string describe_task(const task_struct& t) {
  return fmt::format(
      "task '{}' pid {} (id {}): usage={} rcu_users={} state={:#x} exit_state={:#x} flags={:#x}",
      t.comm, t.pid, t.priv.id, static_cast<int>(refcount_read(&t.usage)),
      static_cast<int>(refcount_read(&t.rcu_users)), t.state.load(), t.exit_state.load(),
      t.flags.load());
}

void kernel_test::SetUp() {
  kernel_.emplace(config());
}

void kernel_test::TearDown() {
  if (!kernel_) {
    return;
  }
  std::vector<leaked_task> leaks;
  try {
    kernel_->rcu().rcu_barrier();
    leaks = kernel_->shutdown();
  } catch (const contract_error& e) {
    ADD_FAILURE() << "teardown: " << e.what();
  }
  for (const leaked_task& l : leaks) {
    ADD_FAILURE() << "leaked task '" << l.comm << "' pid " << l.pid << ": usage=" << l.usage
                  << " rcu_users=" << l.rcu_users << (l.holders.empty() ? "" : "; ") << l.holders;
  }
  // Every violation must have been declared, and every declared one must have happened.
  std::vector<std::string> seen = capture_.violations();
  for (const std::string& expected : expected_violations_) {
    const auto it = std::find_if(seen.begin(), seen.end(), [&](const std::string& s) {
      return s.find(expected) != std::string::npos;
    });
    if (it == seen.end()) {
      ADD_FAILURE() << "expected a violation saying \"" << expected << "\"; none was reported";
    }
  }
  for (const std::string& s : seen) {
    const bool declared = std::any_of(
        expected_violations_.begin(), expected_violations_.end(),
        [&](const std::string& expected) { return s.find(expected) != std::string::npos; });
    const bool is_leak_report = s.rfind("leak: ", 0) == 0;  // already reported above
    if (!declared && !is_leak_report) {
      ADD_FAILURE() << "unexpected contract violation: " << s;
    }
  }
  for (const auto& w : capture_.refcount_warnings()) {
    if (std::find(expected_warnings_.begin(), expected_warnings_.end(), w.warning.type) ==
        expected_warnings_.end()) {
      ADD_FAILURE() << "unexpected refcount warning: " << w.warning.message << " at "
                    << w.warning.where.file_name() << ":" << w.warning.where.line();
    }
  }
  const kernel_stats s = kernel_->stats();
  EXPECT_EQ(s.forked, s.freed + s.torn_down)
      << "every forked task freed exactly once (or torn down as a leak the test inspected)";
  kernel_.reset();
}

void kernel_test::expect_violation(std::string substring) {
  expected_violations_.push_back(std::move(substring));
}

void kernel_test::expect_refcount_warning(refcount_saturation_type type) {
  expected_warnings_.push_back(type);
}

task_struct* kernel_test::fork_task(const char* comm, task_struct* parent, clone_args args) {
  args.comm = comm;
  const fork_result r = kernel_->fork(parent, args);
  EXPECT_TRUE(r) << "fork of '" << comm << "' failed: " << r.error;
  return r.task;
}

void kernel_test::retire(task_struct* t) {
  kernel_->retire(t);
}

}  // namespace tasklife::testing

namespace tasklife {

void PrintTo(const task_struct& t, std::ostream* os) {
  *os << testing::describe_task(t);
  if (t.traced.load(std::memory_order_relaxed)) {
    for (const task_event& e : task_kernel(&t).history(&t)) {
      *os << "\n    " << fmt::format("{}", e);
    }
  }
}

void PrintTo(const violation& v, std::ostream* os) {
  *os << to_string(v.kind) << " in " << (v.kfunc.empty() ? "program exit" : v.kfunc) << ": "
      << v.message << " (" << v.where.file_name() << ":" << v.where.line() << ")";
}

void PrintTo(violation_kind k, std::ostream* os) {
  *os << to_string(k);
}

void PrintTo(semantics_profile p, std::ostream* os) {
  *os << to_string(p);
}

}  // namespace tasklife
