// What a simulated thread may do besides tasklife's operations, and how the
// explorer keeps it sound: wait for another thread (explore::wait_until), call
// rcu_barrier beside another caller, handle exceptions across scheduling points,
// and destroy a kernel it made. Each test ends with the explorer's verdict over
// the whole space (or the failure it must find) and the model's own checks.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/explore.hpp>
#include <tasklife/kernel.hpp>
#include <tasklife/testing.hpp>

namespace tasklife {
namespace {

using ::testing::HasSubstr;

// A thread that waits for a flag another sets: at preemption bound 0 a loop of
// explore::yield never gives the setter a turn (a switch at a yield is a
// preemption), while wait_until blocks the waiter, so the switch to the setter
// is no preemption and every bound reaches the end.
explore::model waits_for_a_flag() {
  return [](explore::execution& x) {
    kernel k(x.config({.name = "flag", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    std::atomic<bool> published{false};
    task_struct* stash = nullptr;
    x.thread("waiter", [&] {
      explore::wait_until([&] { return published.load(); }, &published);
      x.check(stash == t, "the waiter runs before the publisher published");
      put_task_struct(stash);
    });
    x.thread("publisher", [&] {
      get_task_struct(t);
      stash = t;
      explore::yield(&published);
      published.store(true);
    });
    x.run();
    k.do_exit(t);
    k.finish_task_switch(t);
    k.wait_task_zombie(t);
  };
}

TEST(ExploreThreadsTest, WaitUntilLetsEveryBoundReachTheThreadItWaitsFor) {
  for (const int bound : {0, 1, -1}) {
    explore::options o;
    o.preemption_bound = bound;
    const explore::report r = testkit::expect_explores_cleanly(waits_for_a_flag(), o);
    EXPECT_TRUE(r.exhausted) << "bound " << bound << ": " << r.summary();
    EXPECT_GE(r.executions, 1U);
  }
}

TEST(ExploreThreadsTest, AWaitThatNoThreadCanEndIsADeadlockWithItsSchedule) {
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "never", .pid_max = 64}));
    const bool never = false;
    x.thread("waiter", [&] { explore::wait_until([&] { return never; }); });
    x.thread("other", [] { explore::yield(); });
    x.run();
  };
  const explore::report r = explore::explore(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::deadlock) << r.failure->message;
  const explore::report again = explore::replay(m, r.failure->schedule);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.failure->kind, explore::failure_kind::deadlock);
}

TEST(ExploreThreadsTest, AConditionThatThrowsFailsTheWaitingThread) {
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "throws", .pid_max = 64}));
    std::atomic<int> polls{0};
    x.thread("waiter", [&] {
      explore::wait_until([&]() -> bool {
        if (polls.fetch_add(1) > 0) {
          throw std::runtime_error("the condition broke");
        }
        return false;
      });
    });
    x.thread("other", [] { explore::yield(); });
    x.run();
  };
  const explore::report r = explore::explore(m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::exception) << r.failure->message;
  EXPECT_THAT(r.failure->message, HasSubstr("the condition broke"));
}

// Two simulated threads in rcu_barrier at once: the first waits (as a simulated
// thread) for a reader; the second must wait for the first without blocking the
// OS thread all of them share. Both return after the callback queued before them.
TEST(ExploreThreadsTest, TwoRcuBarriersAtOnceBothWaitForTheCallbacksBeforeThem) {
  const explore::report r = testkit::expect_explores_cleanly([](explore::execution& x) {
    kernel k(x.config({.name = "barriers", .pid_max = 64}));
    std::atomic<int> ran{0};
    const rcu_thread_registration main_reg(k.rcu());
    struct counted {
      rcu_head head{};
      std::atomic<int>* ran = nullptr;
    };
    counted c{{}, &ran};
    k.rcu().call_rcu(&c.head, [](rcu_head* h) {
      reinterpret_cast<counted*>(h)->ran->fetch_add(1);  // head is the first member
    });
    x.thread("reader", [&] {
      const rcu_thread_registration reg(k.rcu());
      const rcu_read_guard guard(k.rcu());
      explore::yield(&ran);
    });
    for (const char* name : {"barrier-a", "barrier-b"}) {
      x.thread(name, [&] {
        const rcu_thread_registration reg(k.rcu());
        explore::yield(&ran);  // so that the reader may be inside first
        k.rcu().rcu_barrier();
        x.check(ran.load() == 1, "rcu_barrier returned before a callback queued before it ran");
      });
    }
    x.run();
  });
  EXPECT_TRUE(r.exhausted) << r.summary();
  EXPECT_GT(r.executions, 2U);
}

// Each simulated thread handles its own exception across scheduling points: the
// runtime's caught-exception stack and uncaught count go with the fiber.
struct first_error : std::runtime_error {
  first_error() : std::runtime_error("first") {}
};
struct second_error : std::runtime_error {
  second_error() : std::runtime_error("second") {}
};

template <class Mine>
bool rethrows_as() {
  try {
    throw;
  } catch (const Mine&) {
    return true;
  } catch (...) {
    return false;
  }
}

TEST(ExploreThreadsTest, EachThreadKeepsItsOwnExceptionAcrossSchedulingPoints) {
  const explore::report r = testkit::expect_explores_cleanly([](explore::execution& x) {
    kernel k(x.config({.name = "catch", .pid_max = 64}));
    x.thread("first", [&] {
      try {
        throw first_error();
      } catch (const first_error&) {
        explore::yield();  // a scheduling point inside a handler
        x.check(std::uncaught_exceptions() == 0, "first: an exception of another thread in flight");
        x.check(rethrows_as<first_error>(), "first: the exception handled here is another's");
      }
    });
    x.thread("second", [&] {
      try {
        throw second_error();
      } catch (const second_error&) {
        explore::yield();
        x.check(rethrows_as<second_error>(), "second: the exception handled here is another's");
      }
      x.check(!std::current_exception(), "second: a handled exception outlives its handler");
    });
    x.thread("unwinder", [&] {
      // A destructor run by unwinding reaches a scheduling point (the guard's
      // rcu_read_unlock): uncaught_exceptions() is 1 there and only there.
      struct probe {
        explore::execution& x;
        ~probe() {
          explore::yield();
          x.check(std::uncaught_exceptions() == 1, "unwinder: the count in flight changed");
        }
      };
      try {
        const rcu_thread_registration reg(k.rcu());
        const rcu_read_guard guard(k.rcu());
        const probe p{x};
        throw second_error();
      } catch (const second_error&) {
        x.check(std::uncaught_exceptions() == 0, "unwinder: caught, still in flight");
      }
    });
    x.run();
  });
  EXPECT_TRUE(r.exhausted) << r.summary();
  EXPECT_GT(r.executions, 10U);
}

// A kernel made and destroyed inside a simulated thread: the explorer forgets its
// RCU backend when it is destroyed (no option of a destroyed backend is offered),
// and the model's other kernel goes on being explored.
TEST(ExploreThreadsTest, AKernelDestroyedInsideAThreadIsForgotten) {
  const explore::report r = testkit::expect_explores_cleanly([](explore::execution& x) {
    kernel k(x.config({.name = "outer", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    x.thread("builder", [&] {
      kernel inner(x.config({.name = "inner", .pid_max = 64}));
      task_struct* u = inner.fork(nullptr, {.comm = "u"}).task;
      inner.do_exit(u);
      inner.finish_task_switch(u);
      inner.wait_task_zombie(u);  // a callback queued on the inner backend
      explore::yield();
    });  // ~kernel drains and destroys the inner backend here
    x.thread("user", [&] {
      // Its read section and the outer kernel's grace periods go on being
      // explored once the inner backend is gone (before the fix the explorer read
      // the freed backend's state: a hang, or an ASan report).
      const rcu_thread_registration reg(k.rcu());
      const rcu_read_guard guard(k.rcu());
      explore::yield();
    });
    x.run();
    k.do_exit(t);
    k.finish_task_switch(t);
    k.wait_task_zombie(t);
  });
  EXPECT_TRUE(r.exhausted) << r.summary();
}

// A thread that holds a mutex of its own across a scheduling point blocks the OS
// thread when the other takes it: nothing can undo that, but the process says
// so on stderr and aborts instead of hanging in silence.
TEST(ExploreThreadsTest, AThreadBlockingTheOsThreadIsDiagnosedNotAHang) {
  const std::string style = GTEST_FLAG_GET(death_test_style);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "mutex", .pid_max = 64}));
    std::mutex own;
    for (const char* name : {"a", "b"}) {
      x.thread(name, [&] {
        const std::lock_guard<std::mutex> lock(own);
        explore::yield(&own);  // the other thread may run here and block on `own`
      });
    }
    x.run();
  };
  explore::options o;
  o.stall_timeout = std::chrono::milliseconds(300);
  EXPECT_DEATH((void)explore::explore(m, o), "no execution has begun for 300 ms");
  GTEST_FLAG_SET(death_test_style, style);
  // A model that does not block is not stopped by a watch of a few seconds (each
  // of its executions takes microseconds).
  explore::options watched;
  watched.stall_timeout = std::chrono::milliseconds(5'000);
  EXPECT_THAT(explore::explore(waits_for_a_flag(), watched), testkit::ExploresCleanly());
}

// A deadlock that leaves a thread inside rcu_barrier for good (it waits for a
// reader that waits for what the barrier's thread does next): the failure is the
// deadlock, and the kernel's teardown, whose own barrier cannot wait for the
// abandoned one, says so instead of hanging.
TEST(ExploreThreadsTest, AThreadLeftInsideRcuBarrierIsADeadlockAndTheTeardownEnds) {
  const explore::model m = [](explore::execution& x) {
    kernel k(x.config({.name = "barrier-deadlock", .pid_max = 64}));
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    std::atomic<bool> reader_inside{false};
    std::atomic<bool> barrier_done{false};
    x.thread("reader", [&] {
      const rcu_thread_registration reg(k.rcu());
      const rcu_read_guard guard(k.rcu());
      reader_inside.store(true);
      explore::wait_until([&] { return barrier_done.load(); }, &barrier_done);
    });
    x.thread("barrier", [&] {
      const rcu_thread_registration reg(k.rcu());
      explore::wait_until([&] { return reader_inside.load(); }, &reader_inside);
      k.retire(t);  // queues the task's free behind a grace period the reader holds up
      k.rcu().rcu_barrier();
      barrier_done.store(true);
    });
    x.run();
  };
  explore::options o;
  o.pct_warmup = 0;
  const explore::report r = explore::explore(m, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::deadlock) << r.failure->message;
  EXPECT_THAT(r.failure->message, HasSubstr("'barrier'"));
  EXPECT_THAT(r.failure->message, HasSubstr("'reader'"));
}

TEST(ExploreThreadsTest, ExploringFromInsideASimulatedThreadIsRefused) {
  explore::report inner;
  const explore::model m = [&inner](explore::execution& x) {
    kernel k(x.config({.name = "outer", .pid_max = 64}));
    x.thread("nested", [&] { inner = explore::explore(waits_for_a_flag()); });
    x.run();
  };
  explore::options once;
  once.pct_warmup = 0;
  once.max_executions = 1;
  (void)explore::explore(m, once);
  ASSERT_FALSE(inner.ok());
  EXPECT_EQ(inner.failure->kind, explore::failure_kind::usage);
  EXPECT_THAT(inner.failure->message, HasSubstr("from a simulated thread"));
  EXPECT_EQ(inner.executions, 0U);
}

TEST(ExploreThreadsTest, WaitingOnTheModelsOwnContextIsAFailureNotAHang) {
  const explore::report r = explore::explore([](explore::execution& x) {
    kernel k(x.config({.name = "own", .pid_max = 64}));
    explore::wait_until([] { return false; });
    x.run();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.failure->kind, explore::failure_kind::exception) << r.failure->message;
  EXPECT_THAT(r.failure->message, HasSubstr("model's own context"));
}

}  // namespace
}  // namespace tasklife
