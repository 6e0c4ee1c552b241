// Reading a scenario file (scenario.hpp): toml++ parses the TOML, this file
// checks what it says, and every mistake becomes one parse_error naming the
// file, the line, the column and what was expected.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <fmt/format.h>

#include "scenario.hpp"

namespace tasklife::scenario {

parse_error::parse_error(source_pos pos, const std::string& message)
    : std::runtime_error(pos.line > 0
                             ? fmt::format("{}:{}:{}: {}", pos.file, pos.line, pos.column, message)
                             : fmt::format("{}: {}", pos.file, message)),  // the file as a whole
      pos_(std::move(pos)) {}

std::string_view to_string(mode m) noexcept {
  return m == mode::run ? "run" : "explore";
}

namespace {

// Levenshtein distance, for "did you mean".
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0U : 1U)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string one_of(const std::vector<std::string_view>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    out += i == 0 ? "" : (i + 1 == names.size() ? " or " : ", ");
    out += names[i];
  }
  return out;
}

std::string suggestion(std::string_view got, const std::vector<std::string_view>& names) {
  std::string_view best;
  std::size_t best_d = 3;  // at most two edits away
  for (std::string_view n : names) {
    const std::size_t d = distance(got, n);
    if (d < best_d) {
      best_d = d;
      best = n;
    }
  }
  return best.empty() ? std::string{} : fmt::format(" (did you mean '{}'?)", best);
}

std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date or time";
  }
}

class reader {
 public:
  explicit reader(std::string file) : file_(std::move(file)) {}

  source_pos pos(const toml::source_region& r) const {
    return {file_, static_cast<int>(r.begin.line), static_cast<int>(r.begin.column)};
  }
  source_pos pos(const toml::node& n) const { return pos(n.source()); }
  [[noreturn]] void fail(const source_pos& p, const std::string& message) const {
    throw parse_error(p, message);
  }
  [[noreturn]] void fail(const toml::node& n, const std::string& message) const {
    fail(pos(n), message);
  }

  // Every key of `t` must be one of `allowed`.
  void only_keys(const toml::table& t, std::string_view where,
                 const std::vector<std::string_view>& allowed) const {
    for (const auto& [k, v] : t) {
      if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end()) {
        fail(pos(k.source()), fmt::format("unknown key '{}' in {}{}; expected {}", k.str(), where,
                                          suggestion(k.str(), allowed), one_of(allowed)));
      }
    }
  }

  std::optional<std::string> str(const toml::table& t, std::string_view key,
                                 std::string_view where) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      return std::nullopt;
    }
    if (!n->is_string()) {
      fail(*n, fmt::format("'{}' in {} must be a string, not {}", key, where, type_name(*n)));
    }
    return std::string(n->as_string()->get());
  }
  std::string need_str(const toml::table& t, std::string_view key, std::string_view where) const {
    auto v = str(t, key, where);
    if (!v) {
      fail(pos(t), fmt::format("{} needs '{}' (a string)", where, key));
    }
    if (v->empty()) {
      fail(*t.get(key), fmt::format("'{}' in {} must not be empty", key, where));
    }
    return *v;
  }
  std::optional<std::int64_t> integer(const toml::table& t, std::string_view key,
                                      std::string_view where, std::int64_t lo,
                                      std::int64_t hi) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      return std::nullopt;
    }
    if (!n->is_integer()) {
      fail(*n, fmt::format("'{}' in {} must be an integer, not {}", key, where, type_name(*n)));
    }
    const std::int64_t v = n->as_integer()->get();
    if (v < lo || v > hi) {
      fail(*n, fmt::format("'{}' in {} must be between {} and {}, not {}", key, where, lo, hi, v));
    }
    return v;
  }
  std::optional<bool> boolean(const toml::table& t, std::string_view key,
                              std::string_view where) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      return std::nullopt;
    }
    if (!n->is_boolean()) {
      fail(*n, fmt::format("'{}' in {} must be true or false, not {}", key, where, type_name(*n)));
    }
    return n->as_boolean()->get();
  }
  // A string or an array of strings.
  std::optional<std::vector<std::pair<std::string, source_pos>>> strings(
      const toml::table& t, std::string_view key, std::string_view where) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      return std::nullopt;
    }
    std::vector<std::pair<std::string, source_pos>> out;
    if (n->is_string()) {
      out.emplace_back(std::string(n->as_string()->get()), pos(*n));
      return out;
    }
    if (!n->is_array()) {
      fail(*n, fmt::format("'{}' in {} must be a string or an array of strings, not {}", key, where,
                           type_name(*n)));
    }
    for (const toml::node& e : *n->as_array()) {
      if (!e.is_string()) {
        fail(e, fmt::format("'{}' in {} must list strings, not {}", key, where, type_name(e)));
      }
      out.emplace_back(std::string(e.as_string()->get()), pos(e));
    }
    return out;
  }
  const toml::table* table(const toml::table& t, std::string_view key) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      return nullptr;
    }
    if (!n->is_table()) {
      fail(*n, fmt::format("'{}' must be a table ([{}]), not {}", key, key, type_name(*n)));
    }
    return n->as_table();
  }
  // [[key]]: an array of tables.
  std::vector<const toml::table*> tables(const toml::table& t, std::string_view key) const {
    std::vector<const toml::table*> out;
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      return out;
    }
    if (!n->is_array_of_tables()) {
      fail(*n, fmt::format("'{}' must be an array of tables ([[{}]]), not {}", key, key,
                           type_name(*n)));
    }
    for (const toml::node& e : *n->as_array()) {
      out.push_back(e.as_table());
    }
    return out;
  }

  semantics_profile profile(const std::string& name, const source_pos& p) const {
    std::vector<std::string_view> names;
    for (const profile_info& i : semantics_profiles) {
      if (i.name == name) {
        return i.profile;
      }
      names.push_back(i.name);
    }
    fail(p, fmt::format("unknown profile '{}'{}; expected {}", name, suggestion(name, names),
                        one_of(names)));
  }
  final_put_mode final_put(const std::string& name, const source_pos& p) const {
    if (name == "immediate") {
      return final_put_mode::immediate;
    }
    if (name == "deferred") {
      return final_put_mode::deferred;
    }
    fail(p, fmt::format("unknown final_put mode '{}'; expected immediate or deferred", name));
  }

 private:
  std::string file_;
};

// The errors a step may be expected to fail with (`error`): the kernel's errno
// names, as the library returns them negated.
struct errno_name {
  std::string_view name;
  int value;
};
constexpr errno_name errno_names[] = {
    {"EAGAIN", EAGAIN}, {"ENOMEM", ENOMEM}, {"ENOSPC", ENOSPC}, {"E2BIG", E2BIG},
    {"EEXIST", EEXIST}, {"ENOENT", ENOENT}, {"ECHILD", ECHILD}, {"EINVAL", EINVAL},
};

}  // namespace

std::string_view errno_to_string(int error) noexcept {
  for (const errno_name& e : errno_names) {
    if (e.value == error || -e.value == error) {
      return e.name;
    }
  }
  return "an unknown error";
}

namespace {

// `error = "EAGAIN"`: the errno the step must fail with (0: none given).
int error_field(const reader& r, const toml::table& t, std::string_view where) {
  const auto e = r.str(t, "error", where);
  if (!e) {
    return 0;
  }
  std::vector<std::string_view> names;
  for (const errno_name& en : errno_names) {
    if (en.name == *e) {
      return en.value;
    }
    names.push_back(en.name);
  }
  r.fail(*t.get("error"), fmt::format("unknown error '{}' in {}{}; expected {}", *e, where,
                                      suggestion(*e, names), one_of(names)));
}

std::vector<std::string_view> step_names() {
  std::vector<std::string_view> out;
  for (const step_info& i : step_kinds) {
    out.push_back(i.name);
  }
  return out;
}

std::string fields_of(const step_info& i) {
  std::vector<std::string_view> names;
  if (i.target == target::task_or_ref) {
    names.push_back("task or ref");
  } else if (i.target == target::task) {
    names.push_back("task");
  } else if (i.target == target::ref) {
    names.push_back("ref");
  }
  for (const field_info& f : field_kinds) {
    if ((i.required & bit(f.f)) != 0) {
      names.push_back(f.name);
    }
  }
  return names.empty() ? std::string("no fields") : one_of(names);
}

// A task's pid namespace is its parent's, or the one it creates (CLONE_NEWPID):
// nothing forks a task into a declared [[namespace]].
constexpr std::string_view no_ns_without_new_pid_ns =
    "'ns' names the namespace a fork creates and needs new_pid_ns = true; a task is "
    "placed in its parent's namespace (a [[namespace]] holds no task; look up in it with "
    "find_task_by_pid_ns)";

step read_step(const reader& r, const toml::node& n, const std::vector<semantics_profile>& run) {
  if (!n.is_table()) {
    r.fail(n, fmt::format("a step must be an inline table such as {{ op = \"retire\", task = "
                          "\"victim\" }}, not {}",
                          type_name(n)));
  }
  const toml::table& t = *n.as_table();
  step s;
  s.pos = r.pos(n);
  const toml::node* op = t.get("op");
  if (op == nullptr) {
    r.fail(n, "a step needs 'op' (the step's kind, e.g. op = \"retire\")");
  }
  if (!op->is_string()) {
    r.fail(*op,
           fmt::format("'op' must be a string naming the step's kind, not {}", type_name(*op)));
  }
  const std::string name(op->as_string()->get());
  const step_info* si = nullptr;
  for (const step_info& i : step_kinds) {
    if (i.name == name) {
      si = &i;
    }
  }
  if (si == nullptr) {
    const auto names = step_names();
    r.fail(*op, fmt::format("unknown step '{}'{}; expected one of: {}", name,
                            suggestion(name, names), one_of(names)));
  }
  s.kind = si->kind;
  const std::string where = fmt::format("step '{}'", si->name);
  std::uint32_t allowed = si->required | si->optional | conditions;
  if (si->target == target::task_or_ref) {
    allowed |= bit(field::task) | bit(field::ref);
  } else if (si->target == target::task) {
    allowed |= bit(field::task);
  } else if (si->target == target::ref) {
    allowed |= bit(field::ref);
  }
  std::vector<std::string_view> allowed_names{"op"};
  for (const field_info& f : field_kinds) {
    if ((allowed & bit(f.f)) != 0) {
      allowed_names.push_back(f.name);
    }
  }
  r.only_keys(t, where, allowed_names);
  // Types, from the field table.
  for (const field_info& f : field_kinds) {
    const toml::node* v = t.get(f.name);
    if (v == nullptr) {
      continue;
    }
    const bool ok = (f.type == value_type::string && v->is_string()) ||
                    (f.type == value_type::integer && v->is_integer()) ||
                    (f.type == value_type::boolean && v->is_boolean()) ||
                    (f.type == value_type::string_list && (v->is_array() || v->is_string()));
    if (!ok) {
      static constexpr std::string_view expected[] = {"a string", "an integer", "true or false",
                                                      "an array of strings"};
      r.fail(*v, fmt::format("'{}' in {} must be {}, not {} ({})", f.name, where,
                             expected[static_cast<std::size_t>(f.type)], type_name(*v), f.meaning));
    }
  }
  auto get = [&](std::string_view key) { return r.str(t, key, where).value_or(""); };
  s.task = get("task");
  s.ref = get("ref");
  s.into = get("into");
  s.elem = get("elem");
  s.map = get("map");
  s.pid_of = get("pid_of");
  s.ns = get("ns");
  s.parent = get("parent");
  s.comm = get("comm");
  s.counter = get("counter");
  s.name = get("name");
  s.if_set = get("if_set");
  s.unless_set = get("unless_set");
  s.error = error_field(r, t, where);
  s.key = r.integer(t, "key", where, 0, 1'000'000'000);
  s.pid = r.integer(t, "pid", where, 0, PID_MAX_LIMIT);
  s.usage = r.integer(t, "usage", where, 0, 0xffff);
  s.rcu_users = r.integer(t, "rcu_users", where, 0, 0xffff);
  s.freed = r.boolean(t, "freed", where);
  s.null = r.boolean(t, "null", where);
  s.thread = r.boolean(t, "thread", where).value_or(false);
  s.autoreap = r.boolean(t, "autoreap", where).value_or(false);
  s.new_pid_ns = r.boolean(t, "new_pid_ns", where).value_or(false);
  if (auto ps = r.strings(t, "profiles", where)) {
    for (const auto& [p, at] : *ps) {
      const semantics_profile prof = r.profile(p, at);
      if (std::find(run.begin(), run.end(), prof) == run.end()) {
        r.fail(at, fmt::format("step runs only under profile '{}', which the scenario does not "
                               "run ([kernel] profiles)",
                               p));
      }
      s.profiles.push_back(prof);
    }
  }
  if (auto f = r.str(t, "final_put", where)) {
    s.final_put = r.final_put(*f, r.pos(*t.get("final_put")));
  }
  // The target: exactly one of task and ref where either will do.
  const bool has_task = t.contains("task");
  const bool has_ref = t.contains("ref");
  if (si->target == target::task_or_ref && has_task == has_ref) {
    r.fail(n, fmt::format("{} needs exactly one of 'task' (a declared task) and 'ref' (a "
                          "variable); it has {}",
                          where, has_task ? "both" : "neither"));
  }
  if (si->target == target::task && !has_task) {
    r.fail(n, fmt::format("{} needs 'task' (a declared task)", where));
  }
  if (si->target == target::ref && !has_ref) {
    r.fail(n, fmt::format("{} needs 'ref' (a variable holding a task pointer)", where));
  }
  for (const field_info& f : field_kinds) {
    if ((si->required & bit(f.f)) != 0 && !t.contains(f.name)) {
      r.fail(n, fmt::format("{} needs '{}' ({}); its fields: {}", where, f.name, f.meaning,
                            fields_of(*si)));
    }
  }
  // Per-kind rules.
  if ((s.kind == step_kind::find_task_by_pid_ns || s.kind == step_kind::bpf_task_from_pid ||
       s.kind == step_kind::bpf_task_from_vpid) &&
      (s.pid_of.empty() == !s.pid.has_value())) {
    r.fail(n, fmt::format("{} needs exactly one of 'pid_of' (a task) and 'pid' (a number)", where));
  }
  if (s.kind == step_kind::refcount_inc_not_zero && s.counter != "usage" &&
      s.counter != "rcu_users") {
    r.fail(*t.get("counter"),
           fmt::format("'counter' in {} must be \"usage\" or \"rcu_users\", not \"{}\"", where,
                       s.counter));
  }
  if (s.kind == step_kind::fork && s.new_pid_ns && s.ns.empty()) {
    r.fail(n, "a fork with new_pid_ns = true needs 'ns': the name of the namespace it creates");
  }
  if (s.kind == step_kind::fork && !s.new_pid_ns && !s.ns.empty()) {
    r.fail(*t.get("ns"), std::string(no_ns_without_new_pid_ns));
  }
  if (s.kind == step_kind::expect) {
    if (s.freed == true && (s.usage || s.rcu_users)) {
      r.fail(n,
             "impossible expectation: a freed task has no counters left to check (freed = "
             "true with usage or rcu_users)");
    }
    if (s.null.has_value() && s.ref.empty()) {
      r.fail(n, "'null' checks a variable: give 'ref', not 'task'");
    }
    if (s.null == true && (s.usage || s.rcu_users || s.freed || !s.comm.empty() || s.pid)) {
      r.fail(n, "impossible expectation: a NULL pointer has no task to check");
    }
    if (s.pid && s.pid == 0 && s.ns.empty()) {
      // 0 is a legitimate answer in a namespace the task is not visible in.
    }
    if (!s.usage && !s.rcu_users && !s.freed && !s.null && s.comm.empty() && !s.pid) {
      r.fail(n,
             "an expect step needs something to check: usage, rcu_users, freed, null, comm or "
             "pid");
    }
  }
  return s;
}

thread_spec read_thread(const reader& r, const toml::table& t, std::string_view where, bool named,
                        const std::vector<semantics_profile>& run) {
  thread_spec th;
  th.pos = r.pos(t);
  if (named) {
    r.only_keys(t, where, {"name", "as", "steps"});
    th.name = r.need_str(t, "name", where);
  } else {
    r.only_keys(t, where, {"as", "steps"});
    th.name = std::string(where.substr(1, where.size() - 2));
  }
  th.as = r.str(t, "as", where).value_or("");
  const toml::node* steps = t.get("steps");
  if (steps == nullptr) {
    r.fail(t, fmt::format("{} needs 'steps' (an array of steps)", where));
  }
  if (!steps->is_array()) {
    r.fail(*steps, fmt::format("'steps' in {} must be an array of steps, not {}", where,
                               type_name(*steps)));
  }
  for (const toml::node& n : *steps->as_array()) {
    th.steps.push_back(read_step(r, n, run));
  }
  return th;
}

// The scenario's name becomes file names (--out DIR/NAME.json): letters, digits,
// '_', '-' and '.', not starting with '.', so that it names a file inside DIR.
void check_name(const reader& r, const toml::node& at, const std::string& name) {
  const bool ok_chars = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
  if (!ok_chars || name.front() == '.' || name.size() > max_name_length) {
    r.fail(at, fmt::format("'name' must be at most {} letters, digits, '_', '-' or '.', not "
                           "starting with '.' (it names the output files)",
                           max_name_length));
  }
}

// Two expectations of one mode that cover a variant in common must agree.
void check_consistent(const reader& r, const std::vector<expectation>& before,
                      const expectation& e) {
  auto overlap = [](const auto& a, const auto& b) {
    return a.empty() || b.empty() || std::any_of(a.begin(), a.end(), [&](const auto& x) {
             return std::find(b.begin(), b.end(), x) != b.end();
           });
  };
  for (const expectation& o : before) {
    if (o.when != e.when || !overlap(o.profiles, e.profiles) ||
        !overlap(o.final_put, e.final_put)) {
      continue;
    }
    if (o.fails != e.fails || (o.failure && e.failure && *o.failure != *e.failure)) {
      r.fail(e.pos,
             fmt::format(
                 "contradictory expectations: the one at line {} says {} for a variant "
                 "this one covers too (restrict them with profiles or final_put)",
                 o.pos.line,
                 o.fails ? fmt::format("the {} fails{}", to_string(o.when),
                                       o.failure
                                           ? fmt::format(" with {}", explore::to_string(*o.failure))
                                           : std::string())
                         : fmt::format("the {} is clean", to_string(o.when))));
    }
  }
}

// Cross-references: every name used is declared, every variable is written by
// some step and used as what it holds; RCU sections balance; expectations can hold.
void check_references(const reader& r, scenario& s) {
  std::set<std::string> tasks;
  std::set<std::string> namespaces{"root"};
  std::set<std::string> maps;
  // The nesting level of each namespace (the root's is 0) and of each task's: the
  // kernel refuses a level past MAX_PID_NS_LEVEL (create_pid_namespace, -ENOSPC).
  std::map<std::string, unsigned> ns_level{{"root", 0}};
  std::map<std::string, unsigned> task_level;
  // expects_enospc: the fork says it fails so (error = "ENOSPC"), which is then
  // what the file asks for, not a mistake in it.
  auto nest = [&](const std::string& ns, unsigned level, const source_pos& p,
                  bool expects_enospc = false) {
    if (level > MAX_PID_NS_LEVEL && !expects_enospc) {
      r.fail(p, fmt::format("namespace '{}' would be nested {} deep: the kernel allows {} "
                            "(MAX_PID_NS_LEVEL; the fork would fail with ENOSPC)",
                            ns, level, MAX_PID_NS_LEVEL));
    }
    ns_level[ns] = level;
    if (ns_level.size() > max_namespaces + 1) {
      r.fail(p, fmt::format("at most {} namespaces", max_namespaces));
    }
  };
  for (const namespace_spec& n : s.namespaces) {
    if (!namespaces.insert(n.name).second) {
      r.fail(n.pos, fmt::format("namespace '{}' is declared twice", n.name));
    }
    if (!n.parent.empty() && (n.parent == n.name || namespaces.count(n.parent) == 0)) {
      r.fail(n.pos, fmt::format("namespace '{}': unknown parent '{}' (declare it above)", n.name,
                                n.parent));
    }
    nest(n.name, ns_level.at(n.parent.empty() ? "root" : n.parent) + 1, n.pos);
  }
  // A task (declared or forked) in its parent's namespace, or one level below.
  // A parent not placed yet (forked by a later step or thread) counts as level 0:
  // the check is a lower bound, and the fork itself reports ENOSPC at run time.
  auto place = [&](const std::string& name, const std::string& parent, bool new_ns,
                   const std::string& ns, const source_pos& p, int error) {
    auto it = task_level.find(parent);
    const unsigned level = it == task_level.end() ? 0 : it->second;
    task_level[name] = new_ns ? level + 1 : level;
    if (new_ns) {
      nest(ns, level + 1, p, error == ENOSPC);
    }
  };
  for (const task_spec& t : s.tasks) {
    if (!t.parent.empty() && tasks.count(t.parent) == 0) {
      r.fail(t.pos, fmt::format("task '{}': unknown parent '{}' (declare it above{})", t.name,
                                t.parent, t.parent == t.name ? ": a task cannot be its own" : ""));
    }
    if (!tasks.insert(t.name).second) {
      r.fail(t.pos, fmt::format("task '{}' is declared twice", t.name));
    }
    if (t.new_pid_ns && !namespaces.insert(t.ns).second) {
      r.fail(t.pos,
             fmt::format("task '{}' creates namespace '{}', which exists already", t.name, t.ns));
    }
    place(t.name, t.parent, t.new_pid_ns, t.ns, t.pos, t.error);
  }
  for (const map_spec& m : s.maps) {
    if (!maps.insert(m.name).second) {
      r.fail(m.pos, fmt::format("map '{}' is declared twice", m.name));
    }
  }
  std::vector<thread_spec*> all{&s.setup};
  for (thread_spec& t : s.threads) {
    all.push_back(&t);
  }
  all.push_back(&s.teardown);
  // Variables: what writes them decides what they hold.
  std::map<std::string, bool> is_elem;
  for (thread_spec* th : all) {
    for (const step& st : th->steps) {
      if (st.kind == step_kind::fork) {
        if (!tasks.insert(st.task).second) {
          r.fail(st.pos, fmt::format("fork: a task named '{}' exists already", st.task));
        }
        if (st.new_pid_ns && !namespaces.insert(st.ns).second) {
          r.fail(st.pos, fmt::format("fork creates namespace '{}', which exists already", st.ns));
        }
        if (st.parent == st.task) {
          r.fail(st.pos, fmt::format("fork: task '{}' cannot be its own parent", st.task));
        }
        place(st.task, st.parent, st.new_pid_ns, st.ns, st.pos, st.error);
      }
      if (st.into.empty()) {
        continue;
      }
      const bool elem = st.kind == step_kind::map_lookup;
      auto [it, fresh] = is_elem.emplace(st.into, elem);
      if (!fresh && it->second != elem) {
        r.fail(st.pos, fmt::format("wrong type: variable '{}' holds {} elsewhere, but step '{}' "
                                   "writes {} into it",
                                   st.into, it->second ? "a map element" : "a task pointer",
                                   info(st.kind).name, elem ? "a map element" : "a task pointer"));
      }
      if (tasks.count(st.into) != 0) {
        r.fail(st.pos, fmt::format("variable '{}' has the name of a task: pick another", st.into));
      }
    }
  }
  auto need_task = [&](const std::string& name, const source_pos& p, std::string_view what) {
    if (!name.empty() && tasks.count(name) == 0) {
      std::vector<std::string_view> names(tasks.begin(), tasks.end());
      r.fail(p, fmt::format("{}: unknown task '{}'{}", what, name, suggestion(name, names)));
    }
  };
  auto need_var = [&](const std::string& name, bool elem, const source_pos& p,
                      std::string_view what) {
    if (name.empty()) {
      return;
    }
    auto it = is_elem.find(name);
    if (it == is_elem.end()) {
      r.fail(p,
             fmt::format("{}: unknown variable '{}' (no step writes it with 'into')", what, name));
    }
    if (it->second != elem) {
      r.fail(p, fmt::format("wrong type: {} needs {} in '{}', which holds {}", what,
                            elem ? "a map element" : "a task pointer", name,
                            it->second ? "a map element" : "a task pointer"));
    }
  };
  std::size_t barrier_threads = 0;
  for (thread_spec* th : all) {
    need_task(th->as, th->pos, fmt::format("thread '{}' runs as", th->name));
    int depth = 0;
    bool barrier = false;
    for (const step& st : th->steps) {
      const std::string what = fmt::format("step '{}'", info(st.kind).name);
      if (st.kind != step_kind::fork) {
        need_task(st.task, st.pos, what);
      }
      need_task(st.pid_of, st.pos, what);
      need_task(st.parent, st.pos, what);
      need_var(st.ref, false, st.pos, what);
      need_var(st.elem, true, st.pos, what);
      for (const std::string* c : {&st.if_set, &st.unless_set}) {
        if (!c->empty() && is_elem.count(*c) == 0) {
          r.fail(st.pos, fmt::format("{}: unknown variable '{}' in a condition (no step writes "
                                     "it with 'into')",
                                     what, *c));
        }
      }
      if (info(st.kind).kfunc && th->as.empty()) {
        r.fail(st.pos, fmt::format("{} calls a kfunc, which runs as the thread's current task: "
                                   "add as = \"...\" (a task) to {}",
                                   what,
                                   th == &s.setup      ? std::string("[setup]")
                                   : th == &s.teardown ? std::string("[teardown]")
                                                       : fmt::format("thread '{}'", th->name)));
      }
      if (!st.ns.empty() && namespaces.count(st.ns) == 0 && st.kind != step_kind::fork) {
        r.fail(st.pos, fmt::format("{}: unknown namespace '{}'", what, st.ns));
      }
      if (!st.map.empty() && maps.count(st.map) == 0) {
        r.fail(st.pos, fmt::format("{}: unknown map '{}' (declare it in [[map]])", what, st.map));
      }
      const bool lock =
          st.kind == step_kind::rcu_read_lock || st.kind == step_kind::bpf_rcu_read_lock;
      const bool unlock =
          st.kind == step_kind::rcu_read_unlock || st.kind == step_kind::bpf_rcu_read_unlock;
      if ((lock || unlock) &&
          (!st.if_set.empty() || !st.unless_set.empty() || !st.profiles.empty() || st.final_put)) {
        r.fail(st.pos,
               fmt::format("{} cannot be conditional: sections must balance on every path", what));
      }
      depth += lock ? 1 : 0;
      if (unlock && --depth < 0) {
        r.fail(st.pos,
               fmt::format("{} outside any RCU read-side section of thread '{}'", what, th->name));
      }
      if (info(st.kind).waits && depth > 0) {
        r.fail(st.pos, fmt::format("{} inside an RCU read-side section would wait for itself "
                                   "forever",
                                   what));
      }
      barrier = barrier || st.kind == step_kind::rcu_barrier;
    }
    if (depth != 0) {
      r.fail(th->pos, fmt::format("thread '{}' ends inside an RCU read-side section (add "
                                  "rcu_read_unlock)",
                                  th->name));
    }
    if (barrier && th != &s.setup && th != &s.teardown) {
      ++barrier_threads;
    }
  }
  if (barrier_threads > 1) {
    r.fail(s.threads.front().pos,
           "rcu_barrier in more than one simulated thread: two barriers "
           "at once are more than the explorer can run");
  }
  // The run order names threads, each at most as often as it has steps.
  std::map<std::string, std::size_t> left;
  for (const thread_spec& t : s.threads) {
    if (!left.emplace(t.name, t.steps.size()).second) {
      r.fail(t.pos, fmt::format("thread '{}' is declared twice", t.name));
    }
  }
  for (std::size_t i = 0; i < s.run_order.size(); ++i) {
    const std::string& name = s.run_order[i];
    auto it = left.find(name);
    if (it == left.end()) {
      std::vector<std::string_view> names;
      for (const thread_spec& t : s.threads) {
        names.push_back(t.name);
      }
      r.fail(s.run_order_pos[i],
             fmt::format("[run] order: unknown thread '{}'{}", name, suggestion(name, names)));
    }
    if (it->second == 0) {
      r.fail(s.run_order_pos[i],
             fmt::format("[run] order: thread '{}' has no step left to run there", name));
    }
    --it->second;
  }
}

}  // namespace

scenario parse(std::string_view text, std::string_view file) {
  const reader r{std::string(file)};
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw parse_error({std::string(file), static_cast<int>(b.line), static_cast<int>(b.column)},
                      fmt::format("TOML syntax error: {}", e.description()));
  }
  scenario s;
  s.file = std::string(file);
  r.only_keys(root, "the scenario",
              {"name", "title", "shows", "commit", "kernel", "namespace", "task", "map", "setup",
               "thread", "run", "teardown", "explore", "expect"});
  s.name = r.need_str(root, "name", "the scenario");
  check_name(r, *root.get("name"), s.name);
  s.title = r.str(root, "title", "the scenario").value_or(s.name);
  s.shows = r.str(root, "shows", "the scenario").value_or("");
  s.commit = r.str(root, "commit", "the scenario").value_or("");

  if (const toml::table* k = r.table(root, "kernel")) {
    r.only_keys(*k, "[kernel]", {"profiles", "final_put", "pid_max", "reserved_pids"});
    if (auto ps = r.strings(*k, "profiles", "[kernel]")) {
      s.profiles.clear();
      for (const auto& [p, at] : *ps) {
        const semantics_profile prof = r.profile(p, at);
        if (std::find(s.profiles.begin(), s.profiles.end(), prof) != s.profiles.end()) {
          r.fail(at, fmt::format("profile '{}' is listed twice", p));
        }
        s.profiles.push_back(prof);
      }
      if (s.profiles.empty()) {
        r.fail(*k->get("profiles"), "[kernel] profiles must name at least one profile");
      }
    }
    if (auto fs = r.strings(*k, "final_put", "[kernel]")) {
      s.final_put.clear();
      for (const auto& [f, at] : *fs) {
        s.final_put.push_back(r.final_put(f, at));
      }
      if (s.final_put.empty()) {
        r.fail(*k->get("final_put"), "[kernel] final_put must name at least one mode");
      }
    }
    s.pid_max = static_cast<int>(r.integer(*k, "pid_max", "[kernel]", 2, 1 << 16).value_or(64));
    s.reserved_pids =
        static_cast<int>(r.integer(*k, "reserved_pids", "[kernel]", 0, s.pid_max - 1).value_or(1));
  }
  for (const toml::table* t : r.tables(root, "namespace")) {
    r.only_keys(*t, "[[namespace]]", {"name", "parent"});
    namespace_spec n{r.need_str(*t, "name", "[[namespace]]"),
                     r.str(*t, "parent", "[[namespace]]").value_or(""), r.pos(*t)};
    s.namespaces.push_back(std::move(n));
  }
  for (const toml::table* t : r.tables(root, "task")) {
    r.only_keys(*t, "[[task]]",
                {"name", "parent", "comm", "thread", "autoreap", "new_pid_ns", "ns", "error"});
    task_spec ts;
    ts.pos = r.pos(*t);
    ts.name = r.need_str(*t, "name", "[[task]]");
    ts.parent = r.str(*t, "parent", "[[task]]").value_or("");
    ts.comm = r.str(*t, "comm", "[[task]]").value_or("");
    ts.ns = r.str(*t, "ns", "[[task]]").value_or("");
    ts.thread = r.boolean(*t, "thread", "[[task]]").value_or(false);
    ts.autoreap = r.boolean(*t, "autoreap", "[[task]]").value_or(false);
    ts.new_pid_ns = r.boolean(*t, "new_pid_ns", "[[task]]").value_or(false);
    ts.error = error_field(r, *t, "[[task]]");
    if (ts.new_pid_ns && ts.ns.empty()) {
      r.fail(*t, "a task with new_pid_ns = true needs 'ns': the name of the namespace it creates");
    }
    if (!ts.new_pid_ns && !ts.ns.empty()) {
      r.fail(*t->get("ns"), std::string(no_ns_without_new_pid_ns));
    }
    if (ts.thread && ts.parent.empty()) {
      r.fail(*t, "a thread (thread = true) needs a 'parent' whose thread group it joins");
    }
    s.tasks.push_back(std::move(ts));
  }
  if (s.tasks.size() > 4096) {
    r.fail(root, "at most 4096 tasks");
  }
  for (const toml::table* t : r.tables(root, "map")) {
    r.only_keys(*t, "[[map]]", {"name", "max_entries"});
    s.maps.push_back({r.need_str(*t, "name", "[[map]]"),
                      r.integer(*t, "max_entries", "[[map]]", 1, 4096).value_or(64), r.pos(*t)});
  }
  s.setup.name = "setup";
  s.teardown.name = "teardown";
  if (const toml::table* t = r.table(root, "setup")) {
    s.setup = read_thread(r, *t, "[setup]", false, s.profiles);
  }
  for (const toml::table* t : r.tables(root, "thread")) {
    s.threads.push_back(read_thread(r, *t, "[[thread]]", true, s.profiles));
  }
  if (s.threads.size() > 16) {
    r.fail(root, "at most 16 threads");
  }
  if (const toml::table* t = r.table(root, "teardown")) {
    s.teardown = read_thread(r, *t, "[teardown]", false, s.profiles);
  }
  if (const toml::table* t = r.table(root, "run")) {
    r.only_keys(*t, "[run]", {"order"});
    if (auto o = r.strings(*t, "order", "[run]")) {
      for (const auto& [name, at] : *o) {
        s.run_order.push_back(name);
        s.run_order_pos.push_back(at);
      }
    }
  }
  if (const toml::table* t = r.table(root, "explore")) {
    r.only_keys(*t, "[explore]", {"preemption_bound", "max_executions", "null_paths"});
    s.explore.preemption_bound = static_cast<int>(
        r.integer(*t, "preemption_bound", "[explore]", -1, max_preemption_bound).value_or(2));
    s.explore.max_executions =
        static_cast<std::uint64_t>(r.integer(*t, "max_executions", "[explore]", 1,
                                             static_cast<std::int64_t>(max_executions_limit))
                                       .value_or(200'000));
    s.explore.null_paths = r.boolean(*t, "null_paths", "[explore]").value_or(true);
  }
  for (const toml::table* t : r.tables(root, "expect")) {
    r.only_keys(*t, "[[expect]]",
                {"mode", "profiles", "final_put", "outcome", "failure", "message"});
    expectation e;
    e.pos = r.pos(*t);
    const std::string m = r.str(*t, "mode", "[[expect]]").value_or("run");
    if (m != "run" && m != "explore") {
      r.fail(*t->get("mode"), fmt::format("'mode' must be \"run\" or \"explore\", not \"{}\"", m));
    }
    e.when = m == "run" ? mode::run : mode::explore;
    if (auto ps = r.strings(*t, "profiles", "[[expect]]")) {
      for (const auto& [p, at] : *ps) {
        const semantics_profile prof = r.profile(p, at);
        if (std::find(s.profiles.begin(), s.profiles.end(), prof) == s.profiles.end()) {
          r.fail(at, fmt::format("impossible expectation: profile '{}' is not among the profiles "
                                 "the scenario runs ([kernel] profiles)",
                                 p));
        }
        e.profiles.push_back(prof);
      }
    }
    if (auto fs = r.strings(*t, "final_put", "[[expect]]")) {
      for (const auto& [f, at] : *fs) {
        const final_put_mode fm = r.final_put(f, at);
        if (std::find(s.final_put.begin(), s.final_put.end(), fm) == s.final_put.end()) {
          r.fail(at, fmt::format("impossible expectation: final_put '{}' is not among the modes "
                                 "the scenario runs ([kernel] final_put)",
                                 f));
        }
        e.final_put.push_back(fm);
      }
    }
    const std::string outcome = r.need_str(*t, "outcome", "[[expect]]");
    if (outcome != "clean" && outcome != "fails") {
      r.fail(*t->get("outcome"),
             fmt::format("'outcome' must be \"clean\" or \"fails\", not \"{}\"", outcome));
    }
    e.fails = outcome == "fails";
    if (auto f = r.str(*t, "failure", "[[expect]]")) {
      std::vector<std::string_view> kinds;
      for (unsigned k = 0; k <= static_cast<unsigned>(explore::failure_kind::nondeterminism); ++k) {
        const auto fk = static_cast<explore::failure_kind>(k);
        kinds.push_back(explore::to_string(fk));
        if (explore::to_string(fk) == *f) {
          e.failure = fk;
        }
      }
      if (!e.failure) {
        r.fail(*t->get("failure"), fmt::format("unknown failure kind '{}'{}; expected {}", *f,
                                               suggestion(*f, kinds), one_of(kinds)));
      }
    }
    e.message = r.str(*t, "message", "[[expect]]").value_or("");
    if (!e.fails && (e.failure || !e.message.empty())) {
      r.fail(*t,
             "impossible expectation: outcome = \"clean\" with a failure or message (a clean "
             "execution has none)");
    }
    if (e.failure && (*e.failure == explore::failure_kind::deadlock ||
                      *e.failure == explore::failure_kind::step_limit)) {
      r.fail(*t->get("failure"),
             "impossible expectation: a deadlock or step limit aborts the process, so no "
             "scenario can expect one");
    }
    check_consistent(r, s.expectations, e);
    s.expectations.push_back(std::move(e));
  }
  check_references(r, s);
  return s;
}

std::string read_file(const std::string& path) {
  // Opened without blocking (a FIFO with no writer would block an ordinary open),
  // then judged by what the descriptor is, so nothing can be swapped in between.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw parse_error({path, 0, 0}, fmt::format("cannot read the file: {}", std::strerror(errno)));
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } const close_it{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw parse_error({path, 0, 0}, fmt::format("cannot read the file: {}", std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) {
    throw parse_error({path, 0, 0}, "is a directory, not a scenario file");
  }
  if (!S_ISREG(st.st_mode)) {
    throw parse_error({path, 0, 0},
                      "is not a regular file (a device, a FIFO or a socket): give a scenario file");
  }
  // At most one byte past the limit, whatever the file's size says.
  std::string text(max_file_size + 1, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ::ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      throw parse_error({path, 0, 0},
                        fmt::format("cannot read the file: {}", std::strerror(errno)));
    }
    if (n == 0) {
      break;
    }
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  if (text.size() > max_file_size) {
    throw parse_error({path, 0, 0}, "the file is larger than 1 MiB: not a scenario");
  }
  return text;
}

scenario load(const std::string& path) {
  return parse(read_file(path), path);
}

}  // namespace tasklife::scenario
