// tasklife/explore.hpp — can this kfunc protocol go wrong, and how? Every
// interleaving, every grace-period timing and every NULL path, deterministically.
//
// What it is
//   A model is an ordinary C++ function that builds a small world (a kernel, its
//   tasks, maps) and declares simulated threads, each an ordinary callable that
//   uses tasklife's public API. explore() calls the model again and again; each
//   call is one execution, run under a schedule the explorer chooses. Only one
//   simulated thread runs at a time (each on a fiber of its own, on the calling
//   OS thread); it runs until its next scheduling point (sched_point.hpp: every
//   counter operation, RCU read lock and unlock, call_rcu, synchronize_rcu, pid
//   lookup, hash and unhash, slot read and exchange, map operation, lifecycle
//   transition, explore::yield), where the explorer chooses what happens next:
//     - which thread runs its next step;
//     - whether a grace period of a kernel's RCU starts, or ends (only when every
//       reader it waits for has left), or a ready RCU callback runs;
//     - with null_paths: whether a result the verifier treats as possibly NULL
//       (a KF_RET_NULL kfunc, a map lookup, a slot read, an exchange's old value)
//       is NULL on this path, with no reference taken.
//   A failure is any contract violation (use-after-free, leak at teardown, a
//   WARN), refcount warning, verifier violation, failed invariant or check, a
//   deadlock, or a thread that never ends (these two cannot be unwound: the
//   threads left are suspended for good, their stacks kept; docs/explore.md §6,
//   "Abandoned threads"). A failure is reported with its kind and
//   message, the schedule as one replay string, and the timeline of that
//   execution (every step with the events it caused and the counters after them),
//   minimised first: fewest preemptions, then fewest steps.
//
//   Strategies: depth-first search of every schedule with at most
//   preemption_bound preemptions (a switch away from a thread that could have
//   gone on), bound 0 first, then 1, ... (iterative bounding, CHESS), or of every
//   schedule at all (bound -1), then pruned by sleep sets (two steps on different
//   objects commute, so only one of their orders is explored); a random walk; PCT.
//   A depth-first search begins with a short PCT warm-up (options::pct_warmup),
//   which finds most bugs in a few hundred executions; the search proper then
//   covers the whole space within the bound. Budgets by
//   executions and by time. Shards (shard K of N) split the search tree
//   deterministically; jobs runs shards in parallel.
//
//   Nondeterminism the explorer does not control (a clock, an unordered
//   container's order, a real thread, a global counter kept across executions)
//   makes re-executions of the same schedule differ; every re-execution and every
//   replay compares a hash of what happened, step by step, and reports a
//   divergence as a failure of kind `nondeterminism` rather than a wrong answer.
//
// Members
//   options, strategy, failure_kind, stop_reason, step, failure, report
//   execution: config(), thread(), invariant(), check(), run()
//   explore(model, options), replay(model, schedule, options), schedule_problem(),
//   yield(), wait_until()
//
// Lifetime
//   Everything a model builds lives in the model function's frame and dies when
//   it returns, after run(): threads have ended, and the kernels' teardown (leak
//   reports) is part of the execution. A simulated thread's callable may capture
//   the model's locals by reference. Kernels of a model must take their
//   configuration through execution::config() (the deterministic RCU backend the
//   explorer controls, events recorded for the timeline). A thread may also make
//   and destroy a kernel of its own: the explorer forgets its backend when it is
//   destroyed. A kernel kept past its execution is no longer explored (its hooks
//   find the execution gone and do nothing). Each explore() and replay() call
//   runs a watch thread for its duration (options::stall_timeout).
//
// Memory ordering
//   None to speak of: simulated threads of an execution run one at a time on one
//   OS thread, and a switch between them is a function call; sanitizers are told
//   about every switch. Parallel jobs share nothing but the model function, which
//   must therefore not touch state outside its own frame. The watch thread reads
//   one relaxed counter of executions begun (no data rides on it) and is joined
//   before explore() returns. wait_until off the explorer polls: its condition
//   then reads atomics.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <tasklife/export.hpp>
#include <tasklife/history.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/sched_point.hpp>

namespace tasklife::explore {

enum class strategy : std::uint8_t {
  dfs,     // every schedule within the preemption bound (sleep sets when unbounded)
  random,  // a random walk per execution (seeded)
  pct,     // probabilistic concurrency testing: random priorities and change points
};
TASKLIFE_API std::string_view to_string(strategy s) noexcept;

struct options {
  explore::strategy strategy = explore::strategy::dfs;
  // A preemption is a switch away from a thread that could have gone on. Most bugs
  // need very few (CHESS); -1: unbounded. dfs and random.
  int preemption_bound = 2;
  // Sleep sets: schedules that differ only in the order of commuting steps are
  // explored once (dfs). Sound only without a preemption bound, so they apply
  // when preemption_bound is -1; a bounded search explores every order.
  bool reduction = true;
  // Every possibly-NULL result is also explored as NULL.
  bool null_paths = true;
  // At most this many results are NULL on one path (-1: any number). One finds a
  // missing NULL check; more explore the combinations, at a cost that doubles.
  int max_null_paths = 1;
  // NULL paths are explored on executions without preemptions (each program path
  // once, in the order its threads run); true: in every interleaving as well.
  // Implied by an unbounded dfs (preemption_bound -1): every schedule at all,
  // every path in each (its sleep sets are sound with NULL paths only then).
  bool null_paths_with_preemptions = false;
  std::uint64_t max_executions = 1'000'000;
  std::chrono::milliseconds time_budget{60'000};
  std::uint64_t seed = 1;  // random and pct
  // dfs first runs this many PCT executions (seeded): they find most bugs in a
  // few hundred executions, where a depth-first search may need thousands before
  // it reaches the right branch. The search proper then proves the rest.
  std::uint64_t pct_warmup = 1000;
  unsigned pct_depth = 3;  // pct: the bug depth it targets
  // This process explores shard `shard` of `shards` (dfs): results of all shards
  // together are the whole search.
  unsigned shard = 0;
  unsigned shards = 1;
  // Parallel workers, each exploring its share of this shard.
  unsigned jobs = 1;
  bool stop_at_first_failure = true;
  bool minimize = true;
  // A thread that takes more steps than this in one execution is a failure
  // (a loop that never ends).
  std::size_t max_steps = 20'000;
  // Per simulated thread, min_stack_size to max_stack_size. A thread that overflows its
  // stack hits a guard page (SIGSEGV): deep recursion needs a larger one.
  std::size_t stack_size = std::size_t{256} << 10;
  static constexpr std::size_t min_stack_size = std::size_t{32} << 10;
  static constexpr std::size_t max_stack_size = std::size_t{1} << 30;
  // A thread left suspended for good (a deadlock, the step limit) keeps its stack
  // mapped until the process ends. Once the process holds more than this many,
  // execution::thread() declares no more threads and the execution fails
  // (exception) with that diagnostic: a bounded failure, not unbounded growth.
  std::size_t max_abandoned_stacks = 4096;  // about 1 GiB at the default stack_size
  // A simulated thread that blocks the OS thread (a mutex of its own across a
  // scheduling point, a condition variable, a real thread) stops the exploration
  // for good. When no execution has begun for this long, a watch thread prints
  // that to stderr and aborts the process: a diagnostic instead of a silent hang
  // (0: wait forever; set it when a debugger may hold a thread for long).
  std::chrono::milliseconds stall_timeout{30'000};
};

enum class failure_kind : std::uint8_t {
  use_after_free,      // a freed task used through the library
  leak,                // a task never freed when its kernel was torn down
  contract_violation,  // any other contract violation (a kernel WARN, misuse, ...)
  refcount_warning,    // refcount_t saturated and warned (ADD_UAF, SUB_UAF, ...)
  verifier_violation,  // a program broke the verifier's rules on this path
  invariant,           // a model's invariant or check failed
  deadlock,            // threads left that can never run again (abandoned, see above)
  step_limit,          // a thread exceeded options::max_steps (abandoned, see above)
  exception,           // a simulated thread or the model threw
  nondeterminism,      // a re-execution diverged: something the explorer does not control
  usage,               // invalid options or a malformed schedule string: nothing was run
};
TASKLIFE_API std::string_view to_string(failure_kind k) noexcept;

// One step of an execution's timeline.
struct step {
  std::size_t index = 0;
  std::string thread;  // the simulated thread's name, or "rcu" for grace periods and callbacks
  std::string action;  // what the step began with: "pid_lookup", "gp_end", "callback", ...
  std::string detail;  // what it was about (the kfunc, the object)
  bool preemption = false;
  std::vector<task_event> events;  // what it did to tasks, with the counters after each
};

struct failure {
  failure_kind kind = failure_kind::contract_violation;
  std::string message;
  std::string schedule;  // replay(model, schedule) re-runs this execution exactly
  std::vector<step> timeline;
  unsigned preemptions = 0;
  std::size_t steps = 0;
  // The timeline as text, one line per step and per event.
  TASKLIFE_API std::string format_timeline() const;
};

// Why a search stopped.
enum class stop_reason : std::uint8_t {
  exhausted,   // every schedule within the bound was explored
  failure,     // a failure, with stop_at_first_failure
  executions,  // options::max_executions reached
  time,        // options::time_budget reached
  // random and pct: 64 executions in a row repeated schedules seen before (a
  // model with little to choose has been covered; dfs proves it)
  repeats,
  usage,   // invalid options or schedule: nothing was run
  replay,  // replay(): the one execution of the schedule
};
TASKLIFE_API std::string_view to_string(stop_reason r) noexcept;

struct report {
  std::uint64_t executions = 0;  // complete executions run
  std::uint64_t pruned = 0;      // schedules skipped by the reduction (dfs)
  bool exhausted = false;        // every schedule within the bound was explored
  explore::stop_reason stopped = explore::stop_reason::exhausted;
  std::chrono::nanoseconds wall{0};
  std::optional<explore::failure> failure;  // minimised when options::minimize
  std::uint64_t failures = 0;               // failing executions seen
  bool ok() const noexcept { return !failure.has_value(); }
  // "explored N executions (P pruned by the reduction), space exhausted, T ms" or
  // "..., space not exhausted (stopped: time budget), T ms", and the failure's kind.
  TASKLIFE_API std::string summary() const;
};

class execution_state;

// What a model function gets: its execution.
class TASKLIFE_API execution {
 public:
  explicit execution(execution_state& state) noexcept : state_(state) {}
  execution(const execution&) = delete;
  execution& operator=(const execution&) = delete;

  // `c` with what the explorer needs: the deterministic RCU backend it controls,
  // and every task traced from birth for the timeline.
  kernel_config config(kernel_config c = {}) const;
  // A simulated thread. Runs when run() runs, under the explorer's schedule.
  void thread(std::string name, std::function<void()> body);
  // Checked after every step and at the end: false is a failure.
  void invariant(std::string name, std::function<bool()> holds);
  // A check of the model's own (after run(), or inside a thread): false is a failure.
  void check(bool ok, std::string_view message);
  // Runs the threads to their end. Call once, after declaring them.
  void run();

 private:
  execution_state& state_;
};

using model = std::function<void(execution&)>;

// Explores the model. Options out of range (shards 0, shard >= shards, jobs 0, a
// stack outside min_stack_size..max_stack_size, a bound or NULL-path count below
// -1, a time budget not above 0, max_executions 0, pct_depth 0) explore nothing,
// nor does a call from a simulated thread: the report's failure is of kind
// `usage` and says which.
TASKLIFE_API report explore(const model& m, const options& o = {});
// Re-runs one schedule exactly (a failure's `schedule`); the report's failure is
// that execution's, of kind usage if the string is no schedule, or of kind
// nondeterminism if the schedule does not match the model (another model or
// profile made it, the model changed, or something it depends on is not
// controlled). The schedule's hash covers the failure's kind: a failing schedule
// replayed on a fixed model is a mismatch, not a silent pass.
TASKLIFE_API report replay(const model& m, std::string_view schedule, const options& o = {});
// What is wrong with the form of a schedule string ("tl1-<signature>-<events>-
// <choices>~<NULL-path options>", as a failure's `schedule` has it), in the words
// replay() would use; nullopt when it is well-formed. Whether it belongs to a
// given model only replay() can tell.
TASKLIFE_API std::optional<std::string> schedule_problem(std::string_view schedule);

// A scheduling point of the user's own: before touching state the simulated
// threads share outside tasklife's API (an atomic flag, a variable), so that the
// explorer can interleave there. `object` names what is touched (for the
// reduction: nullptr conflicts with everything).
TASKLIFE_API void yield(const void* object = nullptr);

// Waits until `ready()` holds: a spin loop, written so that the explorer can see
// it. On a simulated thread the thread blocks (it is no option of the scheduler
// until `ready()` holds, evaluated by the explorer after every step, and a switch
// away from it is no preemption, so a bounded search still reaches the thread it
// waits for); if no thread can ever make it hold, the execution fails as a
// deadlock. `ready` must only read (no scheduling point of its own); an exception
// it throws is rethrown in the waiting thread. Anywhere else it polls, with
// std::this_thread::yield() between two calls (`ready` then reads atomics).
// `object` names what `ready` reads, as for yield().
TASKLIFE_API void wait_until(const std::function<bool()>& ready, const void* object = nullptr);

}  // namespace tasklife::explore
