// tasklife::testkit: the GoogleTest helpers (testing.hpp).
#include <algorithm>
#include <cstdint>
#include <mutex>

#include <fmt/format.h>

#include <tasklife/fmt.hpp>
#include <tasklife/testing.hpp>

namespace tasklife::testkit {

struct contract_capture::state {
  capture_mode mode;
  std::vector<captured_violation> violations;
  std::vector<captured_warning> warnings;
  std::uint64_t clears = 0;
};

namespace {

struct frame {
  const contract_capture* capture;
  contract_capture::state* record;
};

std::mutex g_mutex;
std::vector<frame> g_stack;  // guarded by g_mutex; innermost last
contract_handler g_previous_handler = nullptr;
refcount_warning_sink g_previous_sink = nullptr;

captured_violation capture_of(const contract_violation& v) {
  captured_violation c;
  c.kind = v.kind;
  c.component = std::string(v.component);
  c.operation = std::string(v.operation);
  c.object = v.object;
  c.message = v.message;
  c.where = v.where;
  if (v.has_earlier) {
    c.earlier = v.earlier;
  }
  return c;
}

void capturing_handler(const contract_violation& v) {
  capture_mode mode = capture_mode::throw_on_violation;
  {
    const std::lock_guard lock(g_mutex);
    if (g_stack.empty()) {
      // A report racing the last capture's end: nothing records it, so say it.
      fmt::print(stderr, "tasklife: {} contract violated ({}) after the capture ended:\n  {}\n",
                 v.component, to_string(v.kind), v.message);
      return;
    }
    g_stack.back().record->violations.push_back(capture_of(v));
    mode = g_stack.back().record->mode;
  }
  if (mode == capture_mode::throw_on_violation) {
    throw contract_error(v);
  }
}

void capturing_sink(const refcount_warning& w) {
  const std::lock_guard lock(g_mutex);
  if (!g_stack.empty()) {
    g_stack.back().record->warnings.push_back({w, refcount_read(w.ref)});
  }
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// Fails at the running test's own file:line (the fixture's checks run in TearDown,
// whose line would point into this file).
const char* test_file() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info != nullptr && info->file() != nullptr ? info->file() : __FILE__;
}
int test_line() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info != nullptr ? info->line() : __LINE__;
}

}  // namespace

contract_error::contract_error(const contract_violation& v)
    : std::runtime_error(v.message), kind_(v.kind), object_(v.object) {}

bool violation_spec::matches(const captured_violation& v) const {
  if (kind && v.kind != *kind) {
    return false;
  }
  if (task_id != 0 && v.object.task_id != task_id) {
    return false;
  }
  if (!kernel.empty() && v.object.kernel != kernel) {
    return false;
  }
  return substring.empty() || contains(v.message, substring);
}

std::string violation_spec::describe() const {
  std::string out = kind ? fmt::format("of kind {}", to_string(*kind)) : "of any kind";
  if (task_id != 0) {
    out += fmt::format(" about task id {} of kernel '{}'", task_id, kernel);
  }
  if (!substring.empty()) {
    out += fmt::format(" whose message contains \"{}\"", substring);
  }
  return out;
}

violation_spec about(contract_kind kind, const task_struct* t) {
  violation_spec spec(kind);
  if (t != nullptr) {
    spec.task_id = task_id(t);
    spec.kernel = task_kernel(t).name();
  }
  return spec;
}

contract_capture::contract_capture(capture_mode mode)
    : mode_(mode), state_(std::make_unique<state>()) {
  state_->mode = mode;
  const std::lock_guard lock(g_mutex);
  if (g_stack.empty()) {
    g_previous_handler = set_contract_handler(&capturing_handler);
    g_previous_sink = set_refcount_warning_sink(&capturing_sink);
  } else {
    outer_ = const_cast<contract_capture*>(g_stack.back().capture);
  }
  g_stack.push_back({this, state_.get()});
  refcount_reset_warnings();
}

contract_capture::~contract_capture() {
  bool out_of_order = false;
  {
    const std::lock_guard lock(g_mutex);
    const auto it = std::find_if(g_stack.begin(), g_stack.end(),
                                 [this](const frame& f) { return f.capture == this; });
    out_of_order = it != g_stack.end() && it + 1 != g_stack.end();
    if (it != g_stack.end()) {
      g_stack.erase(it);
    }
    if (g_stack.empty()) {
      set_contract_handler(g_previous_handler);
      set_refcount_warning_sink(g_previous_sink);
    }
  }
  refcount_reset_warnings();
  if (out_of_order) {
    ADD_FAILURE_AT(test_file(), test_line())
        << "a contract_capture was destroyed while a capture nested in it was still alive";
  }
}

std::vector<captured_violation> contract_capture::violations() const {
  const std::lock_guard lock(g_mutex);
  return state_->violations;
}

std::vector<std::string> contract_capture::messages() const {
  const std::lock_guard lock(g_mutex);
  std::vector<std::string> out;
  out.reserve(state_->violations.size());
  for (const captured_violation& v : state_->violations) {
    out.push_back(v.message);
  }
  return out;
}

std::vector<captured_violation> contract_capture::unmatched_violations() const {
  const std::lock_guard lock(g_mutex);
  std::vector<captured_violation> out;
  for (const captured_violation& v : state_->violations) {
    if (!v.matched) {
      out.push_back(v);
    }
  }
  return out;
}

std::size_t contract_capture::count(contract_kind kind) const {
  const std::lock_guard lock(g_mutex);
  return static_cast<std::size_t>(
      std::count_if(state_->violations.begin(), state_->violations.end(),
                    [kind](const captured_violation& v) { return v.kind == kind; }));
}

std::vector<contract_capture::captured_warning> contract_capture::refcount_warnings() const {
  const std::lock_guard lock(g_mutex);
  return state_->warnings;
}

void contract_capture::clear() {
  const std::lock_guard lock(g_mutex);
  state_->violations.clear();
  state_->warnings.clear();
  ++state_->clears;
}

namespace detail {

violation_probe::violation_probe(const char* statement, violation_spec spec)
    : statement_(statement), spec_(std::move(spec)) {
  const std::lock_guard lock(g_mutex);
  if (!g_stack.empty()) {
    capture_ = g_stack.back().capture;
    start_ = g_stack.back().record->violations.size();
    clears_ = g_stack.back().record->clears;
  }
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
    const auto it = std::find_if(g_stack.begin(), g_stack.end(),
                                 [this](const frame& f) { return f.capture == capture_; });
    active = capture_ != nullptr && it != g_stack.end();
    if (active) {
      std::vector<captured_violation>& record = it->record->violations;
      const std::size_t from = it->record->clears == clears_ ? std::min(start_, record.size()) : 0;
      for (std::size_t i = from; i < record.size(); ++i) {
        captured_violation& v = record[i];
        seen.push_back(fmt::format("[{}] {}", to_string(v.kind), v.message));
        if (spec_.matches(v)) {
          v.matched = true;
          matched = true;
        }
      }
    }
  }
  if (matched && active && threw_.empty()) {
    return true;
  }
  failure_ = fmt::format("Expected: {}\n  reports a contract violation {}.\n  Actual: ", statement_,
                         spec_.describe());
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
  end_kernel(test_file(), test_line());
}

void kernel_test::remake(kernel_config config, std::source_location where) {
  end_kernel(where.file_name(), static_cast<int>(where.line()));
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

void kernel_test::end_kernel(const char* file, int line) {
  if (!kernel_) {
    return;
  }
  kernel& kern = *kernel_;
  const ::testing::ScopedTrace trace(file, line,
                                     "the end-of-test invariants of kernel '" + kern.name() + "'");
  body_scope_.reset();
  if (body_task_ != nullptr) {
    retire(body_task_, std::source_location::current());
    body_task_ = nullptr;
  }
  std::vector<leaked_task> leaks;
  try {
    kern.rcu().rcu_barrier();
    leaks = kern.shutdown();
  } catch (const contract_error& e) {
    ADD_FAILURE_AT(file, line) << "teardown: " << e.what();
  }
  for (const leaked_task& l : leaks) {
    ADD_FAILURE_AT(file, line) << "leaked task '" << l.comm << "' pid " << l.pid << " (id " << l.id
                               << "): usage=" << l.usage << " rcu_users=" << l.rcu_users
                               << (l.holders.empty() ? "" : "; ") << l.holders;
  }
  const kernel_stats stats = kern.stats();
  if (stats.forked != stats.freed + stats.torn_down) {
    ADD_FAILURE_AT(file, line) << "every forked task freed exactly once (or torn down as a leak "
                                  "the test inspected): forked "
                               << stats.forked << ", freed " << stats.freed << ", torn down "
                               << stats.torn_down;
  }
  if (kern.rcu().stats().pending() != 0U) {
    ADD_FAILURE_AT(file, line) << "nothing left pending: " << kern.rcu().stats().pending()
                               << " RCU callback(s) pending";
  }
  if (stats.torn_down == 0) {
    if (stats.rcu_users_zero != stats.forked) {
      ADD_FAILURE_AT(file, line) << "rcu_users reached 0 once per task: " << stats.rcu_users_zero
                                 << " times for " << stats.forked << " task(s)";
    }
    if (stats.gp_elapsed != stats.forked) {
      ADD_FAILURE_AT(file, line) << "one grace period per task: " << stats.gp_elapsed << " for "
                                 << stats.forked << " task(s)";
    }
    if (kern.init_pid_ns().nr_hashed() != 0U) {
      ADD_FAILURE_AT(file, line) << "every task unhashed: " << kern.init_pid_ns().nr_hashed()
                                 << " still hashed";
    }
    if (kern.init_pid_ns().nr_allocated() != 0U) {
      ADD_FAILURE_AT(file, line) << "every pid number given back: "
                                 << kern.init_pid_ns().nr_allocated() << " still allocated";
    }
  }
  // Destroyed before the violations are checked: what its destruction reports (a
  // registration still alive with its RCU domain, say) is checked too.
  kernel_.reset();
  // Every violation must have been expected, and every declared one must have happened.
  const std::vector<captured_violation> seen = capture_.violations();
  for (const violation_spec& expected : expected_violations_) {
    if (std::none_of(seen.begin(), seen.end(),
                     [&](const captured_violation& v) { return expected.matches(v); })) {
      ADD_FAILURE_AT(file, line) << "expected a violation " << expected.describe()
                                 << "; none was reported";
    }
  }
  for (const captured_violation& v : capture_.unmatched_violations()) {
    const bool declared =
        std::any_of(expected_violations_.begin(), expected_violations_.end(),
                    [&](const violation_spec& expected) { return expected.matches(v); });
    const bool is_leak_report = v.kind == contract_kind::leak;  // already reported above
    if (!declared && !is_leak_report) {
      ADD_FAILURE_AT(file, line) << "unexpected contract violation: "
                                 << ::testing::PrintToString(v);
    }
  }
  const std::vector<contract_capture::captured_warning> warnings = capture_.refcount_warnings();
  for (const auto& w : warnings) {
    if (std::find(expected_warnings_.begin(), expected_warnings_.end(), w.warning.type) ==
        expected_warnings_.end()) {
      ADD_FAILURE_AT(file, line) << "unexpected refcount warning: "
                                 << ::testing::PrintToString(w.warning);
    }
  }
  for (const refcount_saturation_type type : expected_warnings_) {
    if (std::none_of(warnings.begin(), warnings.end(),
                     [type](const auto& w) { return w.warning.type == type; })) {
      ADD_FAILURE_AT(file, line) << "expected a refcount warning \""
                                 << refcount_warning_message(type) << "\"; none was raised";
    }
  }
  capture_.clear();
  refcount_reset_warnings();
  expected_violations_.clear();
  expected_warnings_.clear();
}

void kernel_test::expect_violation(violation_spec spec) {
  expected_violations_.push_back(std::move(spec));
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

}  // namespace tasklife::testkit

namespace tasklife {

void PrintTo(const task_struct& t, std::ostream* os) {
  *os << testkit::describe_task(t);
  if (t.traced.load(std::memory_order_relaxed)) {
    for (const task_event& e : task_kernel(&t).history(&t)) {
      *os << "\n    " << fmt::format("{}", e);
    }
  }
}

void PrintTo(const task_event& e, std::ostream* os) {
  *os << fmt::format("{}", e);
}

void PrintTo(task_event_kind k, std::ostream* os) {
  *os << to_string(k);
}

void PrintTo(const diagnostic_object& o, std::ostream* os) {
  if (o.is_task()) {
    *os << fmt::format("task '{}' pid {} (id {})", o.comm, o.pid, o.task_id);
  } else if (!o.map.empty()) {
    *os << "map '" << o.map << "'";
  } else if (o.address != nullptr) {
    *os << fmt::format("object at {}", o.address);
  } else {
    *os << "no object";
  }
  if (!o.kernel.empty()) {
    *os << " of '" << o.kernel << "'";
  }
}

void PrintTo(contract_kind k, std::ostream* os) {
  *os << to_string(k);
}

void PrintTo(const contract_violation& v, std::ostream* os) {
  *os << to_string(v.kind) << " in " << v.component << "/" << v.operation << " about ";
  PrintTo(v.object, os);
  *os << ": " << v.message << " (" << v.where.file_name() << ":" << v.where.line() << ")";
}

void PrintTo(const refcount_warning& w, std::ostream* os) {
  *os << w.message;
  if (w.object.is_task()) {
    *os << " on " << w.counter << " of ";
    PrintTo(w.object, os);
  }
  *os << " (" << w.where.file_name() << ":" << w.where.line() << ")";
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

namespace explore {
void PrintTo(const report& r, std::ostream* os) {
  *os << r.summary();
}
void PrintTo(failure_kind k, std::ostream* os) {
  *os << to_string(k);
}
}  // namespace explore

namespace testkit {
void PrintTo(const captured_violation& v, std::ostream* os) {
  *os << to_string(v.kind) << " in " << v.component << "/" << v.operation << " about ";
  tasklife::PrintTo(v.object, os);
  *os << ": " << v.message << " (" << v.where.file_name() << ":" << v.where.line() << ")";
  if (v.earlier) {
    *os << "; earlier at " << v.earlier->file_name() << ":" << v.earlier->line();
  }
}
}  // namespace testkit

}  // namespace tasklife
