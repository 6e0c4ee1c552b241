// The deterministic RCU backend: grace periods that end only when told, and only
// after every reader that predates them; callbacks that run only when run. Each
// test drives the interleaving by hand (reader identities, the wait hook), never
// by time, and ends with nothing pending and every task freed exactly once.
#include <atomic>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/testing.hpp>

namespace tasklife {
namespace {

// Runs a scope as another reader of the backend without another OS thread: the
// backend keys its reader state by detail::reader_identity().
class as_reader {
 public:
  explicit as_reader(const void* identity) : previous_(detail::set_reader_identity(identity)) {}
  ~as_reader() { detail::set_reader_identity(previous_); }
  as_reader(const as_reader&) = delete;
  as_reader& operator=(const as_reader&) = delete;

 private:
  const void* previous_;
};

struct counted {
  rcu_head head{};
  std::vector<int>* order = nullptr;
  int id = 0;
  static void run(rcu_head* h) {
    auto* self = reinterpret_cast<counted*>(h);  // head is the first member
    self->order->push_back(self->id);
  }
};

class DeterministicRcuTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override {
    return kernel_config{.name = "deterministic",
                         .rcu_backend_factory = deterministic_rcu_factory()};
  }
  deterministic_rcu& backend() { return *as_deterministic(k().rcu()); }
};

TEST_F(DeterministicRcuTest, KernelUsesTheBackendFromItsFactory) {
  EXPECT_FALSE(k().rcu().is_native());
  EXPECT_EQ(k().rcu().backend_name(), "deterministic");
  ASSERT_NE(as_deterministic(k().rcu()), nullptr);
  rcu_domain native("native");
  EXPECT_EQ(as_deterministic(native), nullptr);
}

TEST_F(DeterministicRcuTest, GracePeriodWaitsOnlyForReadersInsideWhenItStarted) {
  rcu_domain& rcu = k().rcu();
  const char early = 0;
  const char late = 0;
  {
    const as_reader r(&early);
    rcu.register_thread(std::source_location::current());
    rcu.rcu_read_lock();
  }
  EXPECT_EQ(backend().readers_inside(), 1U);
  EXPECT_TRUE(backend().start_grace_period());
  EXPECT_FALSE(backend().start_grace_period()) << "one grace period at a time";
  {
    const as_reader r(&late);
    rcu.register_thread(std::source_location::current());
    rcu.rcu_read_lock();  // began after the grace period: not waited for
  }
  EXPECT_FALSE(backend().can_end_grace_period());
  EXPECT_FALSE(backend().try_end_grace_period()) << "the early reader is still inside";
  {
    const as_reader r(&early);
    rcu.rcu_read_unlock();
    rcu.unregister_thread(std::source_location::current());
  }
  EXPECT_TRUE(backend().can_end_grace_period()) << "the late reader does not hold it up";
  EXPECT_TRUE(backend().try_end_grace_period());
  EXPECT_EQ(backend().completed_grace_periods(), 1U);
  {
    const as_reader r(&late);
    rcu.rcu_read_unlock();
    rcu.unregister_thread(std::source_location::current());
  }
  EXPECT_EQ(backend().readers_inside(), 0U);
}

TEST_F(DeterministicRcuTest, CallbackNeedsAWholeGracePeriodThatStartedAfterIt) {
  std::vector<int> order;
  counted a{.order = &order, .id = 1};
  counted b{.order = &order, .id = 2};
  k().rcu().call_rcu(&a.head, &counted::run);
  EXPECT_EQ(backend().run_callbacks(), 0U) << "no grace period has passed";
  ASSERT_TRUE(backend().start_grace_period());
  k().rcu().call_rcu(&b.head, &counted::run);  // queued while a grace period runs
  ASSERT_TRUE(backend().try_end_grace_period());
  EXPECT_EQ(backend().ready_callbacks(), 1U) << "only the callback queued before it started";
  EXPECT_EQ(backend().run_callbacks(), 1U);
  EXPECT_THAT(order, ::testing::ElementsAre(1));
  ASSERT_TRUE(backend().advance_grace_period());
  EXPECT_EQ(backend().run_callbacks(), 1U);
  EXPECT_THAT(order, ::testing::ElementsAre(1, 2));
  EXPECT_EQ(k().rcu().stats().pending(), 0U);
}

TEST_F(DeterministicRcuTest, CallbacksQueuedByCallbacksWaitForTheirOwnGracePeriod) {
  struct chain {
    rcu_head head{};
    int runs = 0;
    rcu_domain* domain = nullptr;
    static void run(rcu_head* h) {
      auto* self = reinterpret_cast<chain*>(h);
      if (++self->runs < 3) {
        self->domain->call_rcu(&self->head, &chain::run);
      }
    }
  };
  chain c{.domain = &k().rcu()};
  k().rcu().call_rcu(&c.head, &chain::run);
  ASSERT_TRUE(backend().advance_grace_period());
  EXPECT_EQ(backend().run_callbacks(), 1U) << "the re-queued link is not ready yet";
  EXPECT_EQ(c.runs, 1);
  k().rcu().rcu_barrier();  // runs the whole chain
  EXPECT_EQ(c.runs, 3);
  EXPECT_EQ(backend().queued_callbacks(), 0U);
}

TEST_F(DeterministicRcuTest, TaskIsFreedOnlyWhenTheHarnessEndsTheGracePeriodAndRunsCallbacks) {
  task_struct* t = fork_task("worker");
  retire(t);
  kernel_stats s = k().stats();
  EXPECT_EQ(s.rcu_users_zero, 1U);
  EXPECT_EQ(s.freed, 0U) << "nothing happens by itself";
  EXPECT_TRUE(backend().advance_grace_period());
  EXPECT_EQ(k().stats().freed, 0U) << "the grace period is over, the callback has not run";
  EXPECT_EQ(backend().run_callbacks(), 1U);
  s = k().stats();
  EXPECT_EQ(s.gp_elapsed, 1U);
  EXPECT_EQ(s.freed, 1U);
}

TEST_F(DeterministicRcuTest, ReaderThatFoundATaskHoldsItsFreeBack) {
  task_struct* t = fork_task("found");
  const pid_t pid = t->pid;
  const char reader = 0;
  {
    const as_reader r(&reader);
    k().rcu().register_thread(std::source_location::current());
    k().rcu().rcu_read_lock();
    EXPECT_EQ(find_task_by_pid_ns(pid, &k().init_pid_ns()), t);
  }
  retire(t);  // reaped: unhashed, rcu_users 0, delayed_put_task_struct queued
  EXPECT_FALSE(backend().advance_grace_period()) << "the reader is inside";
  EXPECT_EQ(backend().run_callbacks(), 0U);
  EXPECT_EQ(k().stats().freed, 0U);
  {
    const as_reader r(&reader);
    EXPECT_STREQ(t->comm, "found") << "still valid memory for the reader";
    k().rcu().rcu_read_unlock();
    k().rcu().unregister_thread(std::source_location::current());
  }
  EXPECT_TRUE(backend().try_end_grace_period());
  EXPECT_EQ(backend().run_callbacks(), 1U);
  EXPECT_EQ(k().stats().freed, 1U);
}

TEST_F(DeterministicRcuTest, SynchronizeRunsOthersThroughTheWaitHookUntilTheReaderLeaves) {
  const char reader = 0;
  {
    const as_reader r(&reader);
    k().rcu().register_thread(std::source_location::current());
    k().rcu().rcu_read_lock();
  }
  int hook_calls = 0;
  backend().set_wait_hook([&] {
    ++hook_calls;
    const as_reader r(&reader);  // "another simulated thread" runs and leaves
    k().rcu().rcu_read_unlock();
    k().rcu().unregister_thread(std::source_location::current());
    return true;
  });
  const rcu_thread_registration reg(k().rcu());
  k().rcu().synchronize_rcu();
  EXPECT_EQ(hook_calls, 1);
  EXPECT_GE(backend().completed_grace_periods(), 1U);
  backend().set_wait_hook(nullptr);
}

TEST_F(DeterministicRcuTest, SynchronizeBlocksUntilAReaderOnAnotherThreadLeaves) {
  std::atomic<bool> inside{false};
  std::atomic<bool> leave{false};
  std::thread reader([&] {
    const rcu_thread_registration reg(k().rcu());
    const rcu_read_guard guard(k().rcu());
    inside.store(true, std::memory_order_release);
    while (!leave.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
  });
  while (!inside.load(std::memory_order_acquire)) {
    std::this_thread::yield();
  }
  // The hook tells the reader to go and then lets synchronize block on it.
  backend().set_wait_hook([&] {
    leave.store(true, std::memory_order_release);
    return false;
  });
  k().rcu().synchronize_rcu();
  EXPECT_TRUE(leave.load());
  reader.join();
  backend().set_wait_hook(nullptr);
  EXPECT_EQ(backend().readers_inside(), 0U);
}

TEST_F(DeterministicRcuTest, SynchronizeInsideAReadSectionIsReportedNotAHang) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const rcu_thread_registration reg(k().rcu());
  const rcu_read_guard guard(k().rcu());
  EXPECT_THROW(k().rcu().synchronize_rcu(), testkit::contract_error);
  expect_violation("synchronize_rcu() inside an RCU read-side critical section");
}

}  // namespace
}  // namespace tasklife
