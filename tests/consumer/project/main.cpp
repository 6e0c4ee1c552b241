// Uses tasklife the way a program would: a counter, a read-side section, a deferred
// free, and a task's whole life; checks that the headers it was compiled with are
// the tier it asked for (CONSUMER_EXPECT_TIER), with the version macros.
#include <cstdio>
#include <cstring>

#include <tasklife/tasklife.hpp>

#if !defined(TASKLIFE_VERSION_MAJOR) || !defined(TASKLIFE_VERSION_MINOR) || \
    !defined(TASKLIFE_VERSION_PATCH) || !defined(TASKLIFE_VERSION)
#error "the installed headers lack the version macros"
#endif
#if TASKLIFE_VERSION_MAJOR == 0 && TASKLIFE_VERSION_MINOR < 1
#error "this consumer needs tasklife 0.1 or later"
#endif
#ifdef FMT_VERSION
#error "tasklife/tasklife.hpp included fmt: it is a private dependency"
#endif

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
  if (std::strcmp(TASKLIFE_TIER_NAME, CONSUMER_EXPECT_TIER) != 0) {
    std::printf("consumer: compiled for tier %s, expected %s\n", TASKLIFE_TIER_NAME,
                CONSUMER_EXPECT_TIER);
    return 1;
  }
  tasklife::rcu_domain domain("consumer");
  {
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
  }

  tasklife::kernel k;
  tasklife::task_struct* t = k.fork(nullptr, {.comm = "worker"}).task;
  if (t == nullptr) {
    return 1;
  }
  k.do_exit(t);
  k.finish_task_switch(t);
  k.wait_task_zombie(t);
  k.rcu().rcu_barrier();
  std::printf("consumer: tasklife %s, checks=%s: freed %d object(s) and %llu task(s)\n",
              TASKLIFE_VERSION, TASKLIFE_TIER_NAME, freed,
              static_cast<unsigned long long>(k.stats().freed));
  return freed == 1 && k.stats().freed == 1 ? 0 : 1;
}
