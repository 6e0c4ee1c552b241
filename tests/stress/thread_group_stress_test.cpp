// Thread groups under load (kernel/exit.c: exit_notify, delay_group_leader,
// wait_task_zombie, release_task; kernel/fork.c: copy_process with CLONE_THREAD).
//
// Each round forks groups (a leader, child of init, and its threads), then kills
// them from several threads at once, in whatever order the threads' schedules
// give: leaders die before, between or after their threads. A leader dies in one
// of three ways:
//   - retire() with an autoreaping parent: a leader with live threads stays a
//     hashed zombie and its last thread's release_task releases it (zap_leader);
//   - retire() with a waiting parent: the reap is delayed and the last thread's
//     release_task wakes the parent, which reaps it;
//   - do_exit and the final switch, then the parent (one worker) polls
//     wait_task_zombie, which refuses while delay_group_leader() holds.
// A reader looks the leaders up by pid under RCU and takes rcu_users references
// while all this happens. After every round every task must be freed exactly
// once, after exactly one grace period, and nothing may be left: a leader freed
// before its last thread was released would be a use-after-free in that thread's
// release_task (reported in checked builds, and by ASan).
//
// Parameters: worker threads, threads per group and the final put's mode; the
// duration is TASKLIFE_STRESS_SECONDS.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <tasklife/kernel.hpp>
#include <tasklife/pid.hpp>
#include <tasklife/rcu.hpp>
#include <tasklife/task.hpp>
#include <tasklife/testing.hpp>

#include "../support/stress_config.hpp"

namespace tasklife {
namespace {

struct group_param {
  int workers;        // threads killing tasks (at least 2: one is the waiting parent)
  int group_threads;  // threads per group besides the leader
  final_put_mode final_put;
};

enum class leader_death : std::uint8_t { autoreap, parent_waits, parent_polls };

struct group {
  task_struct* leader;
  std::vector<task_struct*> threads;
  leader_death death;
};

// One thing a killer does: retire a thread, or a leader (autoreap/parent_waits).
struct job {
  task_struct* task;
  bool leader;
};

class ThreadGroupStressTest : public testkit::kernel_test,
                              public ::testing::WithParamInterface<group_param> {
 protected:
  kernel_config config() const override {
    return {.name = "thread-group-stress", .pid_max = 4096, .final_put = GetParam().final_put};
  }
  // Real threads want real grace periods (see stress_fixture.hpp).
  bool native_rcu() const override { return true; }
};

TEST_P(ThreadGroupStressTest, LeadersAndThreadsDieInEitherOrderAndEveryTaskIsFreedOnce) {
  const group_param param = GetParam();
  ASSERT_GE(param.workers, 2);
  const std::uint64_t seed = test::stress_seed();
  SCOPED_TRACE("TASKLIFE_STRESS_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  task_struct* init = fork_task("init");
  const int groups_per_round = 2 * param.workers;

  std::uint64_t rounds = 0;
  std::uint64_t leaders_left_as_zombies = 0;  // the leader died while its threads lived
  std::atomic<std::uint64_t> lookups{0};
  std::atomic<std::uint64_t> acquired{0};
  const auto deadline = std::chrono::steady_clock::now() + test::stress_duration();
  do {
    ++rounds;
    std::vector<group> groups;
    for (int g = 0; g < groups_per_round; ++g) {
      const auto death = static_cast<leader_death>(rng() % 3);
      task_struct* leader =
          fork_task("leader", init, {.autoreap = death == leader_death::autoreap});
      group gr{leader, {}, death};
      for (int t = 0; t < param.group_threads; ++t) {
        // Threads fork threads too: each takes the leader's parent.
        task_struct* forker =
            gr.threads.empty() || rng() % 2 == 0 ? leader : gr.threads[rng() % gr.threads.size()];
        gr.threads.push_back(fork_task("thread", forker, {.thread = true}));
        EXPECT_EQ(gr.threads.back()->real_parent, init);
      }
      groups.push_back(std::move(gr));
    }
    // Worker 0 is the polling parent; the others share the rest, shuffled.
    std::vector<task_struct*> polled;
    std::vector<job> jobs;
    std::vector<pid_t> leader_pids;
    for (const group& g : groups) {
      leader_pids.push_back(g.leader->pid);
      if (g.death == leader_death::parent_polls) {
        polled.push_back(g.leader);
      } else {
        jobs.push_back({g.leader, true});
      }
      for (task_struct* t : g.threads) {
        jobs.push_back({t, false});
      }
    }
    std::shuffle(jobs.begin(), jobs.end(), rng);
    const int killers = param.workers - 1;
    std::vector<std::vector<job>> share(static_cast<std::size_t>(killers));
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      share[i % share.size()].push_back(jobs[i]);
    }

    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> zombies{0};
    std::barrier start(param.workers + 1);
    std::vector<std::thread> pool;
    pool.emplace_back([&] {  // the parent that polls
      const rcu_thread_registration reg(k().rcu());
      start.arrive_and_wait();
      for (task_struct* leader : polled) {
        k().do_exit(leader);
        k().finish_task_switch(leader);
      }
      for (task_struct* leader : polled) {
        // Nobody else reaps it, so it stays allocated until this succeeds.
        while (!k().wait_task_zombie(leader)) {
          EXPECT_EQ(leader->exit_state.load(), EXIT_ZOMBIE);
          std::this_thread::yield();  // the threads' killers make progress
        }
      }
    });
    for (int w = 0; w < killers; ++w) {
      pool.emplace_back([&, mine = &share[static_cast<std::size_t>(w)]] {
        const rcu_thread_registration reg(k().rcu());
        start.arrive_and_wait();
        for (const job& j : *mine) {
          if (j.leader) {
            // Inside a read section nothing can be freed: exit_state may be read.
            const rcu_read_guard guard(k().rcu());
            EXPECT_TRUE(k().retire(j.task));
            if (j.task->exit_state.load() == EXIT_ZOMBIE) {
              zombies.fetch_add(1, std::memory_order_relaxed);
            }
          } else {
            EXPECT_TRUE(k().retire(j.task));
          }
        }
      });
    }
    std::thread reader([&] {
      const rcu_thread_registration reg(k().rcu());
      start.arrive_and_wait();
      while (!done.load(std::memory_order_acquire)) {
        for (const pid_t nr : leader_pids) {
          const rcu_read_guard guard(k().rcu());
          task_struct* p = find_task_by_pid_ns(nr, &k().init_pid_ns());
          lookups.fetch_add(1, std::memory_order_relaxed);
          if (p != nullptr && refcount_inc_not_zero(&p->rcu_users)) {
            acquired.fetch_add(1, std::memory_order_relaxed);
            put_task_struct_rcu_user(p);  // may be the last: the grace period follows
          }
        }
      }
    });
    for (std::thread& t : pool) {
      t.join();
    }
    done.store(true, std::memory_order_release);
    reader.join();
    leaders_left_as_zombies += zombies.load();

    k().rcu().rcu_barrier();
    const kernel_stats s = k().stats();
    ASSERT_EQ(s.freed + 1, s.forked) << "round " << rounds << ": all but init freed";
    ASSERT_EQ(s.rcu_users_zero, s.freed) << "rcu_users reached 0 once per freed task";
    ASSERT_EQ(k().allocated_tasks().size(), 1U) << "only init is left";
  } while (std::chrono::steady_clock::now() < deadline);

  retire(init);
  RecordProperty("rounds", std::to_string(rounds));
  RecordProperty("leaders_left_as_zombies", std::to_string(leaders_left_as_zombies));
  RecordProperty("lookups", std::to_string(lookups.load()));
  RecordProperty("acquired", std::to_string(acquired.load()));
  EXPECT_GT(rounds, 0U);
}

INSTANTIATE_TEST_SUITE_P(Stress, ThreadGroupStressTest,
                         ::testing::Values(group_param{2, 3, final_put_mode::immediate},
                                           group_param{4, 2, final_put_mode::immediate},
                                           group_param{4, 8, final_put_mode::immediate},
                                           group_param{2, 3, final_put_mode::deferred},
                                           group_param{4, 8, final_put_mode::deferred}),
                         [](const ::testing::TestParamInfo<group_param>& param_info) {
                           const group_param& p = param_info.param;
                           return std::to_string(p.workers) + "Workers" +
                                  std::to_string(p.group_threads) + "ThreadsPerGroup" +
                                  (p.final_put == final_put_mode::immediate ? "Immediate"
                                                                            : "Deferred");
                         });

}  // namespace
}  // namespace tasklife
