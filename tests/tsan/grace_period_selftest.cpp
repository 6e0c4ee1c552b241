// Grace-period self-test for the sanitizer builds.
//
// A reader holds an object inside a read-side critical section; the writer
// unpublishes it, waits for a grace period (synchronize_rcu, or call_rcu plus
// rcu_barrier) and then poisons and frees it. Built against the real RCU domain,
// the grace period orders the reader's access before the free: ThreadSanitizer
// must stay silent, which shows the annotations in src/rcu.cpp supply the edges
// liburcu 0.13.2 hides from it. Built against the deliberately broken variant
// (TASKLIFE_TEST_BROKEN_GRACE_PERIOD: no waiting, same annotations), the free
// races with the reader and ThreadSanitizer must report it: the annotations do
// not mask a real premature free.
//
// The two threads coordinate with relaxed atomics only, which give TSan no
// happens-before edge: the only edge between the read and the free is the one
// the grace period provides. Under ASan the broken variant reads freed memory and
// ASan reports a heap-use-after-free.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include <tasklife/rcu.hpp>

namespace {

struct object {
  tasklife::rcu_head head{};
  int value = 8;
};

void reclaim(tasklife::rcu_head* h) {
  auto* o = reinterpret_cast<object*>(h);
  o->value = 0;  // poison, then free
  delete o;
}

}  // namespace

int main(int argc, char** argv) {
  const bool use_call_rcu = argc > 1 && std::strcmp(argv[1], "call_rcu") == 0;
  tasklife::rcu_domain domain("selftest");
  std::atomic<object*> published{new object};
  std::atomic<int> stage{0};
  int seen = -1;

  std::atomic<bool> reclaimed{false};
  std::thread reader([&] {
    const tasklife::rcu_thread_registration reg(domain);
    const tasklife::rcu_read_guard guard(domain);
    object* o = published.load(std::memory_order_acquire);
    stage.store(1, std::memory_order_relaxed);
    // Wait (bounded) until the writer says it reclaimed the object. With a real
    // grace period that cannot happen while this reader is inside its section, so
    // the wait times out; with the broken variant it happens at once and the read
    // below touches freed memory, deterministically.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (!reclaimed.load(std::memory_order_relaxed) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    seen = o->value;  // still inside the critical section
  });

  while (stage.load(std::memory_order_relaxed) != 1) {
    std::this_thread::yield();
  }
  object* old = published.exchange(nullptr, std::memory_order_acq_rel);
  if (use_call_rcu) {
    domain.call_rcu(&old->head, &reclaim);
    reclaimed.store(true, std::memory_order_relaxed);  // true only if the callback ran inline
    reader.join();
    domain.rcu_barrier();
  } else {
    domain.synchronize_rcu();
    reclaim(&old->head);
    reclaimed.store(true, std::memory_order_relaxed);
    reader.join();
  }
  std::printf("reader saw %d (%s)\n", seen, seen == 8 ? "intact" : "POISONED");
  return seen == 8 ? 0 : 1;
}
