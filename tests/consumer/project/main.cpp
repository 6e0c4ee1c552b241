// Uses the installed package: a counter, a read-side section and a deferred free.
#include <cstdio>

#include <tasklife/tasklife.hpp>

namespace {
struct object {
  tasklife::rcu_head head{};
  tasklife::refcount_t refs{1};
};
int freed = 0;
void reclaim(tasklife::rcu_head* h) {
  delete reinterpret_cast<object*>(h);
  ++freed;
}
}  // namespace

int main() {
  tasklife::rcu_domain domain("consumer");
  const tasklife::rcu_thread_registration reg(domain);
  auto* o = new object;
  {
    const tasklife::rcu_read_guard guard(domain);
    if (!tasklife::refcount_inc_not_zero(&o->refs)) {
      return 1;
    }
  }
  tasklife::refcount_dec(&o->refs);
  if (tasklife::refcount_dec_and_test(&o->refs)) {
    domain.call_rcu(&o->head, &reclaim);
  }
  domain.rcu_barrier();
  std::printf("consumer: freed %d object(s) after a grace period\n", freed);
  return freed == 1 ? 0 : 1;
}
