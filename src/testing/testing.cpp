// tasklife::testing: the GoogleTest helpers (testing.hpp).
#include <algorithm>
#include <cstdint>
#include <mutex>

#include <fmt/format.h>

#include <tasklife/fmt.hpp>
#include <tasklife/testing.hpp>

namespace tasklife::testing {
namespace {

struct recorded_violation {
  std::string message;
  bool matched;  // by an EXPECT_CONTRACT_VIOLATION
};

std::mutex g_mutex;
std::vector<recorded_violation> g_violations;                // guarded by g_mutex
std::vector<contract_capture::captured_warning> g_warnings;  // guarded by g_mutex
std::uint64_t g_clears = 0;                                  // guarded by g_mutex
bool g_active = false;                                       // guarded by g_mutex
contract_handler g_previous_handler = nullptr;
refcount_warning_sink g_previous_sink = nullptr;

void capturing_handler(const contract_violation& v) {
  {
    const std::lock_guard lock(g_mutex);
    g_violations.push_back({v.message, false});
  }
  throw contract_error(v.message);
}

void capturing_sink(const refcount_warning& w) {
  const std::lock_guard lock(g_mutex);
  g_warnings.push_back({w, refcount_read(w.ref)});
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

contract_capture::contract_capture() {
  g_previous_handler = set_contract_handler(&capturing_handler);
  g_previous_sink = set_refcount_warning_sink(&capturing_sink);
  clear();
  refcount_reset_warnings();
  const std::lock_guard lock(g_mutex);
  g_active = true;
}

contract_capture::~contract_capture() {
  {
    const std::lock_guard lock(g_mutex);
    g_active = false;
  }
  set_contract_handler(g_previous_handler);
  set_refcount_warning_sink(g_previous_sink);
  refcount_reset_warnings();
  clear();
}

std::vector<std::string> contract_capture::violations() const {
  const std::lock_guard lock(g_mutex);
  std::vector<std::string> out;
  out.reserve(g_violations.size());
  for (const recorded_violation& v : g_violations) {
    out.push_back(v.message);
  }
  return out;
}

std::vector<std::string> contract_capture::unmatched_violations() const {
  const std::lock_guard lock(g_mutex);
  std::vector<std::string> out;
  for (const recorded_violation& v : g_violations) {
    if (!v.matched) {
      out.push_back(v.message);
    }
  }
  return out;
}

std::vector<contract_capture::captured_warning> contract_capture::refcount_warnings() const {
  const std::lock_guard lock(g_mutex);
  return g_warnings;
}

void contract_capture::clear() {
  const std::lock_guard lock(g_mutex);
  g_violations.clear();
  g_warnings.clear();
  ++g_clears;
}

namespace detail {

violation_probe::violation_probe(const char* statement, std::string_view substring)
    : statement_(statement), substring_(substring) {
  const std::lock_guard lock(g_mutex);
  start_ = g_violations.size();
  clears_ = g_clears;
}

void violation_probe::threw(const char* what) {
  threw_ = what;
}

bool violation_probe::satisfied() {
  std::vector<std::string> seen;
  bool matched = false;
  bool active = false;
  {
    const std::lock_guard lock(g_mutex);
    active = g_active;
    const std::size_t from = g_clears == clears_ ? std::min(start_, g_violations.size()) : 0;
    for (std::size_t i = from; i < g_violations.size(); ++i) {
      recorded_violation& v = g_violations[i];
      seen.push_back(v.message);
      if (contains(v.message, substring_)) {
        v.matched = true;
        matched = true;
      }
    }
  }
  if (matched && active && threw_.empty()) {
    return true;
  }
  failure_ = fmt::format(
      "Expected: {}\n  reports a contract violation whose message contains \"{}\".\n  Actual: ",
      statement_, substring_);
  if (!active) {
    failure_ += "no contract_capture is alive, so nothing is recorded";
    return false;
  }
  if (!threw_.empty()) {
    failure_ += fmt::format("it threw {}; ", threw_);
  }
  if (seen.empty()) {
    failure_ += "it reported no violation";
  } else {
    failure_ += matched ? "it reported (the match is marked expected):" : "it reported only:";
    for (const std::string& s : seen) {
      failure_ += "\n    " + s;
    }
  }
  return false;
}

}  // namespace detail

std::string describe_task(const task_struct& t) {
  return fmt::format(
      "task '{}' pid {} (id {}): usage={} rcu_users={} state={:#x} exit_state={:#x} flags={:#x}",
      t.comm, t.pid, t.priv.id, static_cast<int>(refcount_read(&t.usage)),
      static_cast<int>(refcount_read(&t.rcu_users)), t.state.load(), t.exit_state.load(),
      t.flags.load());
}

void kernel_test::SetUp() {
  start_kernel(config());
}

void kernel_test::TearDown() {
  end_kernel();
}

void kernel_test::remake(kernel_config config) {
  end_kernel();
  start_kernel(std::move(config));
}

void kernel_test::leave_body_task() {
  body_scope_.reset();
}

void kernel_test::start_kernel(kernel_config config) {
  if (!config.rcu_backend_factory && !native_rcu()) {
    // The deterministic backend: grace periods and callbacks happen when the test
    // (or the teardown's rcu_barrier) says, so a test waits for nothing.
    config.rcu_backend_factory = deterministic_rcu_factory();
  }
  kernel_.emplace(std::move(config));
  if (const char* comm = body_task_comm(); comm != nullptr) {
    body_task_ = fork_task(comm);
    if (body_task_ != nullptr) {
      body_scope_.emplace(body_task_);
    }
  }
}

void kernel_test::end_kernel() {
  if (!kernel_) {
    return;
  }
  kernel& kern = *kernel_;
  SCOPED_TRACE("the end-of-test invariants of kernel '" + kern.name() + "'");
  body_scope_.reset();
  if (body_task_ != nullptr) {
    retire(body_task_);
    body_task_ = nullptr;
  }
  std::vector<leaked_task> leaks;
  try {
    kern.rcu().rcu_barrier();
    leaks = kern.shutdown();
  } catch (const contract_error& e) {
    ADD_FAILURE() << "teardown: " << e.what();
  }
  for (const leaked_task& l : leaks) {
    ADD_FAILURE() << "leaked task '" << l.comm << "' pid " << l.pid << ": usage=" << l.usage
                  << " rcu_users=" << l.rcu_users << (l.holders.empty() ? "" : "; ") << l.holders;
  }
  const kernel_stats stats = kern.stats();
  EXPECT_EQ(stats.forked, stats.freed + stats.torn_down)
      << "every forked task freed exactly once (or torn down as a leak the test inspected)";
  EXPECT_EQ(kern.rcu().stats().pending(), 0U) << "nothing left pending";
  if (stats.torn_down == 0) {
    EXPECT_EQ(stats.rcu_users_zero, stats.forked) << "rcu_users reached 0 once per task";
    EXPECT_EQ(stats.gp_elapsed, stats.forked) << "one grace period per task";
    EXPECT_EQ(kern.init_pid_ns().nr_hashed(), 0U) << "every task unhashed";
    EXPECT_EQ(kern.init_pid_ns().nr_allocated(), 0U) << "every pid number given back";
  }
  // Destroyed before the violations are checked: what its destruction reports (a
  // registration still alive with its RCU domain, say) is checked too.
  kernel_.reset();
  // Every violation must have been expected, and every declared one must have happened.
  const std::vector<std::string> seen = capture_.violations();
  for (const std::string& expected : expected_violations_) {
    if (std::none_of(seen.begin(), seen.end(),
                     [&](const std::string& s) { return contains(s, expected); })) {
      ADD_FAILURE() << "expected a violation saying \"" << expected << "\"; none was reported";
    }
  }
  for (const std::string& s : capture_.unmatched_violations()) {
    const bool declared =
        std::any_of(expected_violations_.begin(), expected_violations_.end(),
                    [&](const std::string& expected) { return contains(s, expected); });
    const bool is_leak_report = s.rfind("leak: ", 0) == 0;  // already reported above
    if (!declared && !is_leak_report) {
      ADD_FAILURE() << "unexpected contract violation: " << s;
    }
  }
  const std::vector<contract_capture::captured_warning> warnings = capture_.refcount_warnings();
  for (const auto& w : warnings) {
    if (std::find(expected_warnings_.begin(), expected_warnings_.end(), w.warning.type) ==
        expected_warnings_.end()) {
      ADD_FAILURE() << "unexpected refcount warning: " << w.warning.message << " at "
                    << w.warning.where.file_name() << ":" << w.warning.where.line();
    }
  }
  for (const refcount_saturation_type type : expected_warnings_) {
    if (std::none_of(warnings.begin(), warnings.end(),
                     [type](const auto& w) { return w.warning.type == type; })) {
      ADD_FAILURE() << "expected a refcount warning \"" << refcount_warning_message(type)
                    << "\"; none was raised";
    }
  }
  capture_.clear();
  refcount_reset_warnings();
  expected_violations_.clear();
  expected_warnings_.clear();
}

void kernel_test::expect_violation(std::string substring) {
  expected_violations_.push_back(std::move(substring));
}

void kernel_test::expect_refcount_warning(refcount_saturation_type type) {
  expected_warnings_.push_back(type);
}

task_struct* kernel_test::fork_task(const char* comm, task_struct* parent, clone_args args,
                                    std::source_location where) {
  args.comm = comm;
  const fork_result r = kernel_->fork(parent, args, where);
  if (!r) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "fork of '" << comm << "' failed: " << r.error;
  }
  return r.task;
}

void kernel_test::retire(task_struct* t, std::source_location where) {
  // Inside a read-side section, no grace period that the retirement starts can
  // end before the task has been looked at: it cannot be freed meanwhile.
  const rcu_thread_registration registration(kernel_->rcu());
  const rcu_read_guard guard(kernel_->rcu());
  bool retired = false;
  try {
    retired = kernel_->retire(t, 0, where);
  } catch (const contract_error& e) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line())) << "retire: " << e.what();
    return;
  }
  if (!retired) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "retire: do_exit refused, the task was already exiting";
    return;
  }
  if (t->exit_state.load(std::memory_order_acquire) != EXIT_DEAD) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "retire: not reaped: " << describe_task(*t);
  }
}

void kernel_test::retire(std::initializer_list<task_struct*> tasks, std::source_location where) {
  for (task_struct* t : tasks) {
    retire(t, where);
  }
}

std::string describe_failure(const explore::failure& f) {
  return fmt::format(
      "{}: {}\n  replay: tasklife::explore::replay(model, \"{}\")\n  {} step(s), {} "
      "preemption(s):\n{}",
      explore::to_string(f.kind), f.message, f.schedule, f.steps, f.preemptions,
      f.format_timeline());
}

explore::report expect_explores_cleanly(const explore::model& model,
                                        const explore::options& options,
                                        std::source_location where) {
  explore::report r = explore::explore(model, options);
  if (r.failure) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "the explorer found a failing execution (" << r.summary() << ")\n"
        << describe_failure(*r.failure);
  } else if (!r.exhausted) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "the explorer ran out of budget before exhausting the space: " << r.summary();
  }
  return r;
}

explore::report expect_explore_finds(const explore::model& model, explore::failure_kind kind,
                                     const explore::options& options, std::source_location where) {
  explore::report r = explore::explore(model, options);
  if (!r.failure) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "the explorer found no failing execution, expected one of kind "
        << explore::to_string(kind) << " (" << r.summary() << ")";
  } else if (r.failure->kind != kind) {
    ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line()))
        << "expected a failure of kind " << explore::to_string(kind) << ", found "
        << describe_failure(*r.failure);
  }
  return r;
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
