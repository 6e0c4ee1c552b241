// RCU under load, modelled on liburcu's test_urcu: readers dereference the
// published object inside a read-side section and check it is not poisoned;
// writers replace it and poison the old one only after a grace period
// (synchronize_rcu, or call_rcu). A premature reclaim shows up as a reader
// seeing the poison (and as an ASan/TSan report in the sanitizer presets).
#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include <tasklife/rcu.hpp>
#include <tasklife/testing.hpp>

#include "../support/stress_config.hpp"

namespace tasklife {
namespace {

constexpr int kAlive = 8;
constexpr int kPoison = 0;

struct node {
  rcu_head head{};  // first member: the callback recovers the node from it
  std::atomic<int> value{kAlive};
  static std::atomic<long> freed;
  static void reclaim(rcu_head* h);
};
std::atomic<long> node::freed{0};

// Reclaimed nodes stay poisoned for a while before their memory is reused, so a
// reader that still holds one sees the poison instead of a recycled node.
class poisoned_ring {
 public:
  void add(node* n) {
    const std::lock_guard lock(mutex_);
    ring_.push_back(n);
    if (ring_.size() > 4096) {
      delete ring_.front();
      ring_.pop_front();
    }
  }
  void clear() {
    const std::lock_guard lock(mutex_);
    for (node* n : ring_) {
      delete n;
    }
    ring_.clear();
  }

 private:
  std::mutex mutex_;
  std::deque<node*> ring_;
};
poisoned_ring g_poisoned;

void node::reclaim(rcu_head* h) {
  auto* n = reinterpret_cast<node*>(h);
  n->value.store(kPoison, std::memory_order_relaxed);
  g_poisoned.add(n);
  freed.fetch_add(1, std::memory_order_relaxed);
}

enum class reclaim_mode { synchronize, call_rcu };
void PrintTo(reclaim_mode m, std::ostream* os) {
  *os << (m == reclaim_mode::synchronize ? "synchronize" : "call_rcu");
}

class RcuStressTest : public ::testing::TestWithParam<std::tuple<int, reclaim_mode>> {};

TEST_P(RcuStressTest, ReadersNeverSeeAnObjectReclaimedUnderThem) {
  const auto [readers, mode] = GetParam();
  testkit::contract_capture capture;
  rcu_domain domain("stress");
  std::atomic<node*> current{new node};
  std::atomic<bool> stop{false};
  std::atomic<long> poisoned_reads{0};
  std::atomic<long> reads{0};
  node::freed.store(0);
  long allocated = 1;

  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&] {
      const rcu_thread_registration reg(domain);
      long local = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const rcu_read_guard guard(domain);
        // Acquire pairs with the writer's release exchange (publication).
        node* n = current.load(std::memory_order_acquire);
        if (n->value.load(std::memory_order_relaxed) != kAlive) {
          poisoned_reads.fetch_add(1, std::memory_order_relaxed);
        }
        ++local;
      }
      reads.fetch_add(local, std::memory_order_relaxed);
    });
  }

  {
    const rcu_thread_registration reg(domain);
    const auto deadline = std::chrono::steady_clock::now() + test::stress_duration();
    while (std::chrono::steady_clock::now() < deadline) {
      node* old = current.exchange(new node, std::memory_order_acq_rel);
      ++allocated;
      if (mode == reclaim_mode::synchronize) {
        domain.synchronize_rcu();
        node::reclaim(&old->head);
      } else {
        domain.call_rcu(&old->head, &node::reclaim);
        if (domain.stats().pending() > 50000) {
          domain.rcu_barrier();  // bound the backlog (liburcu batches every 10 ms)
        }
      }
    }
    stop.store(true, std::memory_order_relaxed);
  }
  for (auto& t : threads) {
    t.join();
  }
  domain.rcu_barrier();
  node::reclaim(&current.load()->head);
  g_poisoned.clear();

  EXPECT_EQ(poisoned_reads.load(), 0) << "a reader saw a reclaimed object";
  EXPECT_EQ(node::freed.load(), allocated) << "every object reclaimed exactly once";
  EXPECT_EQ(domain.stats().pending(), 0U);
  EXPECT_GT(reads.load(), 0);
  EXPECT_TRUE(capture.violations().empty());
}

std::string Name(const ::testing::TestParamInfo<std::tuple<int, reclaim_mode>>& info) {
  const auto [readers, mode] = info.param;
  return std::to_string(readers) + "Readers" +
         (mode == reclaim_mode::synchronize ? "Synchronize" : "CallRcu");
}

INSTANTIATE_TEST_SUITE_P(Readers, RcuStressTest,
                         ::testing::Combine(::testing::Values(1, 2, 4),
                                            ::testing::Values(reclaim_mode::synchronize,
                                                              reclaim_mode::call_rcu)),
                         Name);

}  // namespace
}  // namespace tasklife
