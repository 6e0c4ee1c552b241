// The run-time verifier's state for one program run (prog.hpp), shared by the
// program runner and the kfuncs that report to it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <source_location>
#include <string>
#include <unordered_map>
#include <vector>

#include <tasklife/prog.hpp>

namespace tasklife::detail {

class prog_run {
 public:
  prog_run(kernel& k, const bpf_prog& prog, checker_mode mode);
  prog_run(const prog_run&) = delete;
  prog_run& operator=(const prog_run&) = delete;

  checker_mode mode() const noexcept { return mode_; }

  // The hooks. A false return vetoes the kfunc (it returns NULL / does nothing).
  bool check_call(kfunc_id id, std::source_location where);
  bool check_task_arg(kfunc_id id, const task_struct* p, kfunc_arg role,
                      std::source_location where);
  bool check_helper_btf_id_arg(std::string_view name, const task_struct* p,
                               std::source_location where);
  void produced(kfunc_id id, task_struct* p, std::source_location where);  // a new reference
  void trusted_value(const task_struct* p, bool rcu_safe);
  // A fentry/fexit argument: PTR_TO_BTF_ID without PTR_TRUSTED (c6b0337f0120).
  void legacy_value(const task_struct* p);
  void slot_read(const void* value);
  // `value` was loaded from `base`'s RCU-safe field (BTF_TYPE_SAFE_RCU(struct
  // task_struct): real_parent, group_leader).
  void walked(const task_struct* base, const task_struct* value);
  // A helper's memory argument R<regno> (ARG_PTR_TO_MEM, or the destination of a
  // write when `write`): a pointer into a task the run knows must be trusted and
  // stay inside the member it starts in. False vetoes the helper.
  bool check_mem_arg(kfunc_id id, unsigned regno, const void* p, std::size_t size, bool write,
                     std::source_location where);
  // A typed reference dropped without release (typed.hpp): reported as the
  // verifier reports a reference held at exit, with what tasklife adds in `note`;
  // true if the run knew the reference (it is then no longer live). Called from a
  // destructor: never throws; in throw_error mode the report waits for the exit.
  bool dropped(const task_struct* p, std::string_view note, std::source_location where);
  // The task iterator at `it` (kfunc.hpp). iter_new: false vetoes it (an
  // iterator already initialized there); `in_rcu`: the call is inside an RCU
  // section. Outside one the newest profile reports it at once and the iterator
  // is made empty; the older ones make it untrusted, reported at its next use.
  bool iter_new(kfunc_id id, const void* it, bool in_rcu, std::source_location where);
  // next or destroy: false vetoes it (not initialized, or its RCU section ended).
  bool iter_use(kfunc_id id, const void* it, std::source_location where);
  // A task bpf_iter_task_next yielded: an RCU pointer (MEM_RCU).
  void iter_yielded(const task_struct* p);
  void rcu_lock() noexcept { ++rcu_depth_; }
  bool rcu_unlock(std::source_location where);

  // Program exit: reports what is still held and hands it back for cleanup.
  struct leftovers {
    std::vector<task_struct*> references;
    unsigned rcu_depth;
  };
  // Collects what the program still holds (no longer watched), for the runner to
  // hand back; report_leftovers() then reports it (it may throw).
  leftovers finish(std::source_location where);
  void report_leftovers();
  std::vector<violation> take_violations() { return std::move(violations_); }

 private:
  enum class trust : std::uint8_t { trusted, trusted_not_rcu_safe, rcu, legacy, untrusted };
  struct reference {
    std::uint64_t id;
    task_struct* task;
    std::string_view kfunc;
    std::source_location acquired_at;
    bool live;
    bool moved;  // consumed by bpf_kptr_xchg: the reference lives on in a slot
    std::source_location released_at;
  };

  struct iterator {
    std::uint64_t id;
    const void* it;
    std::source_location made_at;
    bool active;
    bool untrusted;  // made outside RCU, or its section ended (PTR_UNTRUSTED slot)
    bool empty;      // refused at new (newest profile, outside RCU): yields nothing
  };

  reference* live_ref(const void* p);
  iterator* active_iter(const void* it);
  // One class per value: `got` replaces what the value was only if it says more.
  void raise_trust(const task_struct* value, trust got);
  // The task whose public fields contain `p`, among the values the run knows.
  const task_struct* task_containing(const void* p) const;
  std::optional<trust> trust_of(const task_struct* p) const;
  // The newest reference to `p` released in this run; with `or_moved`, or moved into
  // a slot (to the verifier the register is a scalar either way).
  reference* last_released(const void* p, bool or_moved = false);
  void report(violation_kind kind, std::string_view kfunc, const void* arg, std::string message,
              std::source_location where);

  kernel& kernel_;
  const bpf_prog& prog_;
  checker_mode mode_;
  std::uint64_t next_id_ = 1;
  std::vector<reference> refs_;                   // in acquisition order
  std::vector<iterator> iters_;                   // in creation order
  std::unordered_map<const void*, trust> trust_;  // the latest known trust of a value
  unsigned rcu_depth_ = 0;                        // bpf_rcu_read_lock nesting
  std::vector<violation> violations_;
  std::function<void()> pending_report_;  // set by finish()
  std::vector<violation> dropped_;        // throw_error mode: dropped(), reported at exit
};

}  // namespace tasklife::detail
