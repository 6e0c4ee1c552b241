// tasklife-demo: a task is forked, dies, is reaped, and its memory is freed one
// grace period later; every step is printed with usage and rcu_users.
//
// Scenarios (all by default; pick one with --scenario):
//   zombie    the parent reaps a zombie while an RCU reader still holds the task
//             it found by pid: the free waits for the reader (order A)
//   autoreap  a thread releases itself at exit; the final context switch drops
//             the last rcu_users reference (order B)
//   holder    a get_task_struct holder keeps the memory past the grace period;
//             with --final-put deferred (v6.17+) its put waits one more
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include <tasklife/fmt.hpp>
#include <tasklife/tasklife.hpp>

namespace {

using namespace tasklife;

void print_event(const task_event& e) {
  fmt::print("    {}  {}\n", e, explain(e.kind));
  std::fflush(stdout);
}

void banner(std::string_view title, std::string_view what) {
  fmt::print("\n== {} ==\n   {}\n", title, what);
}

void note(std::string_view text) {
  fmt::print("    -- {}\n", text);
  std::fflush(stdout);
}

// Each scenario ends by checking its own promise: every task forked was freed and
// the kernel's teardown finds nothing left.
bool finish(kernel& k) {
  k.rcu().rcu_barrier();
  const kernel_stats s = k.stats();
  const bool ok = s.forked == s.freed && k.shutdown().empty();
  if (!ok) {
    fmt::print("    !! FAILED: forked {} tasks, freed {}\n", s.forked, s.freed);
  }
  return ok;
}

// Order A, with an RCU reader that found the task by pid before the reap.
bool scenario_zombie(final_put_mode mode) {
  banner("zombie: exit, final switch, reap by the parent",
         "An RCU reader finds the task by pid and stays in its read-side section across the reap.");
  kernel k({.name = "demo", .final_put = mode});
  k.set_event_listener(print_event);
  task_struct* init = k.fork(nullptr, {.comm = "init"}).task;
  task_struct* t = k.fork(init, {.comm = "worker", .trace = true}).task;
  const pid_t pid = t->pid;

  k.do_exit(t);
  k.finish_task_switch(t);

  std::atomic<int> stage{0};
  std::thread reader([&] {
    const rcu_thread_registration reg(k.rcu());
    const rcu_read_guard guard(k.rcu());
    task_struct* found = find_task_by_pid_ns(pid, &k.init_pid_ns());
    fmt::print("    -- reader: rcu_read_lock(); find_task_by_pid_ns({}) = '{}' (rcu_users={})\n",
               pid, found->comm, refcount_read(&found->rcu_users));
    std::fflush(stdout);
    stage.store(1, std::memory_order_release);
    while (stage.load(std::memory_order_acquire) != 2) {
      std::this_thread::yield();
    }
    fmt::print("    -- reader: still inside; the task's memory is valid: comm='{}' rcu_users={}\n",
               found->comm, refcount_read(&found->rcu_users));
    fmt::print("    -- reader: rcu_read_unlock()\n");
    std::fflush(stdout);
  });
  while (stage.load(std::memory_order_acquire) != 1) {
    std::this_thread::yield();
  }
  k.wait_task_zombie(t);
  note(fmt::format("the grace period cannot end while the reader is inside: freed so far = {}",
                   k.stats().freed));
  stage.store(2, std::memory_order_release);
  reader.join();
  k.rcu().rcu_barrier();  // liburcu 0.13 runs callbacks in ~10 ms batches
  note(
      fmt::format("freed = {}, grace periods elapsed = {}", k.stats().freed, k.stats().gp_elapsed));
  k.do_exit(init);
  k.finish_task_switch(init);
  k.wait_task_zombie(init);
  return finish(k);
}

// Order B: the task releases itself, the final switch requests the grace period.
bool scenario_autoreap(final_put_mode mode) {
  banner("autoreap: a thread releases itself at exit",
         "release_task(self) runs inside do_exit; the last rcu_users drop is the final switch.");
  kernel k({.name = "demo", .final_put = mode});
  k.set_event_listener(print_event);
  task_struct* leader = k.fork(nullptr, {.comm = "leader"}).task;
  task_struct* t = k.fork(leader, {.comm = "thread", .thread = true, .trace = true}).task;
  k.do_exit(t);
  k.finish_task_switch(t);
  k.rcu().rcu_barrier();
  note(fmt::format("freed = {}", k.stats().freed));
  k.do_exit(leader);
  k.finish_task_switch(leader);
  k.wait_task_zombie(leader);
  return finish(k);
}

// A usage holder outlives the grace period.
bool scenario_holder(final_put_mode mode) {
  banner(
      "holder: get_task_struct keeps the memory past the grace period",
      mode == final_put_mode::deferred
          ? "v6.17+: the holder's final put_task_struct defers the free by one more grace period."
          : "<= v6.16: the holder's final put_task_struct frees at once, no further grace period.");
  kernel k({.name = "demo", .final_put = mode});
  k.set_event_listener(print_event);
  task_struct* t = k.fork(nullptr, {.comm = "held", .trace = true}).task;
  get_task_struct(t);  // e.g. a /proc reader or a timer
  k.do_exit(t);
  k.finish_task_switch(t);
  k.wait_task_zombie(t);
  k.rcu().rcu_barrier();
  note(fmt::format("grace period over, still allocated: freed = {}, usage = {}", k.stats().freed,
                   refcount_read(&t->usage)));
  put_task_struct(t);
  k.rcu().rcu_barrier();
  note(fmt::format("freed = {}", k.stats().freed));
  return finish(k);
}

int usage_error(const char* argv0) {
  fmt::print(stderr,
             "usage: {} [--scenario zombie|autoreap|holder|all] [--final-put immediate|deferred]\n",
             argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario = "all";
  final_put_mode mode = final_put_mode::immediate;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--scenario" && i + 1 < argc) {
      scenario = argv[++i];
    } else if (arg == "--final-put" && i + 1 < argc) {
      const std::string_view v = argv[++i];
      if (v == "immediate") {
        mode = final_put_mode::immediate;
      } else if (v == "deferred") {
        mode = final_put_mode::deferred;
      } else {
        return usage_error(argv[0]);
      }
    } else {
      return usage_error(argv[0]);
    }
  }
  const rcu_native_info info = rcu_native_backend_info();
  fmt::print("tasklife {} demo: liburcu {} (membarrier: {}), final put: {}\n", TASKLIFE_VERSION,
             info.flavor, info.has_sys_membarrier ? "yes" : "no",
             mode == final_put_mode::deferred ? "deferred (v6.17+)" : "immediate (<= v6.16)");
  fmt::print(
      "columns: event number, time since the kernel started, pid, event, counters after it\n");
  bool ran = false;
  bool ok = true;
  if (scenario == "all" || scenario == "zombie") {
    ok = scenario_zombie(mode) && ok;
    ran = true;
  }
  if (scenario == "all" || scenario == "autoreap") {
    ok = scenario_autoreap(mode) && ok;
    ran = true;
  }
  if (scenario == "all" || scenario == "holder") {
    ok = scenario_holder(mode) && ok;
    if (scenario == "all" && mode == final_put_mode::immediate) {
      ok = scenario_holder(final_put_mode::deferred) && ok;
    }
    ran = true;
  }
  if (!ran) {
    return usage_error(argv[0]);
  }
  fmt::print("\n{}\n", ok ? "every task was freed, one grace period after its last rcu_users drop"
                          : "FAILED");
  return ok ? 0 : 1;
}
