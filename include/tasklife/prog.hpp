// tasklife/prog.hpp — BPF-style programs and the verifier's reference rules,
// enforced at run time.
//
// What it is
//   A bpf_prog is a C++ callable with a program type. It runs on the calling
//   thread as a task (current), like a BPF program attached to a hook; its task
//   argument carries the verifier's notion of trust. While it runs, a checker sees
//   every kfunc call and every kptr slot read, and enforces the rules the kernel's
//   verifier enforces at load time (kernel/bpf/verifier.c):
//
//   | violation          | the verifier's words                                              |
//   |--------------------|-------------------------------------------------------------------|
//   | unreleased_ref     | Unreleased reference id=N                                         |
//   | null_arg           | Possibly NULL pointer passed to trusted arg0                      |
//   | release_unacquired | release kernel function bpf_task_release expects refcounted       |
//   |                    | PTR_TO_BTF_ID                                                     |
//   | release_untrusted  | R1 must be referenced or trusted                                  |
//   | untrusted_arg      | R1 must be a rcu pointer                                          |
//   | kfunc_not_allowed  | calling kernel function bpf_task_acquire is not allowed           |
//   | use_after_release  | R1 invalid mem access 'scalar'                                    |
//   | double_release     | (the same message as release_unacquired, with both sites)         |
//   | xchg_unreferenced  | R2 must be referenced when passed to release function             |
//   | rcu_lock_missing   | bpf_rcu_read_unlock is missing                                    |
//   | rcu_unlock_unmatched | unmatched rcu read unlock                                       |
//   | arg_type_mismatch  | arg#0 pointer type STRUCT task_struct must point to scalar, or   |
//   |                    | struct with scalar; R1 type=ptr_ expected=...                     |
//   | access_beyond_member | access beyond the end of member comm (mend:N) in struct ...   |
//   | iter_state         | expected an initialized iter_task as arg #0; expected            |
//   |                    | uninitialized iter_task as arg #0                                 |
//   | rcu_required       | kernel func bpf_iter_task_new requires RCU critical section       |
//   |                    | protection; expected an RCU CS when using bpf_iter_task_next      |
//
//   Trust, as the verifier sees it: a tracepoint's or struct_ops' task argument
//   and bpf_get_current_task_btf() are trusted (a syscall or kprobe program's
//   argument is not: its context is not a BTF-typed task; a fentry/fexit
//   argument is a legacy PTR_TO_BTF_ID: readable, but neither trusted nor RCU); a
//   field walked with btf_walk (task->group_leader, task->real_parent) is an RCU
//   pointer inside an RCU section, untrusted outside; the
//   lsm/task_free argument is trusted but not RCU-safe (it may not be acquired);
//   what an acquiring kfunc returns is referenced (an id); a kptr slot read inside
//   an RCU section (explicit bpf_rcu_read_lock, or the implicit one of every
//   non-sleepable program) is an RCU pointer; a slot read outside is untrusted;
//   a pointer the checker never saw is untrusted too.
//
//   The honest limit: the verifier proves the rules for every path of a program
//   before it runs; at run time the checker sees values, not registers, on the one
//   path that ran. Two references to the same task are two ids with one value: a
//   release consumes the most recent live one; "all copies are invalid" becomes
//   "the value is invalid once no live reference to it is left"; field reads
//   through a released pointer are not seen at all. A value has one trust class,
//   the latest seen: a task that is both the trusted argument and read back from a
//   slot is whichever it was last. RCU pointers are not invalidated when
//   bpf_rcu_read_unlock ends their section, and a field read by plain C++
//   (task->real_parent) is a value the checker never saw, hence untrusted: walk
//   the RCU-safe fields with btf_walk (kfunc.hpp) for the verifier's view. The
//   typed API (typed.hpp) moves what C++ types can express
//   to compile time.
//
//   Cost when not checking: each kfunc and slot read tests one thread-local
//   pointer (no run, or a run in checker_mode::off); TASKLIFE_VERIFIER=OFF
//   compiles even that out.
//
// Members
//   prog_type, bpf_prog, bpf_link, prog_run_result, violation, violation_kind, to_string,
//   checker_mode (record, throw_error, abort), verifier_error, kfunc_allowed
//
// Lifetime
//   A program belongs to a kernel and must not outlive it. A run records its
//   violations in its result; references still held when the program returns are
//   reported and then released by the runner, and an operation the checker
//   refuses (say, releasing what was never acquired) is not carried out, so the
//   simulated kernel stays consistent after a bad program, as it would after the
//   verifier rejected it.
//
// Memory ordering
//   None of its own: a run's state is the running thread's (thread-local).
//   Attaching programs to tracepoints goes through tracepoint (kernel.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tasklife/export.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/kfunc.hpp>
#include <tasklife/task.hpp>

namespace tasklife {

enum class violation_kind : std::uint8_t {
  unreleased_ref,
  null_arg,
  release_unacquired,
  release_untrusted,
  untrusted_arg,
  kfunc_not_allowed,
  use_after_release,
  double_release,
  xchg_unreferenced,
  rcu_lock_missing,
  rcu_unlock_unmatched,
  arg_type_mismatch,     // not the pointer the kfunc or helper takes
  access_beyond_member,  // a helper's memory argument beyond its member (task->comm)
  iter_state,            // an iterator used before new / after destroy, or made twice
  rcu_required,          // a KF_RCU_PROTECTED kfunc, or its iterator, outside RCU
};
TASKLIFE_API std::string_view to_string(violation_kind k) noexcept;

struct violation {
  violation_kind kind;
  std::string_view kfunc;  // the kfunc involved ("" at program exit)
  const void* argument;    // the offending argument (task pointer or slot), if any
  std::string message;     // modelled on the verifier's own
  std::source_location where;
};

enum class checker_mode : std::uint8_t {
  off,          // no tracking at all (the kfuncs test one thread-local pointer)
  record,       // violations go into the run's result
  throw_error,  // the first violation throws verifier_error
  abort,        // the first violation prints and aborts
};

// Thrown by a run in checker_mode::throw_error.
class TASKLIFE_API verifier_error : public std::runtime_error {
 public:
  explicit verifier_error(violation v);
  const violation& info() const noexcept { return violation_; }

 private:
  violation violation_;
};

struct prog_run_result {
  int ret = 0;
  std::vector<violation> violations;
  bool ok() const noexcept { return violations.empty(); }
};

// The trust class of a program's task argument.
enum class arg_trust : std::uint8_t { trusted, trusted_not_rcu_safe, legacy, none };

// An attached program (bpf_prog::attach): detaches when destroyed.
using bpf_link = tracepoint_link;

class TASKLIFE_API bpf_prog {
 public:
  using body_type = std::function<int(task_struct* arg)>;

  // section: the kernel's SEC() name, e.g. "tp_btf/task_newtask", "lsm/task_free",
  // "syscall", "kprobe/do_exit"; it names the program in reports. lsm/task_free
  // marks its argument as not RCU-safe. Programs of type syscall are sleepable.
  bpf_prog(kernel& k, prog_type type, std::string section, body_type body,
           checker_mode mode = checker_mode::record);
  // A program registered with its kernel cannot move: copies and moves are deleted.
  bpf_prog(const bpf_prog&) = delete;
  bpf_prog& operator=(const bpf_prog&) = delete;
  ~bpf_prog();

  prog_type type() const noexcept { return type_; }
  const std::string& section() const noexcept { return section_; }
  bool sleepable() const noexcept { return type_ == prog_type::syscall; }
  checker_mode mode() const noexcept { return mode_; }
  void set_mode(checker_mode mode) noexcept { mode_ = mode; }

  // Runs the program once on this thread as `as_task` (current), with `arg` as
  // its task argument (trusted unless the section says otherwise).
  prog_run_result run(task_struct* as_task, task_struct* arg = nullptr,
                      std::source_location where = std::source_location::current());

  // Attaches to a tracepoint: every firing runs the program with the
  // tracepoint's task as its (trusted) argument, as current if the firing thread
  // runs as a task, else as the argument itself. Violations go to `sink`; in
  // throw_error mode too (the exception is caught at the tracepoint rather than
  // unwinding through fork, do_exit or an RCU callback).
  // The link detaches the program when it is destroyed (the kernel's bpf_link);
  // it must not outlive the program.
  [[nodiscard]] bpf_link attach(tracepoint& tp,
                                std::function<void(const prog_run_result&)> sink = nullptr);

 private:
  kernel& kernel_;
  prog_type type_;
  std::string section_;
  body_type body_;
  checker_mode mode_;
  arg_trust arg_trust_;
  // Registered with the kernel: a kernel destroyed before its program orphans it,
  // and run() then refuses (teardown_order) instead of touching the freed kernel.
  detail::kernel_dependent dependent_{"program", section_};
};

}  // namespace tasklife
