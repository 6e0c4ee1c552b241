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
#include <vector>

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
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/scenario.toml:0:0: cannot read the file"));
  }
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
