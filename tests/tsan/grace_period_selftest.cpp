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
// the grace period provides.
#include <tasklife/rcu.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

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

  std::thread reader([&] {
    const tasklife::rcu_thread_registration reg(domain);
    const tasklife::rcu_read_guard guard(domain);
    object* o = published.load(std::memory_order_acquire);
    stage.store(1, std::memory_order_relaxed);
    while (stage.load(std::memory_order_relaxed) != 2) {
      std::this_thread::yield();
    }
    for (int i = 0; i < 1000; ++i) {
      std::this_thread::yield();  // widen the window for the broken variant
    }
    seen = o->value;  // still inside the critical section
  });

  while (stage.load(std::memory_order_relaxed) != 1) {
    std::this_thread::yield();
  }
  object* old = published.exchange(nullptr, std::memory_order_acq_rel);
  stage.store(2, std::memory_order_relaxed);
  if (use_call_rcu) {
    domain.call_rcu(&old->head, &reclaim);
    reader.join();
    domain.rcu_barrier();
  } else {
    domain.synchronize_rcu();
    reclaim(&old->head);
    reader.join();
  }
  std::printf("reader saw %d (%s)\n", seen, seen == 8 ? "intact" : "POISONED");
  return seen == 8 ? 0 : 1;
}
