// The scenario library and the `tasklife` command's outputs (tools/scenario): every
// built-in scenario passes its run and explore expectations, and its traces are
// what the viewers read: the JSON parsed back and checked the way Perfetto reads it,
// the SVG well-formed XML that rsvg-convert renders. Malformed scenario files get
// one precise message per kind of mistake. docs/scenarios.md documents every step
// kind and field, and its complete example parses.
#include "scenario/scenario.hpp"

#include <cstdio>
#include <cstdlib>
#include <expat.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tasklife {
namespace {

namespace sc = tasklife::scenario;
using ::testing::HasSubstr;

// ---- the checks of a JSON trace -----------------------------------------------------------------
// Returns what is wrong with a Chrome trace-event document (empty: nothing).
std::vector<std::string> json_problems(const std::string& text) {
  std::vector<std::string> bad;
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return {std::string("not JSON: ") + e.what()};
  }
  if (!doc.contains("traceEvents") || !doc["traceEvents"].is_array()) {
    return {"no traceEvents array"};
  }
  const std::set<std::string> phases{"B", "E", "X", "i", "I", "C", "M", "s", "t", "f", "b", "e"};
  struct edge {
    double ts;
    int order;  // at equal ts: ends before begins
    bool begin;
    std::string name;
  };
  std::map<std::pair<long, long>, std::vector<edge>> slices;  // (pid, tid)
  std::map<std::pair<long, long>, std::vector<std::pair<double, double>>> spans;
  std::map<std::string, std::vector<std::pair<double, std::string>>> flows;  // id -> (ts, ph)
  std::map<std::pair<long, std::string>, double> last_counter;
  int seq = 0;
  for (const auto& e : doc["traceEvents"]) {
    ++seq;
    for (const char* field : {"name", "ph", "pid", "tid", "ts"}) {
      if (!e.contains(field)) {
        bad.push_back("event " + std::to_string(seq) + " has no '" + field + "': " + e.dump());
      }
    }
    if (!bad.empty()) {
      return bad;
    }
    const std::string ph = e["ph"];
    if (phases.count(ph) == 0) {
      bad.push_back("unknown phase " + ph);
      continue;
    }
    if (!e["ts"].is_number() || !e["pid"].is_number_integer() || !e["tid"].is_number_integer()) {
      bad.push_back("ts, pid and tid must be numbers: " + e.dump());
      continue;
    }
    const double ts = e["ts"];
    const std::pair<long, long> thread{e["pid"], e["tid"]};
    if (ph == "B" || ph == "E") {
      slices[thread].push_back({ts, seq, ph == "B", e["name"]});
    } else if (ph == "X") {
      if (!e.contains("dur") || !e["dur"].is_number()) {
        bad.push_back("X without dur: " + e.dump());
        continue;
      }
      const double end = ts + e["dur"].get<double>();
      slices[thread].push_back({ts, seq, true, e["name"]});
      slices[thread].push_back({end, seq, false, e["name"]});
      spans[thread].emplace_back(ts, end);
    } else if (ph == "i" || ph == "I") {
      if (!e.contains("s") || (e["s"] != "t" && e["s"] != "p" && e["s"] != "g")) {
        bad.push_back("instant without scope t, p or g: " + e.dump());
      }
    } else if (ph == "C") {
      if (!e.contains("args") || !e["args"].is_object() || e["args"].empty()) {
        bad.push_back("counter without args: " + e.dump());
        continue;
      }
      for (const auto& [k, v] : e["args"].items()) {
        if (!v.is_number()) {
          bad.push_back("counter value is not a number: " + e.dump());
        }
      }
      const auto key = std::make_pair(thread.first, e["name"].get<std::string>());
      auto it = last_counter.find(key);
      if (it != last_counter.end() && ts < it->second) {
        bad.push_back("counter " + key.second + " goes back in time at " + std::to_string(ts));
      }
      last_counter[key] = ts;
    } else if (ph == "s" || ph == "f" || ph == "t") {
      if (!e.contains("id")) {
        bad.push_back("flow without id: " + e.dump());
        continue;
      }
      if (ph == "f" && (!e.contains("bp") || e["bp"] != "e")) {
        bad.push_back("flow end without bp=e: " + e.dump());
      }
      flows[std::to_string(thread.first) + "/" + e["id"].dump()].emplace_back(ts, ph);
    }
  }
  // B/E (and X) nest per thread: a stack, time order, ends before begins at one time.
  for (auto& [thread, edges] : slices) {
    std::stable_sort(edges.begin(), edges.end(), [](const edge& a, const edge& b) {
      if (a.ts != b.ts) {
        return a.ts < b.ts;
      }
      return !a.begin && b.begin;
    });
    std::vector<std::string> stack;
    for (const edge& d : edges) {
      if (d.begin) {
        stack.push_back(d.name);
      } else if (stack.empty() || stack.back() != d.name) {
        bad.push_back("slice '" + d.name + "' ends out of order on pid " +
                      std::to_string(thread.first) + " tid " + std::to_string(thread.second));
        return bad;
      } else {
        stack.pop_back();
      }
    }
    if (!stack.empty()) {
      bad.push_back("slice '" + stack.back() + "' never ends");
    }
  }
  // Flows: one start and one end per id, the start first.
  for (const auto& [id, points] : flows) {
    const auto starts =
        std::count_if(points.begin(), points.end(), [](const auto& p) { return p.second == "s"; });
    const auto ends =
        std::count_if(points.begin(), points.end(), [](const auto& p) { return p.second == "f"; });
    if (starts != 1 || ends != 1) {
      bad.push_back("flow " + id + " has " + std::to_string(starts) + " starts and " +
                    std::to_string(ends) + " ends");
    } else {
      double s = 0, f = 0;
      for (const auto& [ts, ph] : points) {
        (ph == "s" ? s : f) = ts;
      }
      if (f < s) {
        bad.push_back("flow " + id + " ends before it starts");
      }
    }
  }
  return bad;
}

// Every flow endpoint lies inside a slice of its thread (Perfetto binds flows to
// the enclosing slice; one outside any slice is dropped).
std::vector<std::string> unbound_flows(const std::string& text) {
  std::vector<std::string> bad;
  const auto doc = nlohmann::json::parse(text);
  std::map<std::pair<long, long>, std::vector<std::pair<double, double>>> spans;
  std::map<std::pair<long, long>, std::vector<double>> open;
  for (const auto& e : doc["traceEvents"]) {
    const std::pair<long, long> th{e["pid"], e["tid"]};
    if (e["ph"] == "B") {
      open[th].push_back(e["ts"]);
    } else if (e["ph"] == "E" && !open[th].empty()) {
      spans[th].emplace_back(open[th].back(), e["ts"].get<double>());
      open[th].pop_back();
    } else if (e["ph"] == "X") {
      spans[th].emplace_back(e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>());
    }
  }
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] != "s" && e["ph"] != "f") {
      continue;
    }
    const std::pair<long, long> th{e["pid"], e["tid"]};
    const double ts = e["ts"];
    const auto& list = spans[th];
    if (std::none_of(list.begin(), list.end(),
                     [&](const auto& s) { return s.first <= ts && ts <= s.second; })) {
      bad.push_back("flow point outside any slice: " + e.dump());
    }
  }
  return bad;
}

// Well-formed XML (expat); the error with its line otherwise.
std::string xml_problem(const std::string& text) {
  XML_Parser p = XML_ParserCreate("UTF-8");
  std::string problem;
  if (XML_Parse(p, text.data(), static_cast<int>(text.size()), 1) == XML_STATUS_ERROR) {
    problem = std::string(XML_ErrorString(XML_GetErrorCode(p))) + " at line " +
              std::to_string(XML_GetCurrentLineNumber(p));
  }
  XML_ParserFree(p);
  return problem;
}

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/tasklife-scenario-test-" + name;
}

// Renders the SVG with rsvg-convert; true if it made a PNG.
bool renders(const std::string& svg, const std::string& name) {
  const std::string in = temp_path(name + ".svg");
  const std::string out = temp_path(name + ".png");
  {
    std::ofstream f(in, std::ios::binary);
    f << svg;
  }
  std::remove(out.c_str());
  const std::string cmd = std::string(TASKLIFE_RSVG_CONVERT) + " -o '" + out + "' '" + in + "'";
  const int rc = std::system(cmd.c_str());
  std::ifstream png(out, std::ios::binary);
  char magic[8] = {};
  png.read(magic, 8);
  std::remove(in.c_str());
  std::remove(out.c_str());
  return rc == 0 && std::string(magic + 1, 3) == "PNG";
}

std::vector<const sc::trace_data*> traces_of(const std::vector<sc::variant_result>& rs) {
  std::vector<const sc::trace_data*> out;
  for (const auto& r : rs) {
    out.push_back(&r.trace);
  }
  return out;
}

// ---- every built-in scenario
// ----------------------------------------------------------------------
std::vector<std::string> builtin_names() {
  std::vector<std::string> out;
  for (const sc::builtin& b : sc::builtins()) {
    out.emplace_back(b.name);
  }
  return out;
}

class ScenarioLibraryTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScenarioLibraryTest, PassesItsExpectationsWithTracesTheViewersRead) {
  const sc::scenario s = sc::find(GetParam());
  // Use-after-free reports are made only by full-check builds.
  if (!debug_checks_enabled && sc::needs_full_checks(s)) {
    GTEST_SKIP() << "expects use-after-free reports (TASKLIFE_CHECKS=full)";
  }
  const std::vector<sc::variant> vs = sc::variants(s);
  // Run once under each variant, on the deterministic backend.
  std::vector<sc::variant_result> runs = sc::run(s, {sc::backend::deterministic, true}, vs);
  EXPECT_THAT(sc::check(s, sc::mode::run, runs), ::testing::IsEmpty());
  // Explore each variant; the failing ones come back with their failure traced.
  std::vector<sc::variant_result> explored;
  for (const sc::variant& v : vs) {
    explored.push_back(sc::explore_variant(s, v, sc::default_explore_options(s)));
  }
  EXPECT_THAT(sc::check(s, sc::mode::explore, explored), ::testing::IsEmpty());
  for (const std::vector<sc::variant_result>* results : {&runs, &explored}) {
    std::ostringstream json, svg;
    sc::write_chrome_json(json, traces_of(*results));
    EXPECT_THAT(json_problems(json.str()), ::testing::IsEmpty());
    EXPECT_THAT(unbound_flows(json.str()), ::testing::IsEmpty());
    sc::write_svg(svg, traces_of(*results));
    EXPECT_EQ(xml_problem(svg.str()), "");
    EXPECT_TRUE(renders(svg.str(), s.name)) << "rsvg-convert could not render " << s.name;
  }
  // A failure is marked in its trace.
  for (const sc::variant_result& r : explored) {
    const bool marked =
        std::any_of(r.trace.items.begin(), r.trace.items.end(),
                    [](const sc::item& i) { return i.kind == sc::item_kind::failure; });
    EXPECT_EQ(marked, r.failure.has_value()) << r.v.label;
  }
  // The invariant: every clean run ended with every task freed. A run that failed
  // did so as its expectation above demands (a leak the scenario shows, say).
  for (const sc::variant_result& r : runs) {
    if (r.failure) {
      continue;
    }
    std::set<std::uint64_t> forked, freed;
    for (const sc::item& i : r.trace.items) {
      if (i.ev && i.ev->kind == task_event_kind::fork) {
        forked.insert(i.ev->task_id);
      } else if (i.ev && i.ev->kind == task_event_kind::free) {
        EXPECT_TRUE(freed.insert(i.ev->task_id).second) << "freed twice: " << i.ev->task_id;
      }
    }
    EXPECT_EQ(forked, freed) << r.v.label;
  }
}

INSTANTIATE_TEST_SUITE_P(Builtin, ScenarioLibraryTest, ::testing::ValuesIn(builtin_names()),
                         [](const auto& param_info) { return param_info.param; });

// The native backend: liburcu's grace periods, callbacks on its own thread.
TEST(ScenarioRunTest, NativeRunOnLiburcuIsCleanAndItsTraceIsWellFormed) {
  const sc::scenario s = sc::find("pid_lookup_race");
  const auto runs = sc::run(s, {sc::backend::native, true}, sc::variants(s));
  EXPECT_THAT(sc::check(s, sc::mode::run, runs), ::testing::IsEmpty());
  std::ostringstream json;
  sc::write_chrome_json(json, traces_of(runs));
  EXPECT_THAT(json_problems(json.str()), ::testing::IsEmpty());
  for (const auto& r : runs) {
    EXPECT_FALSE(r.failure.has_value()) << r.failure->message;
  }
}

// A replay string reproduces the exploration's failure, and a wrong one says so.
TEST(ScenarioRunTest, ReplayReproducesTheFailureAndRejectsAForeignSchedule) {
  const sc::scenario s = sc::find("pid_lookup_race");
  const sc::variant old = sc::variants(s).front();
  ASSERT_EQ(old.profile, semantics_profile::rcu_users_inc);
  const auto found = sc::explore_variant(s, old, sc::default_explore_options(s));
  ASSERT_TRUE(found.failure.has_value());
  const auto again =
      sc::replay_variant(s, old, found.failure->schedule, sc::default_explore_options(s));
  ASSERT_TRUE(again.failure.has_value());
  EXPECT_EQ(again.failure->kind, explore::failure_kind::refcount_warning);
  const auto wrong = sc::replay_variant(s, sc::variants(s).back(), found.failure->schedule,
                                        sc::default_explore_options(s));
  ASSERT_TRUE(wrong.failure.has_value());
  EXPECT_EQ(wrong.failure->kind, explore::failure_kind::nondeterminism);
}

// ---- malformed scenarios: one message per kind of mistake -------------------------------------
constexpr const char* kValid = R"(name = "t"
[[task]]
name = "a"
[[thread]]
name = "one"
steps = [ { op = "retire", task = "a" } ]
)";

std::string error_of(const std::string& text) {
  try {
    sc::parse(text, "bad.toml");
  } catch (const sc::parse_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ScenarioParseTest, AValidScenarioParses) {
  const sc::scenario s = sc::parse(kValid, "good.toml");
  EXPECT_EQ(s.threads.size(), 1U);
  EXPECT_EQ(s.threads[0].steps[0].kind, sc::step_kind::retire);
}

TEST(ScenarioParseTest, SyntaxErrorNamesFileLineAndColumn) {
  EXPECT_THAT(error_of("name = \"t\"\n[[task]\nname = \"a\"\n"),
              ::testing::StartsWith("bad.toml:2:"));
  EXPECT_THAT(error_of("name = \"t\"\n[[task]\nname = \"a\"\n"), HasSubstr("TOML syntax error"));
}

TEST(ScenarioParseTest, UnknownStepListsTheKindsAndSuggestsTheNearest) {
  const std::string e = error_of(R"(name = "t"
[[task]]
name = "a"
[[thread]]
name = "one"
steps = [ { op = "bpf_task_aquire", task = "a", into = "x" } ]
)");
  EXPECT_THAT(e, ::testing::StartsWith("bad.toml:6:18: unknown step 'bpf_task_aquire'"));
  EXPECT_THAT(e, HasSubstr("did you mean 'bpf_task_acquire'?"));
  EXPECT_THAT(e, HasSubstr("expected one of: fork, exit"));
}

TEST(ScenarioParseTest, WrongTypeSaysWhatWasExpected) {
  EXPECT_THAT(error_of(R"(name = "t"
[kernel]
pid_max = "many"
)"),
              ::testing::StartsWith(
                  "bad.toml:3:11: 'pid_max' in [kernel] must be an integer, not a string"));
  EXPECT_THAT(error_of(R"(name = "t"
[[task]]
name = "a"
[[thread]]
name = "one"
steps = [ { op = "map_lookup", map = "m", key = "one", into = "e" } ]
)"),
              HasSubstr("bad.toml:6:49: 'key' in step 'map_lookup' must be an integer, not a "
                        "string"));
  // A variable holding a map element where a task pointer is needed.
  EXPECT_THAT(error_of(R"(name = "t"
[[map]]
name = "m"
[[thread]]
name = "one"
steps = [ { op = "rcu_read_lock" }, { op = "map_lookup", map = "m", key = 1, into = "e" }, { op = "bpf_task_release", ref = "e" }, { op = "rcu_read_unlock" } ]
)"),
              HasSubstr("wrong type: step 'bpf_task_release' needs a task pointer in 'e', which "
                        "holds a map element"));
}

TEST(ScenarioParseTest, MissingFieldNamesTheFieldAndTheStepsFields) {
  EXPECT_THAT(error_of(R"(name = "t"
[[task]]
name = "a"
[[thread]]
name = "one"
steps = [ { op = "bpf_task_acquire", task = "a" } ]
)"),
              ::testing::StartsWith("bad.toml:6:11: step 'bpf_task_acquire' needs 'into'"));
  EXPECT_THAT(error_of("[[task]]\nname = \"a\"\n"),
              ::testing::StartsWith("bad.toml:1:1: the scenario needs 'name' (a string)"));
  EXPECT_THAT(error_of("name = \"t\"\n[[task]]\nparent = \"x\"\n"),
              ::testing::StartsWith("bad.toml:2:1: [[task]] needs 'name'"));
}

TEST(ScenarioParseTest, ImpossibleExpectationSaysWhyItCannotHold) {
  EXPECT_THAT(error_of(std::string(kValid) + R"([[expect]]
mode = "explore"
profiles = ["usage_based"]
outcome = "fails"
)"),
              HasSubstr("bad.toml:9:13: impossible expectation: profile 'usage_based' is not "
                        "among the profiles the scenario runs"));
  EXPECT_THAT(
      error_of(std::string(kValid) + R"([[expect]]
outcome = "clean"
failure = "leak"
)"),
      HasSubstr("bad.toml:7:1: impossible expectation: outcome = \"clean\" with a failure"));
  EXPECT_THAT(error_of(R"(name = "t"
[[task]]
name = "a"
[[thread]]
name = "one"
steps = [ { op = "retire", task = "a" }, { op = "expect", task = "a", freed = true, usage = 1 } ]
)"),
              HasSubstr("bad.toml:6:42: impossible expectation: a freed task has no counters"));
}

TEST(ScenarioParseTest, UnknownKeysNamesAndUnbalancedSectionsAreCaught) {
  EXPECT_THAT(error_of(std::string(kValid) + "[kernel]\nprofile = \"current\"\n"),
              HasSubstr("unknown key 'profile' in [kernel] (did you mean 'profiles'?)"));
  EXPECT_THAT(error_of(R"(name = "t"
[[thread]]
name = "one"
steps = [ { op = "retire", task = "ghost" } ]
)"),
              HasSubstr("bad.toml:4:11: step 'retire': unknown task 'ghost'"));
  EXPECT_THAT(error_of(R"(name = "t"
[[thread]]
name = "one"
steps = [ { op = "rcu_read_lock" } ]
)"),
              HasSubstr("bad.toml:2:1: thread 'one' ends inside an RCU read-side section"));
  EXPECT_THAT(error_of(R"(name = "t"
[[thread]]
name = "one"
steps = [ { op = "rcu_read_lock" }, { op = "synchronize_rcu" }, { op = "rcu_read_unlock" } ]
)"),
              HasSubstr("would wait for itself"));
}

TEST(ScenarioParseTest, AnUnreadableFileIsAnErrorNotACrash) {
  try {
    sc::load("/nonexistent/scenario.toml");
    FAIL() << "no error";
  } catch (const sc::parse_error& e) {
    EXPECT_THAT(e.what(),
                ::testing::StartsWith("/nonexistent/scenario.toml: cannot read the file"));
  }
}

// Issue #11, finding 1: what is no regular file is refused before it is read (a
// device's size says 0 and it never ends; a FIFO with no writer would block).
TEST(ScenarioParseTest, WhatIsNoRegularFileIsRefusedBeforeItIsRead) {
  auto error_loading = [](const std::string& path) {
    try {
      sc::load(path);
    } catch (const sc::parse_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error_loading("/dev/zero"),
            "/dev/zero: is not a regular file (a device, a FIFO or a socket): give a scenario "
            "file");
  EXPECT_EQ(error_loading("."), ".: is a directory, not a scenario file");
  const std::string fifo = temp_path("fifo");
  std::remove(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(error_loading(fifo), HasSubstr("is not a regular file"));
  std::remove(fifo.c_str());
  // A regular file past the limit: read up to one byte past it, then refused.
  const std::string big = temp_path("big.toml");
  {
    std::ofstream f(big, std::ios::binary);
    f << std::string(sc::max_file_size + 10, '#');
  }
  EXPECT_THAT(error_loading(big), HasSubstr("larger than 1 MiB"));
  std::remove(big.c_str());
  // The invariant: a file within the limit still loads.
  EXPECT_EQ(sc::find("pid_lookup_race").name, "pid_lookup_race");
}

// Finding 5: the name becomes output file names.
TEST(ScenarioParseTest, ANameThatIsNoPlainFileNameIsRefused) {
  for (const char* bad : {"../escaped", "/tmp/abs", "sub/dir", ".hidden", "a\\nb", "a\\u0000b"}) {
    EXPECT_THAT(error_of(fmt::format("name = \"{}\"\n", bad)),
                ::testing::StartsWith("bad.toml:1:8: 'name' must be at most 64 letters"))
        << bad;
  }
  EXPECT_THAT(error_of("name = \"" + std::string(65, 'a') + "\"\n"),
              HasSubstr("'name' must be at most 64"));
  EXPECT_EQ(sc::parse("name = \"ok-name_1.v2\"\n", "good.toml").name, "ok-name_1.v2");
}

// Findings 6, 7 and the namespace depth of finding 8.
TEST(ScenarioParseTest, TaskPlacementIsCheckedWhereItIsWritten) {
  EXPECT_THAT(error_of("name = \"t\"\n[[task]]\nname = \"a\"\nparent = \"a\"\n"),
              ::testing::StartsWith("bad.toml:2:1: task 'a': unknown parent 'a' (declare it above: "
                                    "a task cannot be its own)"));
  EXPECT_THAT(error_of("name = \"t\"\n[[namespace]]\nname = \"q\"\n[[task]]\nname = \"a\"\n"
                       "ns = \"q\"\n"),
              ::testing::StartsWith("bad.toml:6:6: 'ns' names the namespace a fork creates and "
                                    "needs new_pid_ns = true"));
  EXPECT_THAT(error_of(R"(name = "t"
[[namespace]]
name = "q"
[[task]]
name = "p"
[[thread]]
name = "u"
steps = [ { op = "fork", task = "c", parent = "p", ns = "q" } ]
)"),
              ::testing::StartsWith("bad.toml:8:57: 'ns' names the namespace a fork creates"));
  EXPECT_THAT(error_of(R"(name = "t"
[[task]]
name = "p"
[[thread]]
name = "u"
steps = [ { op = "fork", task = "p2", parent = "p2" } ]
)"),
              HasSubstr("bad.toml:6:11: fork: task 'p2' cannot be its own parent"));
  // 33 nested CLONE_NEWPID forks: one more than the kernel allows.
  std::string chain = "name = \"t\"\n[[task]]\nname = \"k0\"\n";
  for (int i = 1; i <= 33; ++i) {
    chain += fmt::format(
        "[[task]]\nname = \"k{}\"\nparent = \"k{}\"\nnew_pid_ns = true\nns = "
        "\"n{}\"\n",
        i, i - 1, i);
  }
  EXPECT_THAT(error_of(chain), HasSubstr("namespace 'n33' would be nested 33 deep: the kernel "
                                         "allows 32"));
  // The invariant: 32 deep is within the limit, and it runs clean.
  const std::string ok = chain.substr(0, chain.find("[[task]]\nname = \"k33\""));
  const sc::scenario s = sc::parse(ok, "deep.toml");
  const auto runs = sc::run(s, {sc::backend::deterministic, false}, sc::variants(s));
  EXPECT_THAT(sc::check(s, sc::mode::run, runs), ::testing::IsEmpty());
}

// Finding 10.
TEST(ScenarioParseTest, AKfuncStepNeedsItsThreadToRunAsATask) {
  EXPECT_THAT(error_of(R"(name = "t"
[[task]]
name = "a"
[[thread]]
name = "t"
steps = [ { op = "bpf_task_acquire", task = "a", into = "q" }, { op = "bpf_task_release", ref = "q" } ]
)"),
              ::testing::StartsWith("bad.toml:6:11: step 'bpf_task_acquire' calls a kfunc, which "
                                    "runs as the thread's current task: add as = \"...\" (a "
                                    "task) to thread 't'"));
  EXPECT_THAT(error_of("name = \"t\"\n[setup]\nsteps = [ { op = \"bpf_rcu_read_lock\" }, { op = "
                       "\"bpf_rcu_read_unlock\" } ]\n"),
              HasSubstr("to [setup]"));
}

// Finding 12.
TEST(ScenarioParseTest, RunOrderErrorsNameTheEntry) {
  EXPECT_THAT(error_of(std::string(kValid) + "[run]\norder = [\"one\", \"nobody\"]\n"),
              ::testing::StartsWith("bad.toml:8:17: [run] order: unknown thread 'nobody'"));
  EXPECT_THAT(error_of(std::string(kValid) + "[run]\norder = [\"one\", \"one\"]\n"),
              ::testing::StartsWith("bad.toml:8:17: [run] order: thread 'one' has no step left"));
}

// Finding 16.
TEST(ScenarioParseTest, ContradictoryExpectationsAreRefused) {
  EXPECT_THAT(error_of(std::string(kValid) +
                       "[[expect]]\noutcome = \"clean\"\n[[expect]]\noutcome = \"fails\"\n"),
              ::testing::StartsWith("bad.toml:9:1: contradictory expectations: the one at line 7 "
                                    "says the run is clean"));
  EXPECT_THAT(error_of(std::string(kValid) +
                       "[[expect]]\nmode = \"explore\"\noutcome = \"fails\"\nfailure = \"leak\"\n"
                       "[[expect]]\nmode = \"explore\"\noutcome = \"fails\"\nfailure = "
                       "\"invariant\"\n"),
              HasSubstr("says the explore fails with leak"));
  // The invariant: one per mode, or disjoint variants, are fine.
  EXPECT_NO_THROW(sc::parse(std::string(kValid) +
                                "[[expect]]\noutcome = \"clean\"\n[[expect]]\nmode = "
                                "\"explore\"\noutcome = \"fails\"\n",
                            "good.toml"));
}

// A run order that would wait forever is refused before anything runs.
TEST(ScenarioRunTest, ARunOrderThatCouldNeverEndIsRefused) {
  const sc::scenario s = sc::parse(R"(name = "stuck"
[[thread]]
name = "reader"
steps = [ { op = "rcu_read_lock" }, { op = "rcu_read_unlock" } ]
[[thread]]
name = "writer"
steps = [ { op = "synchronize_rcu" }, { op = "mark", name = "after" } ]
[run]
order = ["reader", "writer", "writer"]
)",
                                   "stuck.toml");
  const auto r = sc::run(s, {sc::backend::deterministic, true}, sc::variants(s));
  ASSERT_EQ(r.size(), 1U);
  ASSERT_TRUE(r[0].failure.has_value());
  EXPECT_THAT(r[0].failure->message, HasSubstr("would never end"));
}

// Finding 8: a step that can fail says how it is expected to, and a failed step
// makes the variant's outcome say so.
// What a fork expected to fail would have made (its namespace, a child of its
// task) is missing later: a point failure naming it, never an exception out of
// the interpreter (it was std::out_of_range, an abort) nor a parentless fork.
TEST(ScenarioRunTest, WhatAFailedForkWouldHaveMadeIsAPointFailureNotACrash) {
  const sc::scenario s = sc::parse(R"(name = "after_failed_fork"
[kernel]
pid_max = 3
reserved_pids = 0
[[task]]
name = "a"
[[task]]
name = "b"
[[thread]]
name = "t"
as = "a"
steps = [ { op = "fork", task = "c", parent = "a", new_pid_ns = true, ns = "q", error = "EAGAIN" },
          { op = "rcu_read_lock" },
          { op = "find_task_by_pid_ns", pid = 1, ns = "q", into = "x" },
          { op = "rcu_read_unlock" },
          { op = "fork", task = "d", parent = "c" } ]
)",
                                   "after_failed_fork.toml");
  const auto r = sc::run(s, {sc::backend::deterministic, true}, sc::variants(s)).front();
  ASSERT_EQ(r.point_failures.size(), 2U);
  EXPECT_THAT(r.point_failures[0], HasSubstr("namespace 'q' was never created"));
  EXPECT_THAT(r.point_failures[1], HasSubstr("parent 'c' does not exist"));
  EXPECT_EQ(r.trace.outcome, "fails: 2 steps not as expected");
  EXPECT_FALSE(r.failure.has_value()) << r.failure->message;  // nothing leaked on the way
}

TEST(ScenarioRunTest, AStepThatFailsIsExpectedWithItsError) {
  constexpr const char* full = R"(name = "full"
[kernel]
pid_max = 3
reserved_pids = 0
[[task]]
name = "a"
[[task]]
name = "b"
[[task]]
name = "c"
%s
[[map]]
name = "m"
max_entries = 1
[[thread]]
name = "t"
steps = [ { op = "map_update", map = "m", key = 1 }, { op = "map_update", map = "m", key = 2%s },
          { op = "reap", task = "a"%s } ]
)";
  auto run = [&](const char* task_error, const char* map_error, const char* reap_error) {
    std::string t(full);
    for (const char* part : {task_error, map_error, reap_error}) {
      t.replace(t.find("%s"), 2, part);
    }
    const sc::scenario s = sc::parse(t, "full.toml");
    return sc::run(s, {sc::backend::deterministic, true}, sc::variants(s)).front();
  };
  const auto expected = run("error = \"EAGAIN\"", ", error = \"E2BIG\"", ", error = \"ECHILD\"");
  EXPECT_THAT(expected.point_failures, ::testing::IsEmpty());
  EXPECT_FALSE(expected.failure.has_value()) << expected.failure->message;  // no leak either
  EXPECT_EQ(expected.trace.outcome, "clean");
  const auto unexpected = run("", "", "");
  ASSERT_EQ(unexpected.point_failures.size(), 3U);
  EXPECT_THAT(unexpected.point_failures[0],
              HasSubstr("fork failed with EAGAIN (-11); error = \"EAGAIN\" expects it"));
  EXPECT_THAT(unexpected.point_failures[1], HasSubstr("bpf_map_update_elem failed with E2BIG"));
  EXPECT_THAT(unexpected.point_failures[2], HasSubstr("wait_task_zombie failed with ECHILD"));
  EXPECT_EQ(unexpected.trace.outcome, "fails: 3 steps not as expected");
  const sc::scenario ok = sc::parse(R"(name = "ok"
[[thread]]
name = "t"
steps = [ { op = "fork", task = "x", error = "EAGAIN" } ]
)",
                                    "ok.toml");
  const auto succeeded = sc::run(ok, {sc::backend::deterministic, true}, sc::variants(ok)).front();
  ASSERT_EQ(succeeded.point_failures.size(), 1U);
  EXPECT_THAT(succeeded.point_failures[0], HasSubstr("expected fork to fail with EAGAIN, it "
                                                     "succeeded"));
  // The invariant: the task that forked anyway died at the end, no leak.
  EXPECT_FALSE(succeeded.failure.has_value());
  EXPECT_THAT(error_of(R"(name = "t"
[[thread]]
name = "t"
steps = [ { op = "fork", task = "x", error = "EAGIAN" } ]
)"),
              HasSubstr("unknown error 'EAGIAN' in step 'fork' (did you mean 'EAGAIN'?)"));
}

// Finding 4: a clean search that did not cover the space does not satisfy "clean".
TEST(ScenarioRunTest, ACleanSearchThatRanOutOfBudgetDoesNotSatisfyClean) {
  const sc::scenario s = sc::find("pid_lookup_race");
  const sc::variant current = sc::variants(s).back();
  ASSERT_EQ(current.profile, semantics_profile::current);
  explore::options o = sc::default_explore_options(s);
  o.max_executions = 2;
  const auto cut = sc::explore_variant(s, current, o);
  ASSERT_FALSE(cut.failure.has_value());
  EXPECT_FALSE(cut.complete);
  EXPECT_THAT(cut.stopped, HasSubstr("the execution budget ran out (2 executions)"));
  const auto problems = sc::check(s, sc::mode::explore, {cut});
  ASSERT_EQ(problems.size(), 1U);
  EXPECT_THAT(problems[0], HasSubstr("expected no failure in any interleaving under current, but "
                                     "the search did not cover them all: the execution budget"));
  o.strategy = explore::strategy::random;
  o.max_executions = 1000;
  EXPECT_THAT(sc::explore_variant(s, current, o).stopped, HasSubstr("random samples schedules"));
  // The invariant: the whole search covers it and the expectation holds.
  const auto whole = sc::explore_variant(s, current, sc::default_explore_options(s));
  EXPECT_TRUE(whole.complete);
  EXPECT_THAT(sc::check(s, sc::mode::explore, {whole}), ::testing::IsEmpty());
}

// Finding 2: the form of a schedule string is checked on its own.
TEST(ScenarioRunTest, MalformedSchedulesAreToldApartFromForeignOnes) {
  for (const char* bad :
       {"", "garbage", "tl1", "tl2-0000000000000000-0000000000000000-0",
        "tl1-0000000000000000-0000000000000000-0*99999999999.",
        "tl1-000000000000000g-0000000000000000-0", "tl1-0000000000000000-0000000000000000--1",
        "tl1-0000000000000000-0000000000000000-0~junk"}) {
    EXPECT_TRUE(explore::schedule_problem(bad).has_value()) << bad;
  }
  EXPECT_THAT(*explore::schedule_problem("garbage"), HasSubstr("is not a tasklife schedule"));
  const sc::scenario s = sc::find("pid_lookup_race");
  const auto found =
      sc::explore_variant(s, sc::variants(s).front(), sc::default_explore_options(s));
  ASSERT_TRUE(found.failure.has_value());
  // The invariant: a real schedule is well-formed, and it replays.
  EXPECT_EQ(explore::schedule_problem(found.failure->schedule), std::nullopt);
}

// Findings 21, 22: the ftrace text shows comms, splits on whitespace, stays UTF-8.
TEST(ScenarioTraceTest, FtraceShowsCommsAndSplitsIntoFields) {
  const sc::scenario s = sc::parse(R"(name = "comms"
[[task]]
name = "worker"
comm = "kworker u8 ééééééé"
[[thread]]
name = "the thread"
as = "worker"
steps = [ { op = "get_task_struct", task = "worker", into = "h" }, { op = "put_task_struct", ref = "h" },
          { op = "expect", task = "worker", comm = "kworker u8 éé" } ]
)",
                                   "comms.toml");
  const auto runs = sc::run(s, {sc::backend::deterministic, true}, sc::variants(s));
  EXPECT_THAT(sc::check(s, sc::mode::run, runs), ::testing::IsEmpty());  // cut before the 3rd é
  std::ostringstream out;
  sc::write_ftrace(out, traces_of(runs));
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("task_newtask: pid=1 comm=kworker_u8_éé clone_flags=0"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("comm=worker")));
  std::istringstream lines(text);
  std::size_t checked = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::istringstream fields(line);
    std::string task, cpu, flags, stamp;
    fields >> task >> cpu >> flags >> stamp;
    EXPECT_EQ(cpu, "[000]") << line;
    EXPECT_EQ(stamp.back(), ':') << line;
    if (line.find("tracing_mark_write: get_task_struct") != std::string::npos) {
      EXPECT_EQ(task, "kworker_u8_éé-1") << line;
      ++checked;
    }
  }
  // The invariant: the step was there to check, and no output cuts a character.
  EXPECT_EQ(checked, 1U);
  EXPECT_EQ(xml_problem([&] {
              std::ostringstream svg;
              sc::write_svg(svg, traces_of(runs));
              return svg.str();
            }()),
            "");
}

// Finding 23: a scenario at the limits renders.
TEST(ScenarioTraceTest, AScenarioAtTheLimitsRendersWithinTheRenderersSize) {
  std::string text = "name = \"big\"\n[kernel]\npid_max = 8192\n";
  for (int i = 0; i < 4096; ++i) {
    text += fmt::format("[[task]]\nname = \"t{}\"\n", i);
  }
  const sc::scenario s = sc::parse(text, "big.toml");
  const auto runs = sc::run(s, {sc::backend::deterministic, true}, sc::variants(s));
  std::ostringstream svg;
  sc::write_svg(svg, traces_of(runs));
  const std::string doc = svg.str();
  EXPECT_THAT(doc, HasSubstr("not drawn: "));
  EXPECT_EQ(xml_problem(doc), "");
  EXPECT_TRUE(renders(doc, "big")) << "rsvg-convert could not render it";
  // The invariant: the run itself was clean (every task freed).
  EXPECT_FALSE(runs.front().failure.has_value());
}

// ---- docs/scenarios.md -------------------------------------------------------------------------
std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(ScenarioDocsTest, EveryStepKindAndFieldIsDocumented) {
  const std::string doc = read_file(TASKLIFE_SCENARIOS_DOC);
  ASSERT_FALSE(doc.empty());
  for (const sc::step_info& i : sc::step_kinds) {
    EXPECT_THAT(doc, HasSubstr("`" + std::string(i.name) + "`")) << "step kind " << i.name;
  }
  for (const sc::field_info& f : sc::field_kinds) {
    EXPECT_THAT(doc, HasSubstr("`" + std::string(f.name) + "`")) << "field " << f.name;
  }
}

TEST(ScenarioDocsTest, TheCompleteExampleParsesAndHoldsItsExpectations) {
  const std::string doc = read_file(TASKLIFE_SCENARIOS_DOC);
  const std::string open = "```toml\n";
  const auto begin = doc.find(open);
  ASSERT_NE(begin, std::string::npos);
  const auto end = doc.find("```", begin + open.size());
  const std::string text = doc.substr(begin + open.size(), end - begin - open.size());
  const sc::scenario s = sc::parse(text, "docs/scenarios.md");
  const auto runs = sc::run(s, {sc::backend::deterministic, true}, sc::variants(s));
  EXPECT_THAT(sc::check(s, sc::mode::run, runs), ::testing::IsEmpty());
  std::vector<sc::variant_result> explored;
  for (const sc::variant& v : sc::variants(s)) {
    explored.push_back(sc::explore_variant(s, v, sc::default_explore_options(s)));
  }
  EXPECT_THAT(sc::check(s, sc::mode::explore, explored), ::testing::IsEmpty());
}

}  // namespace
}  // namespace tasklife
