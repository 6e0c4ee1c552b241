// tools/scenario/scenario.hpp — scenario files for the `tasklife` command: what
// they say, how they are read, run and explored, and what comes out.
//
// What it is
//   A scenario is a small story about task lifetime written in TOML
//   (docs/scenarios.md): the kernel configuration (one or several semantics
//   profiles to compare, the final-put mode, pid_max, namespaces), the tasks to
//   fork, simulated threads with their steps (lifecycle, references, RCU, pid
//   lookups, kfuncs, maps), and expectations (counters at named points, the
//   outcome of a run, the outcome of an exploration). This library reads one
//   (parse, with errors that name file, line, column and what was expected), runs
//   it once per variant (run: the threads' steps in a fixed order, on liburcu or
//   on the deterministic RCU backend), explores it (the explorer over every
//   interleaving within a bound) or replays a schedule, records what happened as
//   a trace, and checks the expectations.
//
//   The tool layer: it depends on the library (tasklife.hpp, explore.hpp), never
//   the other way round, and its parsers (toml++) stay inside its .cpp files.
//
// Members
//   step_kind, step_kinds (one row per step kind: name, fields, summary),
//   field, field_kinds, source_pos, parse_error, step, thread_spec, task_spec,
//   map_spec, namespace_spec, expectation, scenario, variant
//   parse(text, file), load(path)
//   run_options, run_result, run(), explore_options, explore_variant(), replay_variant()
//   check(scenario, results) → the expectations that did not hold
//
// Lifetime
//   A scenario is a value. Every run builds its own kernel, tasks and maps and
//   destroys them before it returns; traces are values.
//
// Memory ordering
//   run() starts one OS thread per simulated thread and lets exactly one run a
//   step at a time (a turn counter under a mutex and a condition variable), so
//   the interpreter's variables need no other synchronisation; a step that waits
//   for a grace period hands the turn on before it waits. The recorder is
//   guarded by its own mutex (events arrive from liburcu's callback thread too).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tasklife/explore.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/profile.hpp>

#include "trace.hpp"

namespace tasklife::scenario {

// ---- the fields a step may carry ------------------------------------------------------------
enum class value_type : std::uint8_t { string, integer, boolean, string_list };

// One row per field: its TOML key, its type, what it means.
#define TASKLIFE_SCENARIO_FIELDS(X)                                                         \
  X(task, string, "a task declared in [[task]] (or forked by a fork step)")                 \
  X(ref, string, "a variable holding a task pointer (written by an earlier step's `into`)") \
  X(into, string, "the variable the step's result goes to")                                 \
  X(elem, string, "a variable holding a map element (written by map_lookup)")               \
  X(map, string, "a map declared in [[map]]")                                               \
  X(key, integer, "a map key")                                                              \
  X(pid_of, string, "the pid of this task (its number in the root namespace, or in `ns`)")  \
  X(pid, integer, "a pid number")                                                           \
  X(ns, string, "a pid namespace declared in [[namespace]] (default: the root)")            \
  X(parent, string, "fork: the parent task (default: none, the first task of the root)")    \
  X(comm, string, "fork: the task's name as the kernel sees it; expect: the name expected") \
  X(thread, boolean, "fork: CLONE_THREAD (autoreaped)")                                     \
  X(autoreap, boolean, "fork: the parent ignores SIGCHLD (autoreaped)")                     \
  X(new_pid_ns, boolean, "fork: CLONE_NEWPID, pid 1 of the namespace named by `ns`")        \
  X(counter, string, "refcount steps: \"usage\" or \"rcu_users\"")                          \
  X(usage, integer, "expect: the value of usage")                                           \
  X(rcu_users, integer, "expect: the value of rcu_users")                                   \
  X(freed, boolean, "expect: whether the task's memory has been freed")                     \
  X(null, boolean, "expect: whether the variable `ref` is NULL")                            \
  X(name, string, "mark, expect: the name of the point on the timeline")                    \
  X(if_set, string, "any step: runs only if this variable is not NULL")                     \
  X(unless_set, string, "any step: runs only if this variable is NULL")                     \
  X(profiles, string_list, "any step: runs only under these profiles")                      \
  X(final_put, string, "any step: runs only under this final-put mode")                     \
  X(error, string, "fork, reap, map_update: the step must fail with this error (EAGAIN, ...)")

enum class field : std::uint8_t {
#define TASKLIFE_SCENARIO_FIELD_ENUM(n, type, text) n,
  TASKLIFE_SCENARIO_FIELDS(TASKLIFE_SCENARIO_FIELD_ENUM)
#undef TASKLIFE_SCENARIO_FIELD_ENUM
};

struct field_info {
  field f;
  std::string_view name;
  value_type type;
  std::string_view meaning;
};

inline constexpr field_info field_kinds[] = {
#define TASKLIFE_SCENARIO_FIELD_INFO(n, type, text) {field::n, #n, value_type::type, text},
    TASKLIFE_SCENARIO_FIELDS(TASKLIFE_SCENARIO_FIELD_INFO)
#undef TASKLIFE_SCENARIO_FIELD_INFO
};

constexpr std::uint32_t bit(field f) noexcept {
  return 1U << static_cast<unsigned>(f);
}
constexpr std::uint32_t conditions =
    bit(field::if_set) | bit(field::unless_set) | bit(field::profiles) | bit(field::final_put);

// What a step acts on: nothing, a task (by name) or a task pointer (a variable),
// exactly one of the two.
enum class target : std::uint8_t { none, task_or_ref, ref, task };

// ---- the step kinds ---------------------------------------------------------------------------
// One row per step kind: its `op` name, what it acts on, the fields it requires
// and may have, whether it may wait for a grace period, whether it calls a kfunc
// (which runs as the thread's current task), and what it does. The
// parser, the interpreter, `tasklife show` and docs/scenarios.md (checked by a
// test) all read this table.
#define F(n) bit(field::n)
#define TASKLIFE_SCENARIO_STEPS(X)                                                                 \
  X(fork, target::task, 0,                                                                         \
    F(parent) | F(comm) | F(thread) | F(autoreap) | F(new_pid_ns) | F(ns) | F(error), false,       \
    false, "copy_process: forks a new task named `task` (usage=1, rcu_users=2)")                   \
  X(exit, target::task, 0, 0, false, false,                                                        \
    "do_exit: PF_EXITING, exit_notify (zombie or autoreap), TASK_DEAD")                            \
  X(final_switch, target::task, 0, 0, false, false,                                                \
    "finish_task_switch: the scheduler drops its rcu_users reference")                             \
  X(reap, target::task, 0, F(error), false, false,                                                 \
    "wait_task_zombie: the parent reaps the zombie: unhash, then its rcu_users drop")              \
  X(retire, target::task, 0, 0, false, false,                                                      \
    "the whole death in the order the task's kind dies (exit, final switch, reap if not "          \
    "autoreaped)")                                                                                 \
  X(get_task_struct, target::task_or_ref, 0, F(into), false, false, "usage +1")                    \
  X(put_task_struct, target::task_or_ref, 0, 0, false, false, "usage -1 (frees at 0)")             \
  X(tryget_task_struct, target::task_or_ref, F(into), 0, false, false,                             \
    "usage +1 unless it is 0; `into` gets the task or NULL")                                       \
  X(refcount_inc_not_zero, target::task_or_ref, F(counter) | F(into), 0, false, false,             \
    "refcount_inc_not_zero on `counter`; `into` gets the task or NULL")                            \
  X(put_task_struct_rcu_user, target::task_or_ref, 0, 0, false, false,                             \
    "rcu_users -1 (at 0: call_rcu(delayed_put_task_struct))")                                      \
  X(rcu_read_lock, target::none, 0, 0, false, false, "enters an RCU read-side section")            \
  X(rcu_read_unlock, target::none, 0, 0, false, false, "leaves it")                                \
  X(synchronize_rcu, target::none, 0, 0, true, false, "waits for a grace period")                  \
  X(rcu_barrier, target::none, 0, 0, true, false, "waits until every queued RCU callback has run") \
  X(find_task_by_pid_ns, target::none, F(into), F(pid_of) | F(pid) | F(ns), false, false,          \
    "the task numbered `pid` (or `pid_of`'s number) in `ns`, under the caller's RCU section")      \
  X(bpf_task_acquire, target::task_or_ref, F(into), 0, false, true,                                \
    "the kfunc (the profile decides how it counts); `into` gets the reference or NULL")            \
  X(bpf_task_release, target::ref, 0, 0, false, true, "the kfunc: drops the reference")            \
  X(bpf_task_from_pid, target::none, F(into), F(pid_of) | F(pid), false, true,                     \
    "the kfunc: a reference to the task numbered `pid` (root namespace), or NULL")                 \
  X(bpf_task_from_vpid, target::none, F(into), F(pid_of) | F(pid), false, true,                    \
    "the kfunc (v6.13+): the same in the namespace of the thread's current task")                  \
  X(bpf_task_kptr_get, target::none, F(elem) | F(into), 0, false, true,                            \
    "the kfunc (Nov 2022 .. Apr 2023): a reference to the task in the element's slot, or NULL")    \
  X(bpf_rcu_read_lock, target::none, 0, 0, false, true, "the kfunc: an RCU read-side section")     \
  X(bpf_rcu_read_unlock, target::none, 0, 0, false, true, "the kfunc: its end")                    \
  X(map_update, target::none, F(map) | F(key), F(error), false, false,                             \
    "bpf_map_update_elem(BPF_ANY): a fresh element with an empty slot")                            \
  X(map_delete, target::none, F(map) | F(key), 0, false, false,                                    \
    "bpf_map_delete_elem: the slot is released now, the memory after a grace period")              \
  X(map_lookup, target::none, F(map) | F(key) | F(into), 0, false, false,                          \
    "bpf_map_lookup_elem under the caller's RCU section; `into` gets the element or NULL")         \
  X(kptr_xchg, target::none, F(elem), F(ref) | F(into), false, true,                               \
    "bpf_kptr_xchg on the element's slot: stores `ref` (or NULL), `into` gets the old value")      \
  X(kptr_load, target::none, F(elem) | F(into), 0, false, false,                                   \
    "a plain load of the element's slot (an RCU pointer, valid until the section ends)")           \
  X(set, target::none, F(into), F(ref), false, false,                                              \
    "copies the task pointer in `ref` (or NULL) into `into`: a shared variable, announced to "     \
    "the explorer (explore::yield) so that it interleaves there")                                  \
  X(mark, target::none, F(name), 0, false, false, "names a point on the timeline")                 \
  X(expect, target::task_or_ref, 0,                                                                \
    F(name) | F(usage) | F(rcu_users) | F(freed) | F(null) | F(comm) | F(pid) | F(ns), false,      \
    false, "run only: checks the counters (and more) at this point; explorations skip it")

enum class step_kind : std::uint8_t {
#define TASKLIFE_SCENARIO_STEP_ENUM(n, tgt, req, opt, waits, kfunc, text) n,
  TASKLIFE_SCENARIO_STEPS(TASKLIFE_SCENARIO_STEP_ENUM)
#undef TASKLIFE_SCENARIO_STEP_ENUM
};

struct step_info {
  step_kind kind;
  std::string_view name;
  scenario::target target;
  std::uint32_t required;  // fields that must be there (besides the target)
  std::uint32_t optional;  // fields that may be there (besides the conditions)
  bool waits;              // may wait for a grace period (hands the run's turn on)
  bool kfunc;              // calls a kfunc: the thread must run as a task (`as`)
  std::string_view summary;
};

inline constexpr step_info step_kinds[] = {
#define TASKLIFE_SCENARIO_STEP_INFO(n, tgt, req, opt, waits, kfunc, text) \
  {step_kind::n, #n, tgt, req, opt, waits, kfunc, text},
    TASKLIFE_SCENARIO_STEPS(TASKLIFE_SCENARIO_STEP_INFO)
#undef TASKLIFE_SCENARIO_STEP_INFO
};
#undef F

constexpr const step_info& info(step_kind k) noexcept {
  return step_kinds[static_cast<std::size_t>(k)];
}
constexpr const field_info& info(field f) noexcept {
  return field_kinds[static_cast<std::size_t>(f)];
}

// ---- a parsed scenario
// ----------------------------------------------------------------------------
struct source_pos {
  std::string file;
  int line = 0;
  int column = 0;
};

// "file:line:column: what was wrong; expected ..." — one line ("file: ..." for
// what is about the file as a whole: it cannot be read, it is too large).
class parse_error : public std::runtime_error {
 public:
  parse_error(source_pos pos, const std::string& message);
  const source_pos& where() const noexcept { return pos_; }

 private:
  source_pos pos_;
};

struct step {
  step_kind kind = step_kind::mark;
  source_pos pos;
  std::string task, ref, into, elem, map, pid_of, ns, parent, comm, counter, name;
  std::optional<std::int64_t> key, pid, usage, rcu_users;
  std::optional<bool> freed, null;
  bool thread = false, autoreap = false, new_pid_ns = false;
  std::string if_set, unless_set;
  int error = 0;                            // `error`: the step must fail with -error
  std::vector<semantics_profile> profiles;  // empty: every profile
  std::optional<final_put_mode> final_put;  // empty: every mode
  // One line for timelines: "bpf_task_from_pid(pid_of victim) -> t".
  std::string describe() const;
};

struct task_spec {
  std::string name;
  std::string parent;  // empty: the first task of the root namespace
  std::string comm;    // empty: the name
  std::string ns;      // with new_pid_ns: the namespace it creates
  bool thread = false, autoreap = false, new_pid_ns = false;
  int error = 0;  // the fork must fail with -error (a full pid space: EAGAIN)
  source_pos pos;
};

struct namespace_spec {
  std::string name;
  std::string parent;  // empty: the root
  source_pos pos;
};

struct map_spec {
  std::string name;
  std::int64_t max_entries = 64;
  source_pos pos;
};

struct thread_spec {
  std::string name;
  std::string as;  // the thread's current task (kfuncs need one); empty: none
  std::vector<step> steps;
  source_pos pos;
};

enum class mode : std::uint8_t { run, explore };
std::string_view to_string(mode m) noexcept;

struct expectation {
  mode when = mode::run;
  std::vector<semantics_profile> profiles;       // empty: every variant
  std::vector<final_put_mode> final_put;         // empty: every variant
  bool fails = false;                            // outcome: "fails" (true) or "clean"
  std::optional<explore::failure_kind> failure;  // with fails: its kind
  std::string message;                           // with fails: a part of its message
  source_pos pos;
};

// The limits of the explorer's settings, in a file's [explore] and on the command line.
inline constexpr int max_preemption_bound = 16;
inline constexpr std::uint64_t max_executions_limit = 100'000'000;

// The longest scenario name: it becomes output file names (NAME.json, ...).
inline constexpr std::size_t max_name_length = 64;
// The most pid namespaces a scenario makes ([[namespace]] and new_pid_ns together).
inline constexpr std::size_t max_namespaces = 64;
// The largest scenario file read.
inline constexpr std::size_t max_file_size = std::size_t{1} << 20;

// An errno value's name ("EAGAIN" for EAGAIN or -EAGAIN), for `error` fields.
std::string_view errno_to_string(int error) noexcept;

struct explore_settings {
  int preemption_bound = 2;
  std::uint64_t max_executions = 200'000;
  bool null_paths = true;
};

struct scenario {
  std::string file;      // where it was read from ("" or a built-in's name)
  bool builtin = false;  // find() took it from the built-in library, not from a file
  std::string name;
  std::string title;
  std::string shows;   // what it shows
  std::string commit;  // the kernel commit(s) it is about
  std::vector<semantics_profile> profiles{semantics_profile::current};
  std::vector<final_put_mode> final_put{final_put_mode::immediate};
  int pid_max = 64;
  int reserved_pids = 1;
  std::vector<namespace_spec> namespaces;
  std::vector<task_spec> tasks;
  std::vector<map_spec> maps;
  thread_spec setup;  // steps on the main thread before the threads (its `as` applies)
  std::vector<thread_spec> threads;
  std::vector<std::string> run_order;     // thread names, one per step; then each thread to its end
  std::vector<source_pos> run_order_pos;  // where each entry of run_order is written
  thread_spec teardown;                   // steps after the threads
  std::vector<expectation> expectations;
  explore_settings explore;
};

// Reads a scenario; throws parse_error (file:line:column: ...).
scenario parse(std::string_view text, std::string_view file);
// Reads the file; throws parse_error (also when it cannot be read, is no regular
// file, or is larger than 1 MiB: at most that much plus one byte is read).
scenario load(const std::string& path);
// The text of a scenario file, with load()'s checks (`tasklife show`).
std::string read_file(const std::string& path);

// ---- variants: the configurations compared side by side ---------------------------------------
struct variant {
  semantics_profile profile = semantics_profile::current;
  final_put_mode final_put = final_put_mode::immediate;
  std::string label;  // "rcu_users_inc", or "current, final put deferred" when both modes run
};
std::vector<variant> variants(const scenario& s);

// Whether the scenario's expectations need a full-checks build (TASKLIFE_CHECKS=full):
// a use-after-free is reported only where freed tasks are quarantined and poisoned,
// so an expected use_after_free failure cannot hold in the other tiers.
bool needs_full_checks(const scenario& s);

// ---- results
// ---------------------------------------------------------------------------------------
struct variant_result {
  variant v;
  mode how = mode::run;
  bool replayed = false;                    // the trace is a replay of a schedule
  std::optional<explore::failure> failure;  // what went wrong (run, or the exploration's)
  std::optional<explore::report> report;    // explore only
  // explore: whether the search covered every interleaving within the bound (the
  // space exhausted, by a dfs over every shard), and if not why it stopped.
  bool complete = false;
  std::string stopped;
  std::vector<std::string> point_failures;  // expect steps that did not hold (run)
  trace_data trace;                         // the traced execution
};

enum class backend : std::uint8_t { deterministic, native };

struct run_options {
  backend rcu = backend::deterministic;
  bool trace = true;
};
// Runs each variant once: setup, the threads' steps in the scenario's order
// (each simulated thread on an OS thread of its own), teardown, then the kernel's
// shutdown (leaks are failures).
std::vector<variant_result> run(const scenario& s, const run_options& o,
                                const std::vector<variant>& which);

// The scenario as an explorer model, for one variant; `rec` (may be null) records
// the execution's trace.
explore::model make_model(const scenario& s, const variant& v, trace_data* rec);

// Explores one variant; traces the failure's minimised execution (replayed), or,
// when clean, the first execution of the search (every thread to its end in order).
// `executions` (may be null) counts the executions as they run (progress lines).
variant_result explore_variant(const scenario& s, const variant& v, const explore::options& o,
                               std::atomic<std::uint64_t>* executions = nullptr);
// Replays a schedule string under one variant.
variant_result replay_variant(const scenario& s, const variant& v, std::string_view schedule,
                              const explore::options& o);
// Sets the trace's outcome and marks the failure on it.
void conclude(variant_result& res, const std::string& schedule);
// The explorer options a scenario asks for.
explore::options default_explore_options(const scenario& s);

// The expectations of `s` for mode `m` that the results contradict, each one line
// ("file:line: expected ... under rcu_users_inc, got ..."), and every failed point.
std::vector<std::string> check(const scenario& s, mode m,
                               const std::vector<variant_result>& results);

// The built-in scenarios (scenarios/*.toml, compiled in): name and text.
struct builtin {
  std::string_view name;
  std::string_view text;
};
const std::vector<builtin>& builtins();
// A built-in by name, or a file by path: an argument containing '/' or ending in
// ".toml" is always a file; another is a built-in's name if there is one, else a file.
scenario find(const std::string& name_or_path);
// Whether find() reads `name_or_path` as the built-in of that name (its text), or null.
const builtin* find_builtin(const std::string& name_or_path);

}  // namespace tasklife::scenario
