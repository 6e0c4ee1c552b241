// BPF-style programs under the run-time verifier (prog.hpp): the kernel's
// task_kfunc_success.c programs run clean, each task_kfunc_failure.c program
// is reported with the verifier's own words at the offending call, and the
// simulated kernel stays consistent after a bad program (the vetoed operation
// does not happen; what the program leaked the runner releases).
//
// The programs are one table (kSuccess, kFailure): each row is a program with its
// expected result, as the selftests annotate theirs with __success or
// __failure __msg("..."), and one parameterised test runs every row and checks
// what every row must satisfy. The reporting modes and the kfunc table are tests
// of their own.
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <ostream>
#include <source_location>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/kfunc.hpp>
#include <tasklife/map.hpp>
#include <tasklife/prog.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/values.hpp"

namespace tasklife {
namespace {

using test::task_value;

using task_map = bpf_hash_map<pid_t, task_value>;

// "<this file>:<line>", as the checker formats a call site.
std::string At(unsigned line) {
  return std::string(__FILE__) + ":" + std::to_string(line);
}

std::string Describe(const prog_run_result& r) {
  std::string out;
  for (const violation& v : r.violations) {
    out += std::string(to_string(v.kind)) + " [" + std::string(v.kfunc) + "] " + v.message +
           " (line " + std::to_string(v.where.line()) + ")\n";
  }
  return out;
}

// tasks_kfunc_map_insert (task_kfunc_common.h): an empty value with BPF_NOEXIST,
// look it up, acquire the task, xchg it in; an old task that comes back is released.
long MapInsert(task_map& map, task_struct* p) {
  const pid_t key = p->pid;
  const task_value empty{};
  if (const long status = bpf_map_update_elem(&map, &key, &empty, BPF_NOEXIST); status != 0) {
    return status;
  }
  task_value* v = bpf_map_lookup_elem(&map, &key);
  if (v == nullptr) {
    (void)bpf_map_delete_elem(&map, &key);
    return -ENOENT;
  }
  task_struct* acquired = bpf_task_acquire(p);
  if (acquired == nullptr) {
    return -ENOENT;
  }
  if (task_struct* old = bpf_kptr_xchg(&v->task, acquired); old != nullptr) {
    bpf_task_release(old);
    return -EEXIST;
  }
  return 0;
}

// tasks_kfunc_map_value_lookup.
task_value* MapLookup(task_map& map, const task_struct* p) {
  const pid_t key = p->pid;
  return bpf_map_lookup_elem(&map, &key);
}

class ProgTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override {
    return {.name = "prog-test", .profile = semantics_profile::current};
  }
  void SetUp() override {
    kernel_test::SetUp();
    init_ = Fork("init");
  }
  void TearDown() override {
    for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it) {
      retire(*it);
    }
    kernel_test::TearDown();
  }

  task_struct* Fork(const char* comm, task_struct* parent = nullptr, bool new_ns = false) {
    task_struct* t = fork_task(comm, parent, {.new_pid_ns = new_ns});
    tasks_.push_back(t);
    return t;
  }

  struct forked_with {
    task_struct* child;
    prog_run_result result;
  };
  // Forks a child of init with `p` attached to task_newtask: the program runs with
  // the new task as its (trusted) argument, as `as` if given (the forking thread
  // runs as that task), else as the new task itself.
  forked_with ForkWith(bpf_prog& p, const char* comm, task_struct* as = nullptr) {
    std::vector<prog_run_result> results;
    bpf_link link = p.attach(k().task_newtask(),
                             [&results](const prog_run_result& r) { results.push_back(r); });
    task_struct* child = nullptr;
    if (as != nullptr) {
      const current_task_scope scope(as);
      child = Fork(comm, init_);
    } else {
      child = Fork(comm, init_);
    }
    EXPECT_TRUE(link.detach());
    EXPECT_FALSE(k().task_newtask().enabled()) << "the link detached the only probe";
    EXPECT_EQ(results.size(), 1U) << "the program ran once per fork";
    return {child, results.empty() ? prog_run_result{} : results.front()};
  }

  // Stashes a reference to `t` in `map` the selftest way, from a tracing program.
  void Stash(task_map& map, task_struct* t) {
    bpf_prog insert(k(), prog_type::tracing, "tp_btf/task_newtask",
                    [&map](task_struct* task) { return static_cast<int>(MapInsert(map, task)); });
    const prog_run_result r = insert.run(init_, t);
    EXPECT_TRUE(r.ok()) << Describe(r);
    EXPECT_EQ(r.ret, 0);
  }

  bool RcuHeldOutsidePrograms() {
    const current_task_scope scope(init_);
    return k().rcu().rcu_read_lock_held();
  }

  task_struct* init_ = nullptr;
  std::vector<task_struct*> tasks_;  // retired in reverse order of their forks
};

// ---- the table --------------------------------------------------------------------------------

// Where a program marks a call for its expected violations (prog_env::next_line).
enum class mark : std::uint8_t { acquire, release, call };
// Where a violation is reported: at a marked call, or at program exit (the run).
enum class site : std::uint8_t { acquire, release, call, program_exit };

// What a program sees besides its argument, as the selftests' globals and maps.
struct prog_env {
  kernel& k;
  task_map& map;
  task_struct* init;    // pid 1
  task_struct* victim;  // a child of init, the usual subject
  task_struct* cinit;   // pid 1 of a new namespace (rows that run in a container)
  int err = 0;          // the selftests' `err`: 0 unless the program went wrong
  std::array<unsigned, 3> lines{};
  // Marks the next line as the place of `m` (the call a violation is expected at).
  void next_line(mark m, std::source_location here = std::source_location::current()) {
    lines[static_cast<std::size_t>(m)] = here.line() + 1;
  }
};

using prog_body = int (*)(prog_env& env, task_struct* arg);

// A program's type and its SEC() name.
struct program {
  prog_type type;
  std::string_view section;
};
constexpr program kNewTask{prog_type::tracing, "tp_btf/task_newtask"};
constexpr program kSyscall{prog_type::syscall, "syscall"};
constexpr program kTaskFree{prog_type::lsm, "lsm/task_free"};  // its argument: not RCU-safe
constexpr program kKprobe{prog_type::kprobe, "kprobe/free_task"};
constexpr program kKretprobe{prog_type::kretprobe, "kretprobe/free_task"};
constexpr program kSetTaskComm{prog_type::tracing, "fentry/__set_task_comm"};  // legacy argument

enum class run_kind : std::uint8_t {
  fork_child,          // attached to task_newtask while init forks "child": its argument
                       // and its current are the child
  fork_child_as_init,  // the same, the forking thread running as init: current is init
  run,                 // bpf_prog::run(as, arg)
};
enum class who : std::uint8_t { none, init, victim, cinit, cinit_child, thread };

// How a row's program runs.
struct run_spec {
  run_kind kind;
  who as = who::none;
  who arg = who::none;
};
constexpr run_spec kForkChild{run_kind::fork_child};
constexpr run_spec kForkChildAsInit{run_kind::fork_child_as_init};
constexpr run_spec kOnVictim{run_kind::run, who::init, who::victim};  // as init
constexpr run_spec kOnInit{run_kind::run, who::init, who::init};
constexpr run_spec kWithoutArgument{run_kind::run, who::init, who::none};
constexpr run_spec kInContainer{run_kind::run, who::cinit, who::cinit};  // pid 1 of a namespace
constexpr run_spec kInContainerTask{run_kind::run, who::cinit_child, who::cinit_child};
constexpr run_spec kInContainerWithoutArgument{run_kind::run, who::cinit, who::none};
constexpr run_spec kOnAThreadOfVictim{run_kind::run, who::init, who::thread};  // CLONE_THREAD

// A violation the checker must report, as the verifier would: `msg` is the
// verifier's message (the selftest's __msg); `detail`, if any, is what tasklife
// adds in parentheses, with {acquire} and {release} standing for the marked sites.
struct expected_violation {
  violation_kind kind;
  std::string_view kfunc;  // "" at program exit
  std::string_view msg;
  std::string_view detail;
  site at;
  bool names_subject;        // its argument is the subject (else NULL, unless names_other)
  bool names_other = false;  // its argument is neither NULL nor the subject
};

struct prog_case {
  std::string_view name = {};     // the test's name
  std::string_view mirrors = {};  // the kernel selftest program, or the rule of prog.hpp
  program prog = kNewTask;
  run_spec run = kOnVictim;
  bool stash_victim = false;  // a reference to the victim in the map before the run
  prog_body body = nullptr;
  // The expected result. The subject (the forked child, else the victim) has
  // 2 + map_refs rcu_users afterwards; every task has 2 once the map is gone.
  int ret = 0;
  int err = 0;
  const char* why = "";  // said when err differs
  std::size_t map_elements = 0;
  unsigned map_refs = 0;
  std::vector<expected_violation> violations = {};  // none: __success
  // What the row needs compiled in: a pointer that is no task is told apart by the
  // registry of known tasks, which only checked builds keep (kernel::knows_task).
  bool needs_checks = false;
};

void PrintTo(const prog_case& c, std::ostream* os) {
  *os << c.name;
}

std::string Expand(std::string_view detail, const prog_env& env) {
  std::string out(detail);
  for (const auto& [token, m] : {std::pair{std::string_view("{acquire}"), mark::acquire},
                                 std::pair{std::string_view("{release}"), mark::release}}) {
    if (const std::size_t at = out.find(token); at != std::string::npos) {
      out.replace(at, token.size(), At(env.lines[static_cast<std::size_t>(m)]));
    }
  }
  return out;
}

// test_acquire_release (task_kfunc_success.c): acquire and release; 1 if the
// acquire failed.
int AcquireRelease(task_struct* task) {
  task_struct* acquired = bpf_task_acquire(task);
  if (acquired == nullptr) {
    return 1;
  }
  EXPECT_EQ(rcu_users(acquired), 3U) << "2 (reaper, scheduler) + the program's reference";
  bpf_task_release(acquired);
  return 0;
}

// lookup_compare_pid (task_kfunc_success.c): bpf_task_from_pid finds `p` by its
// pid; 1 if it found nothing.
int LookupComparePid(task_struct* p) {
  task_struct* acquired = bpf_task_from_pid(p->pid);
  if (acquired == nullptr) {
    return 1;
  }
  EXPECT_EQ(acquired, p);
  EXPECT_EQ(rcu_users(acquired), 3U);
  bpf_task_release(acquired);
  return 0;
}

// bpf_get_current_task_btf() in a program attached to task_newtask while init
// forks: the forking task, not the tracepoint's argument.
task_struct* CurrentIsInit(const prog_env& env) {
  task_struct* current = bpf_get_current_task_btf();
  EXPECT_EQ(current, env.init) << "current is the forking task, not the tracepoint's argument";
  return current;
}

// insert_lookup_task (task_kfunc_failure.c): the task inserted, then its value;
// err 1 if the insert failed, 2 if the lookup did.
task_value* InsertLookup(prog_env& env, task_struct* task) {
  if (MapInsert(env.map, task) != 0) {
    env.err = 1;
    return nullptr;
  }
  task_value* v = MapLookup(env.map, task);
  if (v == nullptr) {
    env.err = 2;
  }
  return v;
}

// The reference in v's slot taken out (bpf_kptr_xchg with NULL); err 3 if empty.
task_struct* TakeOut(prog_env& env, task_value* v) {
  task_struct* kptr = bpf_kptr_xchg(&v->task, nullptr);
  if (kptr == nullptr) {
    env.err = 3;
  }
  return kptr;
}

// bpf_task_from_vpid(1) must be current, the init of current's fresh namespace
// (test_task_from_vpid_current); from any other task of it, it is still the init.
int FromVpidOneIsCurrent(prog_env& env, task_struct*) {
  task_struct* v_task = bpf_task_from_vpid(1);
  if (v_task == nullptr) {
    env.err = 1;
    return 0;
  }
  EXPECT_EQ(v_task, env.cinit) << "vpid 1 is the namespace's init";
  if (v_task != bpf_get_current_task_btf()) {
    env.err = 2;
  }
  bpf_task_release(v_task);
  return 0;
}

// task_kfunc_from_lsm_task_free and task_kfunc_acquire_unsafe_kretprobe: acquire
// the argument, release what comes back. Both are vetoed: the call does not happen.
int AcquireTheArgument(prog_env& env, task_struct* task) {
  env.next_line(mark::call);
  task_struct* acquired = bpf_task_acquire(task);
  EXPECT_EQ(acquired, nullptr) << "vetoed: the call did not happen";
  if (acquired == nullptr) {
    return 0;
  }
  bpf_task_release(acquired);
  return 0;
}

// task_kfunc_success.c, and the programs tasklife adds that must run clean.
const std::vector<prog_case> kSuccess = {
    {.name = "TestTaskAcquireReleaseArgument",
     .mirrors = "test_task_acquire_release_argument",
     .prog = kNewTask,
     .run = kForkChild,
     .body = [](prog_env&, task_struct* task) { return AcquireRelease(task); }},
    {.name = "TestTaskAcquireReleaseCurrent",
     .mirrors = "test_task_acquire_release_current",
     .prog = kNewTask,
     .run = kForkChildAsInit,
     .body = [](prog_env& env, task_struct*) { return AcquireRelease(CurrentIsInit(env)); }},
    // A reference moved into a map is not leaked: the map's destruction
    // (bpf_obj_free_fields on every element) releases it, once.
    {.name = "TestTaskAcquireLeaveInMap",
     .mirrors = "test_task_acquire_leave_in_map",
     .prog = kNewTask,
     .run = kForkChild,
     .body = [](prog_env& env, task_struct* task) { return MapInsert(env.map, task) == 0 ? 0 : 1; },
     .map_elements = 1,
     .map_refs = 1},
    {.name = "XchgOutOfTheMapAndRelease",
     .mirrors = "test_task_xchg_release",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct* task) {
           task_value* v = InsertLookup(env, task);
           task_struct* kptr = v != nullptr ? TakeOut(env, v) : nullptr;
           if (kptr == nullptr) {
             return 0;
           }
           EXPECT_EQ(rcu_users(kptr), 3U) << "the slot's reference is now the program's";
           bpf_task_release(kptr);
           return 0;
         },
     .map_elements = 1},  // the element stays, its slot empty
    {.name = "SlotReadUnderTheImplicitRcuOfANonSleepableProgramMayBeAcquired",
     .mirrors = "test_task_map_acquire_release",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct* task) {
           task_value* v = InsertLookup(env, task);
           if (v == nullptr) {
             return 0;
           }
           task_struct* kptr = v->task.get();  // no bpf_rcu_read_lock: the program's own RCU
           if (kptr == nullptr) {
             env.err = 3;
             return 0;
           }
           task_struct* acquired = bpf_task_acquire(kptr);
           if (acquired == nullptr) {
             env.err = 4;
             return 0;
           }
           EXPECT_EQ(rcu_users(acquired), 4U) << "2 + the map's + the program's";
           bpf_task_release(acquired);
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1},  // the map's reference stays
    {.name = "SlotReadUnderExplicitRcuInASleepableSyscallProgramMayBeAcquired",
     .mirrors = "prog.hpp: a slot read inside bpf_rcu_read_lock() is an RCU pointer",
     .prog = kSyscall,
     .run = kWithoutArgument,
     .stash_victim = true,
     .body =
         [](prog_env& env, task_struct*) {
           const pid_t key = env.victim->pid;
           bpf_rcu_read_lock();
           task_value* v = bpf_map_lookup_elem(&env.map, &key);
           task_struct* kptr = v != nullptr ? v->task.get() : nullptr;
           task_struct* acquired = kptr != nullptr ? bpf_task_acquire(kptr) : nullptr;
           bpf_rcu_read_unlock();
           if (acquired == nullptr) {
             env.err = 1;
             return 0;
           }
           EXPECT_EQ(rcu_users(acquired), 4U);
           bpf_task_release(acquired);  // a referenced pointer outlives the RCU section
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1},
    {.name = "TestTaskFromPidArg",
     .mirrors = "test_task_from_pid_arg",
     .prog = kNewTask,
     .run = kForkChild,
     .body = [](prog_env&, task_struct* task) { return LookupComparePid(task); }},
    {.name = "TestTaskFromPidCurrent",
     .mirrors = "test_task_from_pid_current",
     .prog = kNewTask,
     .run = kForkChildAsInit,
     .body = [](prog_env& env, task_struct*) { return LookupComparePid(CurrentIsInit(env)); }},
    {.name = "TestTaskFromPidInvalid",
     .mirrors = "test_task_from_pid_invalid",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct* task) {
           // Reads of comm inside the member are accepted.
           (void)bpf_strncmp(task->comm, 12, "foo");
           (void)bpf_strncmp(task->comm, 16, "foo");
           (void)bpf_strncmp(&task->comm[8], 4, "foo");
           task_struct* acquired = bpf_task_from_pid(-1);
           if (acquired != nullptr) {
             env.err = 1;
             bpf_task_release(acquired);
             return 0;
           }
           acquired = bpf_task_from_pid(static_cast<std::int32_t>(0xcafef00dU));
           if (acquired != nullptr) {
             env.err = 2;
             bpf_task_release(acquired);
           }
           return 0;
         }},
    {.name = "FromVpidOneIsTheInitOfCurrentsFreshNamespace",
     .mirrors = "test_task_from_vpid_current, as a tracing program",
     .prog = kNewTask,
     .run = kInContainer,
     .body = FromVpidOneIsCurrent,
     .why = "the namespace's init is current itself"},
    {.name = "FromVpidOneFromASecondTaskOfTheNamespaceIsItsInitNotCurrent",
     .mirrors = "test_task_from_vpid_current, from another task of the namespace",
     .prog = kNewTask,
     .run = kInContainerTask,
     .body = FromVpidOneIsCurrent,
     .err = 2,
     .why = "from a second task of the namespace, vpid 1 is not current"},
    {.name = "FromVpidOfInvalidOrAbsentNumbersIsNull",
     .mirrors = "test_task_from_vpid_invalid, as a tracing program",
     .prog = kNewTask,
     .run = kInContainer,
     .body =
         [](prog_env& env, task_struct*) {
           int step = 0;
           for (const std::int32_t vpid : {-1, 2, 9999}) {
             ++step;
             if (task_struct* v_task = bpf_task_from_vpid(vpid); v_task != nullptr) {
               env.err = step;
               bpf_task_release(v_task);
               return 0;
             }
           }
           return 0;
         },
     .why = "only current lives in the fresh namespace"},
    // SEC("syscall"), calling bpf_get_current_task_btf (syscall_prog_func_proto
    // falls back to tracing_prog_func_proto, which has it).
    {.name = "TestTaskFromVpidCurrent",
     .mirrors = "test_task_from_vpid_current",
     .prog = kSyscall,
     .run = kInContainerWithoutArgument,
     .body = FromVpidOneIsCurrent},
    // The local-object half: a task stashed in a bpf_obj_new object is released by
    // bpf_obj_drop, exactly once.
    {.name = "TestTaskXchgRelease",
     .mirrors = "test_task_xchg_release",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct* task) {
           task_value* v = InsertLookup(env, task);
           task_struct* kptr = v != nullptr ? TakeOut(env, v) : nullptr;
           if (kptr == nullptr) {
             return 0;
           }
           auto* local = bpf_obj_new<task_value>();
           kptr = bpf_kptr_xchg(&local->task, kptr);
           if (kptr != nullptr) {
             env.err = 5;
             bpf_obj_drop(local);
             bpf_task_release(kptr);
             return 0;
           }
           kptr = bpf_kptr_xchg(&local->task, nullptr);
           if (kptr == nullptr) {
             env.err = 6;
             bpf_obj_drop(local);
             return 0;
           }
           // Stash a copy into the local kptr and check it is released with the object.
           task_struct* acquired = bpf_task_acquire(kptr);
           if (acquired == nullptr) {
             env.err = 7;
             bpf_obj_drop(local);
             bpf_task_release(kptr);
             return 0;
           }
           const unsigned refcnt = rcu_users(acquired);
           EXPECT_EQ(refcnt, 4U) << "2 + kptr + the stashed copy";
           acquired = bpf_kptr_xchg(&local->task, acquired);
           if (acquired != nullptr) {
             env.err = 8;
             bpf_obj_drop(local);
             bpf_task_release(kptr);
             bpf_task_release(acquired);
             return 0;
           }
           bpf_obj_drop(local);
           const unsigned refcnt_after_drop = rcu_users(kptr);
           EXPECT_EQ(refcnt_after_drop, 3U) << "bpf_obj_drop released the stashed copy, once";
           if (refcnt != refcnt_after_drop + 1) {
             env.err = 9;
             bpf_task_release(kptr);
             return 0;
           }
           bpf_task_release(kptr);
           return 0;
         },
     .map_elements = 1},
    {.name = "TestTaskMapAcquireRelease",
     .mirrors = "test_task_map_acquire_release",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct* task) {
           task_value* v = InsertLookup(env, task);
           if (v == nullptr) {
             return 0;
           }
           bpf_rcu_read_lock();
           task_struct* kptr = v->task.get();
           if (kptr == nullptr) {
             env.err = 3;
           } else {
             kptr = bpf_task_acquire(kptr);
             if (kptr == nullptr) {
               env.err = 4;
             } else {
               bpf_task_release(kptr);
             }
           }
           bpf_rcu_read_unlock();
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1},
    {.name = "TestTaskCurrentAcquireRelease",
     .mirrors = "test_task_current_acquire_release",
     .prog = kNewTask,
     .run = kForkChildAsInit,
     .body =
         [](prog_env& env, task_struct*) {
           task_struct* current = CurrentIsInit(env);
           task_struct* acquired = bpf_task_acquire(current);
           if (acquired != nullptr) {
             bpf_task_release(acquired);
           } else {
             env.err = 1;
           }
           return 0;
         }},
    // task->group_leader is a BTF_TYPE_SAFE_RCU field: inside the program's RCU
    // section an RCU pointer, never NULL, which bpf_task_acquire (KF_RCU) takes.
    {.name = "TaskKfuncAcquireTrustedWalked",
     .mirrors = "task_kfunc_acquire_trusted_walked (task_kfunc_success.c since v6.4)",
     .prog = kNewTask,
     .run = kOnAThreadOfVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           task_struct* leader = btf_walk(task, &task_struct::group_leader);
           EXPECT_EQ(leader, env.victim) << "a thread's group leader";
           EXPECT_NE(leader, task);
           task_struct* acquired = bpf_task_acquire(leader);
           if (acquired != nullptr) {
             EXPECT_EQ(rcu_users(acquired), 3U);
             bpf_task_release(acquired);
           } else {
             env.err = 1;
           }
           return 0;
         }},
    // Three weak declarations of bpf_task_acquire under ___flavor names (libbpf
    // 5964a223f5e4): ___one has the kernel's prototype and resolves; ___two (one
    // parameter too many) and ___three (void * where the kernel has a struct
    // pointer) are found by name but fail bpf_core_types_are_compat, so they are
    // NULL, and their branches are dead code the verifier never checks.
    {.name = "TestTaskKfuncFlavorRelo",
     .mirrors = "test_task_kfunc_flavor_relo (task_kfunc_success.c since v6.6)",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct* task) {
           const weak_kfunc<task_struct*(task_struct*)> one(env.k, "bpf_task_acquire___one");
           const weak_kfunc<task_struct*(task_struct*, void*)> two(env.k, "bpf_task_acquire___two");
           const weak_kfunc<task_struct*(void*)> three(env.k, "bpf_task_acquire___three");
           task_struct* acquired = nullptr;
           if (bpf_ksym_exists(one)) {
             EXPECT_EQ(one.target(), kfunc_id::bpf_task_acquire);
             acquired = bpf_task_acquire(task);  // the call through bpf_task_acquire___one
           } else if (bpf_ksym_exists(two)) {
             env.err = 3;
             return 0;
           } else if (bpf_ksym_exists(three)) {
             env.err = 4;
             return 0;
           }
           if (acquired != nullptr) {
             bpf_task_release(acquired);
           } else {
             env.err = 5;
           }
           return 0;
         }},
    // Whether one flavor resolves decides nothing about another: neither of the two
    // incompatible declarations resolves on its own.
    {.name = "TestTaskKfuncFlavorReloNotFound",
     .mirrors = "test_task_kfunc_flavor_relo_not_found (task_kfunc_success.c since v6.6)",
     .prog = kNewTask,
     .run = kForkChild,
     .body =
         [](prog_env& env, task_struct*) {
           if (bpf_ksym_exists(weak_kfunc<task_struct*(task_struct*, void*)>(
                   env.k, "bpf_task_acquire___two"))) {
             env.err = 1;
           } else if (bpf_ksym_exists(
                          weak_kfunc<task_struct*(void*)>(env.k, "bpf_task_acquire___three"))) {
             env.err = 2;
           }
           return 0;
         }},
    {.name = "TestTaskFromVpidInvalid",
     .mirrors = "test_task_from_vpid_invalid",
     .prog = kSyscall,
     .run = kInContainerWithoutArgument,
     .body =
         [](prog_env& env, task_struct*) {
           task_struct* v_task = bpf_task_from_vpid(-1);
           if (v_task != nullptr) {
             env.err = 1;
           } else if (v_task = bpf_task_from_vpid(2); v_task != nullptr) {
             env.err = 2;  // only current lives in the fresh namespace
           } else if (v_task = bpf_task_from_vpid(9999); v_task != nullptr) {
             env.err = 3;
           }
           if (v_task != nullptr) {
             bpf_task_release(v_task);
           }
           return 0;
         }},
    // The same destructor path with nothing else in the way: the reference a
    // program moved into a local object belongs to the object, and bpf_obj_drop's
    // destructor (bpf_task_release_dtor) is the kernel's release, not a program's
    // bpf_task_release.
    {.name = "ObjDropInsideAProgramReleasesTheStashedReference",
     .mirrors = "prog.hpp: bpf_obj_drop releases what the object holds",
     .prog = kNewTask,
     .run = kOnInit,
     .body =
         [](prog_env& env, task_struct*) {
           task_struct* ref = bpf_task_from_pid(env.victim->pid);
           if (ref == nullptr) {
             return 1;
           }
           auto* local = bpf_obj_new<task_value>();
           if (task_struct* old = bpf_kptr_xchg(&local->task, ref); old != nullptr) {
             bpf_task_release(old);
           }
           EXPECT_EQ(rcu_users(env.victim), 3U);
           bpf_obj_drop(local);
           EXPECT_EQ(rcu_users(env.victim), 2U)
               << "the object's destructor released the stashed reference";
           return 0;
         }},
};

constexpr std::string_view kExpectsRefcounted =
    "release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID";
constexpr std::string_view kNotRcu = "R1 must be a rcu pointer";
constexpr std::string_view kPossiblyNull = "Possibly NULL pointer passed to trusted arg0";
constexpr std::string_view kNotAllowed = "calling kernel function bpf_task_acquire is not allowed";
constexpr std::string_view kMustPoint =
    "arg#0 pointer type STRUCT task_struct must point to scalar, or struct with scalar";
// btf_struct_walk's words, with offsets in tasklife's task_struct layout.
std::string_view CommBeyond(std::size_t off, std::size_t size) {
  static std::deque<std::string> texts;  // never moved: the rows keep views of them
  texts.push_back("access beyond the end of member comm (mend:" +
                  std::to_string(offsetof(task_struct, comm) + TASK_COMM_LEN) +
                  ") in struct task_struct with off " + std::to_string(off) + " size " +
                  std::to_string(size));
  return texts.back();
}

// task_kfunc_failure.c, one program per violation kind, and the rules of
// prog.hpp that have no selftest of their own.
const std::vector<prog_case> kFailure = {
    {.name = "TaskKfuncAcquireUnreleased",
     .mirrors = "task_kfunc_acquire_unreleased",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::acquire);
           task_struct* acquired = bpf_task_acquire(task);
           if (acquired != nullptr) {
             EXPECT_EQ(rcu_users(acquired), 3U);
           }
           return 0;  // no release: the runner releases it
         },
     .violations = {{violation_kind::unreleased_ref, "", "Unreleased reference id=1",
                     "acquired by bpf_task_acquire at {acquire}", site::program_exit, true}}},
    {.name = "NullArgument",
     .mirrors = "task_kfunc_acquire_null and task_kfunc_from_pid_no_null_check",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct*) {
           env.next_line(mark::acquire);
           task_struct* acquired = bpf_task_acquire(nullptr);
           (void)acquired;
           task_struct* found = bpf_task_from_pid(-1);  // no NULL check
           env.next_line(mark::release);
           bpf_task_release(found);
           return 0;
         },
     .violations = {{violation_kind::null_arg, "bpf_task_acquire",
                     "Possibly NULL pointer passed to trusted arg0", "", site::acquire, false},
                    {violation_kind::null_arg, "bpf_task_release",
                     "Possibly NULL pointer passed to trusted arg0", "", site::release, false}}},
    // The tracepoint's argument is trusted, not referenced.
    {.name = "TaskKfuncReleaseUnacquired",
     .mirrors = "task_kfunc_release_unacquired",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::call);
           bpf_task_release(task);  // not carried out
           return 0;
         },
     .violations = {{violation_kind::release_unacquired, "bpf_task_release", kExpectsRefcounted, "",
                     site::call, true}}},
    // A pointer read from a slot may be acquired, not released.
    {.name = "TaskKfuncReleaseInMap",
     .mirrors = "task_kfunc_release_in_map",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           task_value* v = InsertLookup(env, task);
           if (v == nullptr) {
             return 0;
           }
           bpf_rcu_read_lock();
           task_struct* local = v->task.get();
           if (local == nullptr) {
             bpf_rcu_read_unlock();
             return 3;
           }
           // Can't release a kptr that's still stored in a map.
           env.next_line(mark::call);
           bpf_task_release(local);
           bpf_rcu_read_unlock();
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1,  // the map's reference was not released by the program
     .violations = {{violation_kind::release_untrusted, "bpf_task_release",
                     "R1 must be referenced or trusted", "", site::call, true}}},
    // A sleepable program reads a slot outside any RCU section: an untrusted pointer.
    {.name = "AcquireOfASlotReadOutsideRcuInASyscallProgram",
     .mirrors = "prog.hpp: a slot read outside RCU is untrusted",
     .prog = kSyscall,
     .run = kWithoutArgument,
     .stash_victim = true,
     .body =
         [](prog_env& env, task_struct*) {
           const pid_t key = env.victim->pid;
           bpf_rcu_read_lock();
           task_value* v = bpf_map_lookup_elem(&env.map, &key);
           bpf_rcu_read_unlock();
           if (v == nullptr) {
             return 1;
           }
           task_struct* kptr = v->task.get();  // outside RCU
           if (kptr == nullptr) {
             return 2;
           }
           env.next_line(mark::call);
           task_struct* acquired = bpf_task_acquire(kptr);
           EXPECT_EQ(acquired, nullptr) << "vetoed";
           EXPECT_EQ(rcu_users(kptr), 3U) << "the acquire was not carried out";
           if (acquired != nullptr) {
             bpf_task_release(acquired);
           }
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1,
     .violations = {{violation_kind::untrusted_arg, "bpf_task_acquire", kNotRcu, "", site::call,
                     true}}},
    // The same read, of a task the program stashed itself: moving a reference into a
    // slot is not releasing it, and the fresh read is still an untrusted pointer.
    {.name = "AcquireOfASlotReadOutsideRcuOfATaskTheProgramStashedItself",
     .mirrors = "prog.hpp: a slot read outside RCU is untrusted",
     .prog = kSyscall,
     .run = kWithoutArgument,
     .body =
         [](prog_env& env, task_struct*) {
           const pid_t key = env.victim->pid;
           const task_value empty{};
           if (bpf_map_update_elem(&env.map, &key, &empty, BPF_NOEXIST) != 0) {
             return 1;
           }
           bpf_rcu_read_lock();
           task_value* v = bpf_map_lookup_elem(&env.map, &key);
           bpf_rcu_read_unlock();
           if (v == nullptr) {
             return 2;
           }
           task_struct* ref = bpf_task_from_pid(key);
           if (ref == nullptr) {
             return 3;
           }
           if (task_struct* old = bpf_kptr_xchg(&v->task, ref); old != nullptr) {
             bpf_task_release(old);
           }
           task_struct* kptr = v->task.get();  // outside RCU
           env.next_line(mark::call);
           task_struct* acquired = bpf_task_acquire(kptr);
           EXPECT_EQ(acquired, nullptr) << "vetoed";
           if (acquired != nullptr) {
             bpf_task_release(acquired);
           }
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1,  // the map holds the stashed reference
     .violations = {{violation_kind::untrusted_arg, "bpf_task_acquire", kNotRcu, "", site::call,
                     true}}},
    // The argument is trusted but not RCU-safe.
    {.name = "TaskKfuncFromLsmTaskFree",
     .mirrors = "task_kfunc_from_lsm_task_free",
     .prog = kTaskFree,
     .run = kOnVictim,
     .body = AcquireTheArgument,
     .violations = {{violation_kind::untrusted_arg, "bpf_task_acquire", kNotRcu, "", site::call,
                     true}}},
    {.name = "KfuncNotAllowedFromAKprobe",
     .mirrors = "task_kfunc_acquire_unsafe_kretprobe, as a kprobe",
     .prog = kKprobe,
     .run = kOnVictim,
     .body = AcquireTheArgument,
     .violations = {{violation_kind::kfunc_not_allowed, "bpf_task_acquire",
                     "calling kernel function bpf_task_acquire is not allowed", "", site::call,
                     false}}},
    {.name = "TaskKfuncAcquireFp",
     .mirrors = "task_kfunc_acquire_fp",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct*) {
           std::uint64_t clone_flags = 0;
           auto* stack_task = reinterpret_cast<task_struct*>(&clone_flags);
           env.next_line(mark::call);
           task_struct* acquired = bpf_task_acquire(reinterpret_cast<task_struct*>(&stack_task));
           EXPECT_EQ(acquired, nullptr) << "vetoed, never dereferenced";
           if (acquired == nullptr) {
             return 0;
           }
           bpf_task_release(acquired);
           return 0;
         },
     .violations = {{violation_kind::arg_type_mismatch, "bpf_task_acquire", kMustPoint, "",
                     site::call, false, true}},
     .needs_checks = true},
    {.name = "TaskKfuncReleaseFp",
     .mirrors = "task_kfunc_release_fp",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct*) {
           std::uint64_t clone_flags = 0;
           auto* acquired = reinterpret_cast<task_struct*>(&clone_flags);
           env.next_line(mark::call);
           bpf_task_release(acquired);  // vetoed, never dereferenced
           return 0;
         },
     .violations = {{violation_kind::arg_type_mismatch, "bpf_task_release", kMustPoint, "",
                     site::call, false, true}},
     .needs_checks = true},
    {.name = "TaskKfuncAcquireUnsafeKretprobe",
     .mirrors = "task_kfunc_acquire_unsafe_kretprobe",
     .prog = kKretprobe,
     .run = kOnVictim,
     .body = AcquireTheArgument,
     .violations = {{violation_kind::kfunc_not_allowed, "bpf_task_acquire", kNotAllowed, "",
                     site::call, false}}},
    {.name = "TaskKfuncAcquireUnsafeKretprobeRcu",
     .mirrors = "task_kfunc_acquire_unsafe_kretprobe_rcu",
     .prog = kKretprobe,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           bpf_rcu_read_lock();
           if (task == nullptr) {
             bpf_rcu_read_unlock();
             return 0;
           }
           env.next_line(mark::call);
           task_struct* acquired = bpf_task_acquire(task);
           if (acquired != nullptr) {
             bpf_task_release(acquired);
           }
           bpf_rcu_read_unlock();
           return 0;
         },
     .violations = {{violation_kind::kfunc_not_allowed, "bpf_task_acquire", kNotAllowed, "",
                     site::call, false}}},
    {.name = "TaskKfuncAcquireNull",
     .mirrors = "task_kfunc_acquire_null",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct*) {
           env.next_line(mark::call);
           task_struct* acquired = bpf_task_acquire(nullptr);
           if (acquired == nullptr) {
             return 0;
           }
           bpf_task_release(acquired);
           return 0;
         },
     .violations = {{violation_kind::null_arg, "bpf_task_acquire", kPossiblyNull, "", site::call,
                     false}}},
    {.name = "TaskKfuncXchgUnreleased",
     .mirrors = "task_kfunc_xchg_unreleased",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           task_value* v = InsertLookup(env, task);
           if (v == nullptr) {
             return 0;
           }
           env.next_line(mark::acquire);
           task_struct* kptr = bpf_kptr_xchg(&v->task, nullptr);
           if (kptr == nullptr) {
             return 0;
           }
           return 0;  // the kptr retrieved from the map is never released
         },
     .map_elements = 1,  // its slot empty: the runner released what came out
     .violations = {{violation_kind::unreleased_ref, "", "Unreleased reference id=2",
                     "acquired by bpf_kptr_xchg at {acquire}", site::program_exit, true}}},
    // The slot of a fresh element is empty: the xchg gives back NULL, which the
    // program releases without a check.
    {.name = "TaskKfuncReleaseNull",
     .mirrors = "task_kfunc_release_null",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           pid_t pid = 0;
           if (bpf_probe_read_kernel(&pid, sizeof(pid), &task->pid) != 0) {
             return 0;
           }
           const task_value local{};
           if (const long status = bpf_map_update_elem(&env.map, &pid, &local, BPF_NOEXIST);
               status != 0) {
             return static_cast<int>(status);
           }
           task_value* v = bpf_map_lookup_elem(&env.map, &pid);
           if (v == nullptr) {
             return -ENOENT;
           }
           task_struct* acquired = bpf_task_acquire(task);
           if (acquired == nullptr) {
             return -EEXIST;
           }
           task_struct* old = bpf_kptr_xchg(&v->task, acquired);
           EXPECT_EQ(old, nullptr);
           env.next_line(mark::call);
           bpf_task_release(old);  // no NULL check
           return 0;
         },
     .map_elements = 1,
     .map_refs = 1,
     .violations = {{violation_kind::null_arg, "bpf_task_release", kPossiblyNull, "", site::call,
                     false}}},
    {.name = "TaskAccessComm1",
     .mirrors = "task_access_comm1",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::call);
           EXPECT_EQ(bpf_strncmp(task->comm, 17, "foo"), -EINVAL) << "vetoed";
           return 0;
         },
     .violations = {{violation_kind::access_beyond_member, "bpf_strncmp",
                     CommBeyond(offsetof(task_struct, comm), 17), "", site::call, false, true}}},
    {.name = "TaskAccessComm2",
     .mirrors = "task_access_comm2",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::call);
           EXPECT_EQ(bpf_strncmp(task->comm + 1, 16, "foo"), -EINVAL) << "vetoed";
           return 0;
         },
     .violations = {{violation_kind::access_beyond_member, "bpf_strncmp",
                     CommBeyond(offsetof(task_struct, comm) + 1, 16), "", site::call, false,
                     true}}},
    {.name = "TaskAccessComm3",
     .mirrors = "task_access_comm3",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::call);
           EXPECT_EQ(bpf_probe_read_kernel(task->comm, 16, task->comm), -EINVAL) << "vetoed";
           EXPECT_STREQ(task->comm, "victim") << "nothing was written";
           return 0;
         },
     .violations = {{violation_kind::arg_type_mismatch, "bpf_probe_read_kernel",
                     "R1 cannot write into memory of struct task_struct: a BTF pointer is "
                     "read-only to helpers",
                     "", site::call, false, true}}},
    // A fentry argument is a legacy PTR_TO_BTF_ID, and so is its comm.
    {.name = "TaskAccessComm4",
     .mirrors = "task_access_comm4",
     .prog = kSetTaskComm,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::call);
           EXPECT_EQ(bpf_strncmp(task->comm, 16, "foo"), -EINVAL) << "vetoed";
           return 0;
         },
     .violations = {{violation_kind::arg_type_mismatch, "bpf_strncmp",
                     "R1 type=ptr_ expected=fp, pkt, pkt_meta, map_key, map_value, mem, "
                     "ringbuf_mem, buf, trusted_ptr_",
                     "", site::call, false, true}}},
    {.name = "UseAfterRelease",
     .mirrors = "prog.hpp: a released reference is invalid",
     .prog = kNewTask,
     .run = kOnInit,
     .body =
         [](prog_env& env, task_struct*) {
           task_struct* acquired = bpf_task_from_pid(env.victim->pid);
           if (acquired == nullptr) {
             return 1;
           }
           env.next_line(mark::release);
           bpf_task_release(acquired);
           env.next_line(mark::call);
           task_struct* again = bpf_task_acquire(acquired);
           EXPECT_EQ(again, nullptr) << "vetoed";
           if (again != nullptr) {
             bpf_task_release(again);
           }
           return 0;
         },
     .violations = {{violation_kind::use_after_release, "bpf_task_acquire",
                     "R1 invalid mem access 'scalar'",
                     "reference id=1 to this task was released at {release}", site::call, true}}},
    {.name = "DoubleRelease",
     .mirrors = "prog.hpp: a reference is released once",
     .prog = kNewTask,
     .run = kOnInit,
     .body =
         [](prog_env& env, task_struct*) {
           env.next_line(mark::acquire);
           task_struct* acquired = bpf_task_from_pid(env.victim->pid);
           if (acquired == nullptr) {
             return 1;
           }
           env.next_line(mark::release);
           bpf_task_release(acquired);
           env.next_line(mark::call);
           bpf_task_release(acquired);  // released once, not twice
           return 0;
         },
     .violations = {{violation_kind::double_release, "bpf_task_release", kExpectsRefcounted,
                     "reference id=1 acquired by bpf_task_from_pid at {acquire} was already "
                     "released at {release}",
                     site::call, true}}},
    // bpf_kptr_xchg's second argument must carry a reference to move into the slot.
    {.name = "XchgOfAnUnreferencedPointer",
     .mirrors = "prog.hpp: bpf_kptr_xchg moves a reference",
     .prog = kNewTask,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           const pid_t key = task->pid;
           const task_value empty{};
           if (bpf_map_update_elem(&env.map, &key, &empty, BPF_NOEXIST) != 0) {
             return 1;
           }
           task_value* v = bpf_map_lookup_elem(&env.map, &key);
           if (v == nullptr) {
             return 2;
           }
           env.next_line(mark::call);
           task_struct* old = bpf_kptr_xchg(&v->task, task);  // trusted, but not acquired
           EXPECT_EQ(old, nullptr);
           EXPECT_EQ(v->task.get(), nullptr) << "the exchange did not happen";
           return 0;
         },
     .map_elements = 1,
     .violations = {{violation_kind::xchg_unreferenced, "bpf_kptr_xchg",
                     "R2 must be referenced when passed to release function", "", site::call,
                     true}}},
    // The runner leaves the section the program left open (checked for every row).
    {.name = "RcuReadUnlockMissing",
     .mirrors = "prog.hpp: every bpf_rcu_read_lock() is unlocked",
     .prog = kSyscall,
     .run = kWithoutArgument,
     .body =
         [](prog_env& env, task_struct*) {
           bpf_rcu_read_lock();
           EXPECT_TRUE(env.k.rcu().rcu_read_lock_held());
           return 0;  // no bpf_rcu_read_unlock
         },
     .violations = {{violation_kind::rcu_lock_missing, "", "bpf_rcu_read_unlock is missing", "",
                     site::program_exit, false}}},
    {.name = "RcuReadUnlockUnmatched",
     .mirrors = "prog.hpp: no bpf_rcu_read_unlock() without a lock",
     .prog = kNewTask,
     .run = kOnInit,
     .body =
         [](prog_env& env, task_struct*) {
           env.next_line(mark::call);
           bpf_rcu_read_unlock();
           EXPECT_TRUE(env.k.rcu().rcu_read_lock_held())
               << "the program's implicit RCU section was not left";
           return 0;
         },
     .violations = {{violation_kind::rcu_unlock_unmatched, "bpf_rcu_read_unlock",
                     "unmatched rcu read unlock", "", site::call, false}}},
    // prog.hpp's trust rules: a syscall program's context is user memory, not a
    // task: a task pointer handed to it is nothing the verifier trusts. It must look
    // tasks up itself (from_pid).
    {.name = "SyscallProgramArgumentIsNotTrusted",
     .mirrors = "prog.hpp: a syscall program's argument is not trusted",
     .prog = kSyscall,
     .run = kOnVictim,
     .body =
         [](prog_env& env, task_struct* task) {
           env.next_line(mark::call);
           task_struct* acquired = bpf_task_acquire(task);
           if (acquired != nullptr) {
             bpf_task_release(acquired);
             return 1;
           }
           return 0;  // the acquire was refused
         },
     .violations = {{violation_kind::untrusted_arg, "bpf_task_acquire", kNotRcu, "", site::call,
                     true}}},
};

class ProgCaseTest : public ProgTest, public ::testing::WithParamInterface<prog_case> {
 protected:
  task_struct* TaskOf(who w) const {
    switch (w) {
      case who::none:
        return nullptr;
      case who::init:
        return init_;
      case who::victim:
        return victim_;
      case who::cinit:
        return cinit_;
      case who::cinit_child:
        return cinit_child_;
      case who::thread:
        return thread_;
    }
    return nullptr;
  }

  task_struct* victim_ = nullptr;
  task_struct* cinit_ = nullptr;
  task_struct* cinit_child_ = nullptr;
  task_struct* thread_ = nullptr;
};

// The row's program runs, and then every row must satisfy the same: its result
// and err, exactly its violations (kind, kfunc, the verifier's message with
// tasklife's detail, argument, site), nothing reaching the kfuncs' own contract
// checks (what the checker vetoes does not happen), no RCU section left open, the
// map as the row says, and once the map is gone every task back at rcu_users 2
// and usage 1: every reference the program took released exactly once.
TEST_P(ProgCaseTest, BehavesAsItsRowSays) {
  const prog_case& c = GetParam();
  if constexpr (!contract_checks_enabled) {
    if (c.needs_checks) {
      GTEST_SKIP() << "the fake pointer is recognised in checked builds only";
    }
  }
  SCOPED_TRACE(std::string(c.mirrors));
  victim_ = Fork("victim", init_);
  if (c.run.as == who::cinit || c.run.as == who::cinit_child) {
    cinit_ = Fork("cinit", init_, /*new_ns=*/true);
  }
  if (c.run.as == who::cinit_child) {
    cinit_child_ = Fork("inner", cinit_);
  }
  if (c.run.arg == who::thread) {
    thread_ = fork_task("thread", victim_, {.thread = true});
    tasks_.push_back(thread_);
  }
  std::optional<task_map> map(std::in_place, k(), 16);
  if (c.stash_victim) {
    Stash(*map, victim_);
    ASSERT_EQ(rcu_users(victim_), 3U);
  }
  prog_env env{.k = k(), .map = *map, .init = init_, .victim = victim_, .cinit = cinit_};
  bpf_prog p(k(), c.prog.type, std::string(c.prog.section),
             [&](task_struct* arg) { return c.body(env, arg); });
  EXPECT_EQ(p.sleepable(), c.prog.type == prog_type::syscall);

  prog_run_result r;
  task_struct* subject = victim_;
  unsigned run_line = 0;
  if (c.run.kind == run_kind::run) {
    run_line = __LINE__ + 1;
    r = p.run(TaskOf(c.run.as), TaskOf(c.run.arg));
  } else {
    const forked_with f =
        ForkWith(p, "child", c.run.kind == run_kind::fork_child_as_init ? init_ : nullptr);
    r = f.result;
    subject = f.child;
  }

  EXPECT_EQ(r.ret, c.ret) << Describe(r);
  EXPECT_EQ(env.err, c.err) << c.why;
  ASSERT_EQ(r.violations.size(), c.violations.size()) << Describe(r);
  for (std::size_t i = 0; i < c.violations.size(); ++i) {
    SCOPED_TRACE("violation " + std::to_string(i));
    const violation& v = r.violations[i];
    const expected_violation& e = c.violations[i];
    EXPECT_EQ(v.kind, e.kind);
    EXPECT_EQ(v.kfunc, e.kfunc) << "\"\": reported at program exit";
    EXPECT_EQ(v.message, e.detail.empty()
                             ? std::string(e.msg)
                             : std::string(e.msg) + " (" + Expand(e.detail, env) + ")");
    EXPECT_THAT(v.message, StartsWith(std::string(e.msg))) << "the verifier's words first";
    if (e.names_other) {
      EXPECT_NE(v.argument, nullptr);
      EXPECT_NE(v.argument, subject);
    } else {
      EXPECT_EQ(v.argument, e.names_subject ? subject : nullptr);
    }
    EXPECT_THAT(v.where.file_name(), EndsWith("prog_test.cpp"));
    EXPECT_EQ(v.where.line(),
              e.at == site::program_exit ? run_line : env.lines[static_cast<std::size_t>(e.at)])
        << (e.at == site::program_exit ? "the exit of the run" : "the offending call");
  }
  EXPECT_THAT(capture().violations(), IsEmpty()) << "vetoed before the kfuncs' own contract checks";
  EXPECT_FALSE(RcuHeldOutsidePrograms()) << "the runner left any section the program left open";
  EXPECT_EQ(map->count(), c.map_elements);
  EXPECT_EQ(rcu_users(subject), 2U + c.map_refs) << "2 + the map's " << c.map_refs;
  map.reset();  // bpf_obj_free_fields on every element: each slot's reference, once
  for (task_struct* t : tasks_) {
    EXPECT_EQ(rcu_users(t), 2U) << t->comm << ": every reference released exactly once";
    EXPECT_EQ(usage(t), 1U) << t->comm;
  }
}

std::string RowName(const ::testing::TestParamInfo<prog_case>& row) {
  return std::string(row.param.name);
}

INSTANTIATE_TEST_SUITE_P(TaskKfuncSuccess, ProgCaseTest, ::testing::ValuesIn(kSuccess), RowName);
INSTANTIATE_TEST_SUITE_P(TaskKfuncFailure, ProgCaseTest, ::testing::ValuesIn(kFailure), RowName);

// ---- what the table takes for granted -----------------------------------------------------

// task_kfunc_acquire_unsafe_kretprobe's premise, and test_task_from_vpid_current's.
TEST_F(ProgTest, KfuncsAreAllowedByProgramType) {
  EXPECT_FALSE(kfunc_allowed(prog_type::kprobe, kfunc_id::bpf_task_acquire));
  EXPECT_FALSE(kfunc_allowed(prog_type::kretprobe, kfunc_id::bpf_task_acquire));
  EXPECT_TRUE(kfunc_allowed(prog_type::tracing, kfunc_id::bpf_task_acquire));
  EXPECT_TRUE(kfunc_allowed(prog_type::kprobe, kfunc_id::bpf_kptr_xchg));
  // syscall_prog_func_proto falls back to tracing_prog_func_proto, which has it.
  EXPECT_TRUE(kfunc_allowed(prog_type::syscall, kfunc_id::bpf_get_current_task_btf));
}

// test_task_kfunc_flavor_relo's premise: how libbpf resolves a weak kfunc
// declaration (bpf_core_essential_name_len, bpf_core_types_are_compat).
TEST_F(ProgTest, WeakKfuncDeclarationsResolveAsLibbpfResolvesThem) {
  using detail::essential_name;
  EXPECT_EQ(essential_name("bpf_task_acquire___one"), "bpf_task_acquire");
  EXPECT_EQ(essential_name("bpf_task_acquire___v2___x"), "bpf_task_acquire___v2")
      << "only the last flavor is cut";
  EXPECT_EQ(essential_name("bpf_task_acquire"), "bpf_task_acquire");
  EXPECT_EQ(essential_name("bpf_task_acquire____one"), "bpf_task_acquire____one")
      << "four underscores are no separator";
  EXPECT_EQ(essential_name("bpf_task_acquire___"), "bpf_task_acquire___") << "no flavor after it";
  EXPECT_EQ(essential_name("a___b"), "a");
  EXPECT_EQ(essential_name(""), "");

  constexpr auto newest = semantics_profile::newest;
  using acquire_fn = task_struct*(task_struct*);
  static_assert(resolve_weak_kfunc(newest, "bpf_task_acquire___one",
                                   btf_proto_of<acquire_fn>::value) == kfunc_id::bpf_task_acquire);
  // Names do not matter to the comparison, kinds do: any (complete) struct pointer, any
  // integer, qualifiers ignored; two floats never match.
  struct other {
    int x;
  };
  EXPECT_TRUE(weak_kfunc<other*(const other*)>(newest, "bpf_task_acquire___mine").resolved());
  EXPECT_TRUE(
      weak_kfunc<task_struct*(task_struct*) noexcept>(newest, "bpf_task_acquire___nx").resolved());
  static_assert(
      !btf_compatible(btf_proto_of<void(double)>::value, btf_proto_of<void(double)>::value));
  static_assert(
      btf_compatible(btf_proto_of<void(unsigned char)>::value, btf_proto_of<void(long)>::value));
  EXPECT_TRUE(weak_kfunc<task_struct*(long)>(newest, "bpf_task_from_pid___wide").resolved());
  EXPECT_FALSE(weak_kfunc<task_struct*(int*)>(newest, "bpf_task_acquire___p").resolved());
  EXPECT_FALSE(weak_kfunc<void*(task_struct*)>(newest, "bpf_task_acquire___r").resolved())
      << "the return type is compared too";
  EXPECT_FALSE(weak_kfunc<task_struct*(task_struct**)>(newest, "bpf_task_acquire___pp").resolved());
  // The kernel must have the kfunc: bpf_task_from_vpid came with v6.13 (current).
  EXPECT_FALSE(
      weak_kfunc<task_struct*(int)>(semantics_profile::rcu_safe, "bpf_task_from_vpid").resolved());
  EXPECT_TRUE(
      weak_kfunc<task_struct*(int)>(semantics_profile::current, "bpf_task_from_vpid").resolved());
  // A helper is called by number: no declaration names it; an unknown name is NULL.
  EXPECT_FALSE(weak_kfunc<void*(void*, void*)>(newest, "bpf_kptr_xchg").resolved());
  EXPECT_FALSE(weak_kfunc<void()>(newest, "invalid_kfunc").resolved());
  const weak_kfunc<void()> lock(k(), "bpf_rcu_read_lock___any");
  EXPECT_EQ(lock.name(), "bpf_rcu_read_lock___any");
  EXPECT_EQ(lock.target(), kfunc_id::bpf_rcu_read_lock) << "resolved against k()'s profile";
}

// The names the table's failures print with (PrintTo(violation_kind)).
TEST_F(ProgTest, ViolationKindsPrintByName) {
  EXPECT_EQ(to_string(violation_kind::unreleased_ref), "unreleased_ref");
  EXPECT_EQ(to_string(violation_kind::null_arg), "null_arg");
  EXPECT_EQ(to_string(violation_kind::release_unacquired), "release_unacquired");
  EXPECT_EQ(to_string(violation_kind::release_untrusted), "release_untrusted");
  EXPECT_EQ(to_string(violation_kind::untrusted_arg), "untrusted_arg");
  EXPECT_EQ(to_string(violation_kind::kfunc_not_allowed), "kfunc_not_allowed");
  EXPECT_EQ(to_string(violation_kind::use_after_release), "use_after_release");
  EXPECT_EQ(to_string(violation_kind::double_release), "double_release");
  EXPECT_EQ(to_string(violation_kind::xchg_unreferenced), "xchg_unreferenced");
  EXPECT_EQ(to_string(violation_kind::rcu_lock_missing), "rcu_lock_missing");
  EXPECT_EQ(to_string(violation_kind::rcu_unlock_unmatched), "rcu_unlock_unmatched");
}

// ---- reporting modes --------------------------------------------------------------------------

TEST_F(ProgTest, RecordModeKeepsRunningAndRecordsEveryViolationInOrder) {
  task_struct* victim = Fork("victim", init_);
  bool finished = false;
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    bpf_task_release(task);                                // release_unacquired
    (void)bpf_task_acquire(nullptr);                       // null_arg
    task_struct* leaked = bpf_task_from_pid(victim->pid);  // unreleased_ref
    (void)leaked;
    finished = true;
    return 7;
  });
  EXPECT_EQ(p.mode(), checker_mode::record);
  const prog_run_result r = p.run(init_, init_);
  EXPECT_TRUE(finished) << "a recorded violation does not stop the program";
  EXPECT_EQ(r.ret, 7);
  ASSERT_EQ(r.violations.size(), 3U) << Describe(r);
  EXPECT_EQ(r.violations[0].kind, violation_kind::release_unacquired);
  EXPECT_EQ(r.violations[1].kind, violation_kind::null_arg);
  EXPECT_EQ(r.violations[2].kind, violation_kind::unreleased_ref);
  EXPECT_EQ(r.violations[2].argument, victim);
  EXPECT_EQ(rcu_users(init_), 2U);
  EXPECT_EQ(rcu_users(victim), 2U);
}

TEST_F(ProgTest, AttachedProgramReportsToTheSink) {
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [&](task_struct* task) {
    (void)bpf_task_acquire(task);
    return 0;
  });
  const forked_with f = ForkWith(p, "child");
  ASSERT_EQ(f.result.violations.size(), 1U) << Describe(f.result);
  EXPECT_EQ(f.result.violations[0].kind, violation_kind::unreleased_ref);
  EXPECT_EQ(f.result.violations[0].argument, f.child);
  EXPECT_EQ(rcu_users(f.child), 2U);
}

TEST_F(ProgTest, ThrowErrorModeThrowsOutOfRunAndStillReleasesWhatTheProgramHeld) {
  task_struct* victim = Fork("victim", init_);
  unsigned line = 0;
  unsigned held = 0;
  bool went_on = false;
  bpf_prog p(
      k(), prog_type::tracing, "tp_btf/task_newtask",
      [&](task_struct* task) {
        task_struct* ref = bpf_task_from_pid(victim->pid);
        held = rcu_users(victim);
        line = __LINE__ + 1;
        bpf_task_release(task);  // throws
        went_on = true;
        bpf_task_release(ref);
        return 0;
      },
      checker_mode::throw_error);
  EXPECT_EQ(p.mode(), checker_mode::throw_error);
  bool caught = false;
  try {
    (void)p.run(init_, init_);
  } catch (const verifier_error& e) {
    caught = true;
    EXPECT_EQ(e.info().kind, violation_kind::release_unacquired);
    EXPECT_EQ(e.info().kfunc, "bpf_task_release");
    EXPECT_EQ(e.info().argument, init_);
    EXPECT_EQ(e.info().where.line(), line);
    EXPECT_THAT(e.what(), HasSubstr("release kernel function bpf_task_release expects refcounted"));
    EXPECT_THAT(e.what(), HasSubstr(At(line)));
  }
  EXPECT_TRUE(caught) << "verifier_error thrown out of run()";
  EXPECT_FALSE(went_on) << "the program stopped at the violation";
  EXPECT_EQ(held, 3U);
  EXPECT_EQ(rcu_users(victim), 2U) << "the reference the program held was released";
  EXPECT_EQ(rcu_users(init_), 2U) << "the vetoed release did not happen";
  EXPECT_FALSE(RcuHeldOutsidePrograms()) << "the implicit RCU section was left while unwinding";

  // Nothing of the aborted run is left behind: the next run starts clean.
  bpf_prog clean(k(), prog_type::tracing, "tp_btf/task_newtask", [](task_struct* task) {
    bpf_task_release(bpf_task_acquire(task));
    return 0;
  });
  const prog_run_result r = clean.run(init_, victim);
  EXPECT_TRUE(r.ok()) << Describe(r);
}

TEST_F(ProgTest, ThrowErrorModeReportsAnUnreleasedReferenceAfterReleasingIt) {
  task_struct* victim = Fork("victim", init_);
  bpf_prog p(
      k(), prog_type::tracing, "tp_btf/task_newtask",
      [](task_struct* task) {
        (void)bpf_task_acquire(task);
        return 0;
      },
      checker_mode::throw_error);
  bool caught = false;
  try {
    (void)p.run(init_, victim);
  } catch (const verifier_error& e) {
    caught = true;
    EXPECT_EQ(e.info().kind, violation_kind::unreleased_ref);
    EXPECT_THAT(e.info().message, StartsWith("Unreleased reference id=1"));
    EXPECT_EQ(e.info().argument, victim);
  }
  EXPECT_TRUE(caught);
  EXPECT_EQ(rcu_users(victim), 2U) << "released before the error was thrown";
}

TEST_F(ProgTest, AbortModePrintsTheViolationAndAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  bpf_prog p(k(), prog_type::tracing, "tp_btf/task_newtask", [](task_struct* task) {
    bpf_task_release(task);
    return 0;
  });
  // The same program in record mode names the line the abort message will name.
  const prog_run_result recorded = p.run(init_, init_);
  ASSERT_EQ(recorded.violations.size(), 1U) << Describe(recorded);
  const std::string line = std::to_string(recorded.violations[0].where.line());
  p.set_mode(checker_mode::abort);
  EXPECT_EQ(p.mode(), checker_mode::abort);
  EXPECT_DEATH((void)p.run(init_, init_),
               "tasklife: program 'tp_btf/task_newtask' violates the verifier's rules at "
               ".*prog_test\\.cpp:" +
                   line +
                   ":.*release kernel function bpf_task_release expects refcounted PTR_TO_BTF_ID");
  EXPECT_EQ(rcu_users(init_), 2U);
}

TEST_F(ProgTest, CheckerOffReportsNothingAndTheLeakIsReal) {
  task_struct* victim = Fork("victim", init_);
  bpf_prog p(
      k(), prog_type::tracing, "tp_btf/task_newtask",
      [](task_struct* task) {
        (void)bpf_task_acquire(task);  // leaked
        return 0;
      },
      checker_mode::off);
  const prog_run_result r = p.run(init_, victim);
  EXPECT_TRUE(r.ok()) << Describe(r);
  EXPECT_EQ(rcu_users(victim), 3U) << "nobody released it";
  {
    const current_task_scope scope(init_);
    bpf_task_release(victim);  // by hand, outside any program
  }
  EXPECT_EQ(rcu_users(victim), 2U);
}

}  // namespace
}  // namespace tasklife
