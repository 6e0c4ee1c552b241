// The RCU domain: read-side sections, grace periods, callbacks, rcu_barrier with
// chains, the backend seam, and every misuse diagnostic of rcu.hpp. The domain
// under test is the fixture kernel's (no task is forked): the kernel_test
// invariants then check that it ends drained and that every violation a test
// provokes is the one it expects.
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tasklife/rcu.hpp>
#include <tasklife/testing.hpp>

#include "../support/names.hpp"
#include "../support/threads.hpp"

namespace tasklife {
namespace {

using test::give_others_a_chance;
using test::rcu_reader_hold;

// The domain over liburcu: these tests are about the native backend (its
// diagnostics, its facts), so the fixture opts out of the kit's deterministic one.
class RcuTest : public testkit::kernel_test {
 protected:
  kernel_config config() const override { return {.name = "test"}; }
  bool native_rcu() const override { return true; }
  rcu_domain& domain() { return k().rcu(); }  // "RCU domain 'test/rcu'"
};

struct counted_callback {
  rcu_head head{};
  std::atomic<int>* ran = nullptr;
  static void run(rcu_head* h) {
    auto* self = reinterpret_cast<counted_callback*>(h);  // head is the first member
    self->ran->fetch_add(1, std::memory_order_relaxed);
  }
};

TEST_F(RcuTest, ReadGuardNestsAndIsSeenAsHeld) {
  const rcu_thread_registration reg(domain());
  EXPECT_FALSE(domain().rcu_read_lock_held());
  {
    const rcu_read_guard outer(domain());
    EXPECT_TRUE(domain().rcu_read_lock_held());
    {
      const rcu_read_guard inner(domain());
      EXPECT_TRUE(domain().rcu_read_lock_held());
    }
    EXPECT_TRUE(domain().rcu_read_lock_held()) << "leaving the inner section keeps the outer one";
  }
  EXPECT_FALSE(domain().rcu_read_lock_held());
  EXPECT_TRUE(capture().violations().empty());
}

TEST_F(RcuTest, RegistrationNestsAcrossDomains) {
  rcu_domain other("other");
  EXPECT_FALSE(domain().thread_registered());
  {
    const rcu_thread_registration a(domain());
    {
      const rcu_thread_registration b(other);
      EXPECT_TRUE(domain().thread_registered());
    }
    EXPECT_TRUE(domain().thread_registered()) << "the outer registration is still alive";
    const rcu_read_guard guard(domain());
  }
  EXPECT_FALSE(domain().thread_registered());
  EXPECT_TRUE(capture().violations().empty());
}

TEST_F(RcuTest, SynchronizeRcuWaitsForAPreexistingReader) {
  std::atomic<bool> synchronize_returned{false};
  bool returned_while_reading = false;
  rcu_reader_hold reader(domain(), [&] {
    give_others_a_chance();  // the writer now waits in synchronize_rcu
    returned_while_reading = synchronize_returned.load(std::memory_order_acquire);
  });
  std::thread writer([&] {
    domain().synchronize_rcu();
    synchronize_returned.store(true, std::memory_order_release);
  });
  reader.release();
  writer.join();
  EXPECT_FALSE(returned_while_reading) << "the grace period ended inside a reader's section";
  EXPECT_TRUE(synchronize_returned.load());
  EXPECT_EQ(domain().stats().synchronize_calls, 1U);
}

TEST_F(RcuTest, CallbackWaitsForAPreexistingReaderAndRunsOnce) {
  std::atomic<int> ran{0};
  counted_callback cb;
  cb.ran = &ran;
  int ran_while_reading = -1;
  rcu_reader_hold reader(domain(), [&] {
    give_others_a_chance();
    ran_while_reading = ran.load(std::memory_order_relaxed);
  });
  domain().call_rcu(&cb.head, &counted_callback::run);
  reader.release();
  domain().rcu_barrier();
  EXPECT_EQ(ran_while_reading, 0);
  EXPECT_EQ(ran.load(), 1);
  const rcu_stats s = domain().stats();
  EXPECT_EQ(s.callbacks_queued, 1U);
  EXPECT_EQ(s.callbacks_completed, 1U);
}

TEST_F(RcuTest, BarrierWaitsForEveryQueuedCallback) {
  std::atomic<int> ran{0};
  std::vector<counted_callback> cbs(1000);
  for (auto& cb : cbs) {
    cb.ran = &ran;
    domain().call_rcu(&cb.head, &counted_callback::run);  // from an unregistered thread: allowed
  }
  domain().rcu_barrier();
  EXPECT_EQ(ran.load(), 1000);
  EXPECT_EQ(domain().stats().pending(), 0U);
}

// A callback that queues the next link: delayed_put_task_struct ->
// put_task_struct -> (v6.17+) call_rcu(__put_task_struct_rcu_cb) is such a chain.
struct chain_link {
  rcu_head head{};
  rcu_domain* domain = nullptr;
  int remaining = 0;
  std::atomic<int>* ran = nullptr;
  static void run(rcu_head* h) {
    auto* self = reinterpret_cast<chain_link*>(h);
    self->ran->fetch_add(1, std::memory_order_relaxed);
    if (self->remaining-- > 0) {
      self->domain->call_rcu(&self->head, &chain_link::run);
    }
  }
};

TEST_F(RcuTest, BarrierWaitsForChainedCallbacks) {
  std::atomic<int> ran{0};
  chain_link link;
  link.domain = &domain();
  link.remaining = 3;
  link.ran = &ran;
  domain().call_rcu(&link.head, &chain_link::run);
  domain().rcu_barrier();  // one call, however long the chain
  EXPECT_EQ(ran.load(), 4);
  EXPECT_EQ(domain().stats().callbacks_completed, 4U);
}

struct plain_writer {
  rcu_head head{};
  int value = 0;  // plain memory: only rcu_barrier orders the callback's write
  static void run(rcu_head* h) { reinterpret_cast<plain_writer*>(h)->value = 42; }
};

TEST_F(RcuTest, BarrierOrdersWhatCallbacksDidBeforeItReturns) {
  plain_writer w;
  domain().call_rcu(&w.head, &plain_writer::run);
  domain().rcu_barrier();
  EXPECT_EQ(w.value, 42);  // a data race under TSan unless the barrier provides the edge
}

// A callback that works on its own domain: the head first (the callback recovers
// the object from it), the domain, and what the callback saw there.
struct domain_callback {
  rcu_head head{};
  rcu_domain* domain = nullptr;
  std::atomic<bool> saw{false};
  static domain_callback& of(rcu_head* h) { return *reinterpret_cast<domain_callback*>(h); }
};

// The worker is registered by liburcu already; a nested registration and a
// read-side section must simply work. Sees: the section held.
void register_and_read_lock(rcu_head* h) {
  domain_callback& self = domain_callback::of(h);
  const rcu_thread_registration reg(*self.domain);
  const rcu_read_guard guard(*self.domain);
  self.saw.store(self.domain->rcu_read_lock_held(), std::memory_order_relaxed);
}

// Sees: rcu_barrier refused with a contract violation.
void barrier_from_inside(rcu_head* h) {
  domain_callback& self = domain_callback::of(h);
  try {
    self.domain->rcu_barrier();
  } catch (const contract_error&) {
    self.saw.store(true, std::memory_order_relaxed);
  }
}

TEST_F(RcuTest, CallbacksMayRegisterAndReadLock) {
  domain_callback cb;
  cb.domain = &domain();
  domain().call_rcu(&cb.head, &register_and_read_lock);
  domain().rcu_barrier();
  EXPECT_TRUE(cb.saw.load());
  EXPECT_TRUE(capture().violations().empty());
  domain().call_rcu(&cb.head, &register_and_read_lock);  // the worker is still healthy
  domain().rcu_barrier();
}

TEST_F(RcuTest, DestroyingADomainDrainsItsChains) {
  std::atomic<int> ran{0};
  chain_link link;
  link.remaining = 2;
  link.ran = &ran;
  {
    rcu_domain scoped("scoped");
    link.domain = &scoped;
    scoped.call_rcu(&link.head, &chain_link::run);
  }
  EXPECT_EQ(ran.load(), 3) << "the domain's memory outlived every callback of its chain";
}

TEST_F(RcuTest, NativeBackendReportsItsFacts) {
  EXPECT_TRUE(domain().is_native());
  EXPECT_EQ(domain().backend_name(), "liburcu-memb");
  const rcu_native_info info = rcu_native_backend_info();
  EXPECT_EQ(info.flavor, "memb");
}

// ---- misuse: diagnostics instead of hangs and silent failures --------------------------------

TEST_F(RcuTest, SynchronizeInsideReadSectionIsReportedInsteadOfHanging) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const rcu_thread_registration reg(domain());
  const rcu_read_guard guard(domain());
  EXPECT_CONTRACT_VIOLATION(
      domain().synchronize_rcu(),
      "synchronize_rcu() inside an RCU read-side critical section of RCU domain 'test/rcu'");
  EXPECT_EQ(domain().stats().synchronize_calls, 0U);
}

TEST_F(RcuTest, BarrierInsideReadSectionIsReportedInsteadOfSilentlyNotWaiting) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const rcu_thread_registration reg(domain());
  const rcu_read_guard guard(domain());
  EXPECT_CONTRACT_VIOLATION(domain().rcu_barrier(),
                            "rcu_barrier() inside an RCU read-side critical section");
}

TEST_F(RcuTest, BarrierFromCallbackIsReportedInsteadOfDeadlocking) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  domain_callback cb;
  cb.domain = &domain();
  EXPECT_CONTRACT_VIOLATION(
      {
        domain().call_rcu(&cb.head, &barrier_from_inside);
        domain().rcu_barrier();  // the callback has run when this returns
      },
      "rcu_barrier() from inside an RCU callback");
  EXPECT_TRUE(cb.saw.load()) << "reported to the callback";
}

TEST_F(RcuTest, ReadLockOnUnregisteredThreadIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  bool held_after = true;
  const auto read_lock_unregistered = [&] {
    domain().rcu_read_lock();  // noexcept: recorded, lock not taken
    held_after = domain().rcu_read_lock_held();
  };
  EXPECT_CONTRACT_VIOLATION(std::thread(read_lock_unregistered).join(),
                            "rcu_read_lock() on a thread that is not registered");
  EXPECT_FALSE(held_after);
}

TEST_F(RcuTest, UnbalancedUnlockIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const rcu_thread_registration reg(domain());
  EXPECT_CONTRACT_VIOLATION(domain().rcu_read_unlock(), "rcu_read_unlock() without a matching");
  // The bogus unlock was not passed on: a real section still works afterwards.
  const rcu_read_guard guard(domain());
  EXPECT_TRUE(domain().rcu_read_lock_held());
}

TEST_F(RcuTest, UnregisteringInsideReadSectionIsReportedAndTheSectionEnded) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  const auto unregister_inside = [&] {
    {
      const rcu_thread_registration reg(domain());
      domain().rcu_read_lock();
    }  // unregisters inside the section
    EXPECT_FALSE(domain().rcu_read_lock_held());
  };
  EXPECT_CONTRACT_VIOLATION(std::thread(unregister_inside).join(),
                            "unregisters from RCU domain 'test/rcu' (liburcu-memb) inside a "
                            "read-side critical section");
  domain().synchronize_rcu();  // would hang if the reader had been left behind
}

TEST_F(RcuTest, ThreadExitingInsideReadSectionIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  std::optional<rcu_domain> doomed(std::in_place, "doomed");
  const auto exit_inside = [&] {
    doomed->register_thread(std::source_location::current());  // never unregistered
    doomed->rcu_read_lock();
  };
  EXPECT_CONTRACT_VIOLATION(std::thread(exit_inside).join(),
                            "a thread exits inside an RCU read-side critical section");
  domain().synchronize_rcu();  // the dead reader was removed: a grace period still ends
  EXPECT_CONTRACT_VIOLATION(doomed.reset(),
                            "RCU domain 'doomed' (liburcu-memb) destroyed while 1 thread "
                            "registration(s) with it are alive");
}

TEST_F(RcuTest, ThreadExitingWhileRegisteredIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  std::optional<rcu_domain> doomed(std::in_place, "doomed");
  const auto exit_registered = [&] { doomed->register_thread(std::source_location::current()); };
  EXPECT_CONTRACT_VIOLATION(std::thread(exit_registered).join(),
                            "a thread exits while still registered with RCU");
  EXPECT_CONTRACT_VIOLATION(doomed.reset(),
                            "RCU domain 'doomed' (liburcu-memb) destroyed while 1 thread "
                            "registration(s) with it are alive");
}

TEST_F(RcuTest, CallRcuWithNullCallbackIsReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  rcu_head head{};
  EXPECT_CONTRACT_VIOLATION(domain().call_rcu(&head, nullptr), "call_rcu() with a null callback");
  EXPECT_EQ(domain().stats().callbacks_queued, 0U);
}

// ---- the seam: a backend whose grace periods are advanced by hand -------------------------

// A minimal backend, enough to show the domain's checks and accounting are the
// backend's clients: readers are counted per thread; a grace period may end only
// when no thread is reading; callbacks wait in a queue until advance().
class manual_backend final : public rcu_backend {
 public:
  std::string_view name() const noexcept override { return "manual"; }
  void register_thread() override { ++state().registrations; }
  void unregister_thread() override { --state().registrations; }
  bool thread_registered() const noexcept override { return state().registrations > 0; }
  void read_lock() noexcept override {
    ++state().depth;
    readers_.fetch_add(1);
  }
  void read_unlock() noexcept override {
    --state().depth;
    readers_.fetch_sub(1);
  }
  unsigned read_depth() const noexcept override { return state().depth; }
  void synchronize() override { ++grace_periods_; }
  void call(rcu_head* head) override {
    const std::lock_guard lock(mutex_);
    queue_.push_back(head);
  }
  void barrier() override {
    while (advance() > 0) {
    }
  }
  // Ends one grace period if nobody reads; runs what was queued before it.
  std::size_t advance() {
    if (readers_.load() != 0) {
      return 0;
    }
    std::deque<rcu_head*> batch;
    {
      const std::lock_guard lock(mutex_);
      batch.swap(queue_);
    }
    ++grace_periods_;
    for (rcu_head* head : batch) {
      rcu_domain::invoke(head);
    }
    return batch.size();
  }
  int grace_periods() const { return grace_periods_; }

 private:
  struct per_thread {
    unsigned registrations = 0;
    unsigned depth = 0;
  };
  static per_thread& state() {
    thread_local per_thread s;
    return s;
  }
  std::atomic<int> readers_{0};
  int grace_periods_ = 0;
  std::mutex mutex_;
  std::deque<rcu_head*> queue_;
};

TEST_F(RcuTest, CustomBackendPlugsIntoTheSameDomainApi) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  auto owned = std::make_unique<manual_backend>();
  manual_backend& backend = *owned;
  rcu_domain manual("manual", std::move(owned));
  EXPECT_FALSE(manual.is_native());
  EXPECT_EQ(manual.backend_name(), "manual");

  std::atomic<int> ran{0};
  counted_callback cb;
  cb.ran = &ran;
  {
    const rcu_thread_registration reg(manual);
    const rcu_read_guard guard(manual);
    EXPECT_TRUE(manual.rcu_read_lock_held());
    manual.call_rcu(&cb.head, &counted_callback::run);
    EXPECT_EQ(backend.advance(), 0U) << "a grace period ended inside a read-side section";
    EXPECT_CONTRACT_VIOLATION(
        manual.synchronize_rcu(),
        "synchronize_rcu() inside an RCU read-side critical section of RCU domain 'manual'");
  }
  EXPECT_EQ(ran.load(), 0);
  EXPECT_EQ(backend.advance(), 1U);
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(manual.stats().pending(), 0U);

  EXPECT_CONTRACT_VIOLATION(manual.rcu_read_lock(),  // unregistered: the domain's checks
                            "not registered with RCU domain 'manual'");
}

// ---- the default handler: one death test --------------------------------------------------

TEST(RcuDeathTest, DefaultHandlerAbortsWithTheDomainsName) {
  TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        set_contract_handler(nullptr);
        rcu_domain d("fatal");
        const rcu_thread_registration reg(d);
        const rcu_read_guard guard(d);
        d.synchronize_rcu();
      },
      "synchronize_rcu\\(\\) inside an RCU read-side critical section of RCU domain 'fatal'");
}

TEST(RcuDeathTest, DestroyingADomainWithPendingCallbacksInsideAReadSectionAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        set_contract_handler(nullptr);
        rcu_domain outer("outer");
        const rcu_thread_registration reg(outer);
        auto* doomed = new rcu_domain("doomed");
        static rcu_head head{};
        doomed->call_rcu(&head, [](rcu_head*) {});
        const rcu_read_guard guard(outer);
        delete doomed;  // cannot drain: its callback waits for this reader
      },
      "RCU domain 'doomed' \\(liburcu-memb\\) destroyed with 1 callback\\(s\\) pending inside a "
      "read-side critical section");
}

}  // namespace
}  // namespace tasklife
