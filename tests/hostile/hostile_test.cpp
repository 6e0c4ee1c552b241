// Hostile input (issue 14): each case a caller can get wrong reaches a
// diagnostic with a kind and the object it is about, and nothing after it is
// undefined behaviour (this suite runs under AddressSanitizer/UBSan in CI). Every
// test records violations with the kit's contract_capture in record mode (the
// handler returns, so the rule "a handler that returns skips the operation" is
// what is tested), asserts each one's kind and object, and ends with the
// kernel's invariants: what was forked is freed, nothing is left over, nothing
// else was reported.
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <tasklife/deterministic_rcu.hpp>
#include <tasklife/tasklife.hpp>
#include <tasklife/testing.hpp>

#include "../support/values.hpp"

namespace tasklife {
namespace {

using test::task_value;

using recorded = testkit::captured_violation;

// The capture of the running test (record mode: the handler returns, so the rule
// "a handler that returns skips the operation" is what is tested).
testkit::contract_capture* g_capture = nullptr;

kernel_config det(std::string name) {
  kernel_config c;
  c.name = std::move(name);
  c.rcu_backend_factory = deterministic_rcu_factory();
  return c;
}

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    capture_.emplace(testkit::capture_mode::record);
    g_capture = &*capture_;
    // The promise under test holds in checked builds: TASKLIFE_CHECKS=none compiles
    // these checks out (check.hpp), and the misuse is undefined behaviour there.
    TASKLIFE_REQUIRE_CHECKS(check_level::contracts);
  }
  void TearDown() override {
    // The invariant every test ends with: no violation it did not take out.
    const std::vector<recorded> all = capture_->violations();
    for (std::size_t i = 0; i < all.size(); ++i) {
      EXPECT_TRUE(i < taken_.size() && taken_[i]) << "unexpected violation: " << all[i].message;
    }
    g_capture = nullptr;
    capture_.reset();
  }

  // Takes out every recorded violation of `kind` for which `about` holds; fails
  // unless there are exactly `n`.
  template <class Pred>
  void expect_taken(contract_kind kind, Pred about, std::size_t n = 1, const char* what = "") {
    const std::vector<recorded> all = capture_->violations();
    taken_.resize(all.size(), false);
    std::size_t found = 0;
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (!taken_[i] && all[i].kind == kind && about(all[i])) {
        taken_[i] = true;
        ++found;
      }
    }
    EXPECT_EQ(found, n) << "violations of kind " << to_string(kind) << " " << what;
  }
  void expect_about_task(contract_kind kind, std::uint64_t id, std::size_t n = 1) {
    expect_taken(
        kind, [id](const recorded& r) { return r.object.task_id == id; }, n, "about the task");
  }
  void expect_about_address(contract_kind kind, const void* p, std::size_t n = 1) {
    expect_taken(
        kind, [p](const recorded& r) { return r.object.address == p; }, n, "about the address");
  }
  // A domain's diagnostics name it by its name (the object's `kernel` field).
  void expect_about_domain(contract_kind kind, const std::string& name, std::size_t n = 1) {
    expect_taken(
        kind, [&name](const recorded& r) { return r.object.kernel == name; }, n,
        "about the domain");
  }
  void expect_unnamed(contract_kind kind, std::size_t n = 1) {
    expect_taken(
        kind, [](const recorded& r) { return !r.object.is_task(); }, n, "about no task");
  }

  // The whole death of a task and its grace period on a deterministic kernel.
  static void retire_and_free(kernel& k, task_struct* t) {
    ASSERT_TRUE(k.retire(t));
    k.rcu().rcu_barrier();
  }
  // Nothing left: every forked task freed, nothing queued.
  static void expect_clean(kernel& k) {
    k.rcu().rcu_barrier();
    EXPECT_EQ(k.stats().allocated(), 0U);
    EXPECT_EQ(k.rcu().stats().pending(), 0U);
  }

 private:
  std::optional<testkit::contract_capture> capture_;
  std::vector<bool> taken_;
};

// ---- NULL and never-forked tasks ------------------------------------------------------------

TEST_F(HostileTest, NullTaskOrNamespaceToThePidFunctionsIsReported) {
  kernel k(det("pid"));
  {
    const rcu_thread_registration reg(k.rcu());
    const rcu_read_guard guard(k.rcu());
    EXPECT_EQ(find_task_by_pid_ns(1, nullptr), nullptr);
  }
  EXPECT_EQ(task_pid_nr_ns(nullptr, &k.init_pid_ns()), 0);
  EXPECT_EQ(task_active_pid_ns(nullptr), nullptr);
  EXPECT_EQ(task_pid_nr(nullptr), 0);
  expect_unnamed(contract_kind::null_argument, 4);
  expect_clean(k);
}

TEST_F(HostileTest, ANeverForkedTaskIsNotATask) {
  kernel k(det("fake"));
  task_struct fake;
  EXPECT_EQ(task_pid_nr_ns(&fake, &k.init_pid_ns()), 0);
  EXPECT_EQ(task_active_pid_ns(&fake), nullptr);
  bpf_task_release_dtor(&fake);
  task_kptr_dtor(&fake);
  k.trace_task(&fake);
  EXPECT_TRUE(k.history(&fake).empty());
  expect_about_address(contract_kind::not_a_task, &fake, 6);
  EXPECT_FALSE(fake.traced.load());
  expect_clean(k);
}

TEST_F(HostileTest, NullToTheDestructorsCallbacksAndHistoryIsReported) {
  kernel k(det("null"));
  task_kptr_dtor(nullptr);
  bpf_task_release_dtor(nullptr);
  delayed_put_task_struct(nullptr);
  __put_task_struct_rcu_cb(nullptr);
  __put_task_struct(nullptr);
  k.trace_task(nullptr);
  EXPECT_TRUE(k.history(static_cast<const task_struct*>(nullptr)).empty());
  task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
  detail::kernel_access::record(k, nullptr, task_event_kind::get, 1, 1, {},
                                std::source_location::current());
  expect_unnamed(contract_kind::null_argument, 8);
  retire_and_free(k, t);
  expect_clean(k);
}

TEST_F(HostileTest, AnRcuHeadThatIsNoTasksIsReportedByTheTaskCallbacks) {
  kernel k(det("head"));
  task_struct fake;
  delayed_put_task_struct(&fake.rcu);
  __put_task_struct_rcu_cb(&fake.rcu);
  expect_about_address(contract_kind::not_a_task, &fake, 2);
  expect_clean(k);
}

// The kernel's refcount_t is not NULL-safe; tasklife's reports and skips (refcount.hpp).
TEST_F(HostileTest, RefcountOnNullIsReportedAndSkipped) {
  refcount_t* none = nullptr;
  refcount_set(none, 1);
  refcount_inc(none);
  refcount_add(2, none);
  EXPECT_EQ(refcount_read(none), 0U);
  EXPECT_FALSE(refcount_inc_not_zero(none));
  EXPECT_FALSE(refcount_inc_not_zero_acquire(none));
  EXPECT_FALSE(refcount_dec_and_test(none));
  EXPECT_FALSE(refcount_sub_and_test(3, none));
  refcount_dec(none);
  EXPECT_FALSE(refcount_dec_if_one(none));
  EXPECT_FALSE(refcount_dec_not_one(none));
  std::mutex m;
  EXPECT_FALSE(refcount_dec_and_lock(none, &m));
  EXPECT_TRUE(m.try_lock()) << "the lock was not left held";
  m.unlock();
  expect_unnamed(contract_kind::null_argument, 12);
}

// ---- teardown mistakes leave memory valid ------------------------------------------------------

TEST_F(HostileTest, ATaskLeakedAtTeardownIsATombstoneItsLaterPutIsReported) {
  auto k = std::make_unique<kernel>(det("leaky"));
  task_struct* t = k->fork(nullptr, {.comm = "held"}).task;
  const std::uint64_t id = task_id(t);
  get_task_struct(t);  // a holder the teardown does not know about
  k.reset();
  expect_about_task(contract_kind::leak, id);
  // The holder's put after the kernel is gone: reported, not a use-after-free.
  put_task_struct(t);
  get_task_struct(t);
  put_task_struct_rcu_user(t);
  bpf_task_release_dtor(t);
  expect_about_task(contract_kind::teardown_order, id, 4);
  EXPECT_EQ(task_pid_nr(t), 0);
  expect_about_task(contract_kind::teardown_order, id);
}

TEST_F(HostileTest, AMapDestroyedAfterItsKernelFreesItsValuesWithoutIt) {
  auto k = std::make_unique<kernel>(det("mapless"));
  task_struct* prog = k->fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k->fork(nullptr, {.comm = "stashed"}).task;
  const std::uint64_t id = task_id(t);
  auto map = std::make_unique<bpf_array_map<task_value>>(*k, 2, "stash");
  {
    auto scope = k->run_as(prog);
    const rcu_read_guard guard(k->rcu());
    task_struct* ref = bpf_task_acquire(t);
    ASSERT_EQ(ref, t);
    EXPECT_EQ(bpf_kptr_xchg(&map->lookup_elem(0)->task, ref), nullptr);
  }
  k.reset();  // the map outlives its kernel
  expect_taken(contract_kind::teardown_order,
               [](const recorded& r) { return r.object.map == "stash"; });
  expect_taken(
      contract_kind::leak, [](const recorded&) { return true; }, 2);
  // Its operations are refused; its destructor releases the stashed reference
  // through the tombstone (reported) and frees the values without the kernel.
  EXPECT_EQ(map->update_elem(0, task_value{}, BPF_ANY), -EINVAL);
  expect_taken(contract_kind::teardown_order,
               [](const recorded& r) { return r.object.map == "stash"; });
  {
    // A throwing handler must not terminate the destructor (the innermost
    // capture receives the violation).
    const testkit::contract_capture thrower(testkit::capture_mode::throw_on_violation);
    map.reset();
    const auto inner = thrower.violations();
    ASSERT_EQ(inner.size(), 1U);
    EXPECT_EQ(inner[0].kind, contract_kind::teardown_order);
    EXPECT_EQ(inner[0].object.task_id, id);
  }
}

TEST_F(HostileTest, AProgramAndItsLinkOutlivingTheirKernelAreRefusedAndEndSafely) {
  auto k = std::make_unique<kernel>(det("progless"));
  int runs = 0;
  bpf_prog p(*k, prog_type::tracing, "tp_btf/task_newtask", [&runs](task_struct*) {
    ++runs;
    return 0;
  });
  bpf_link link = p.attach(k->task_newtask());
  task_struct* child = k->fork(nullptr, {.comm = "child"}).task;
  ASSERT_EQ(runs, 1) << "attached: the fork ran it";
  retire_and_free(*k, child);
  const void* registration = nullptr;
  k.reset();  // the program and its link outlive their kernel
  expect_taken(contract_kind::teardown_order, [&registration](const recorded& r) {
    registration = r.object.address;
    return r.message.find("program 'tp_btf/task_newtask'") != std::string::npos;
  });
  EXPECT_NE(registration, nullptr);
  // The link knows its tracepoint is gone: nothing to detach, nothing touched.
  EXPECT_FALSE(link.attached());
  EXPECT_FALSE(link.detach());
  // A run is refused instead of using the destroyed kernel's RCU domain.
  const prog_run_result r = p.run(nullptr);
  EXPECT_EQ(r.ret, -ENODEV);
  expect_about_address(contract_kind::teardown_order, &p);
  // The invariant: the body ran exactly once, while its kernel lived.
  EXPECT_EQ(runs, 1);
}

TEST_F(HostileTest, AKernelDestroyedWhileThisThreadRunsAsItsTaskLeavesTheScopeSafe) {
  auto k = std::make_unique<kernel>(det("scoped"));
  task_struct* t = k->fork(nullptr, {.comm = "me"}).task;
  const std::uint64_t id = task_id(t);
  std::optional<current_task_scope> scope;
  scope.emplace(t);
  ASSERT_EQ(get_current(), t);
  k.reset();
  expect_unnamed(contract_kind::teardown_order, 2);  // the scope, and its registration
  expect_about_task(contract_kind::leak, id);
  EXPECT_EQ(get_current(), nullptr) << "the thread runs as no task after the teardown";
  EXPECT_EQ(bpf_task_acquire(t), nullptr);
  expect_unnamed(contract_kind::no_current);
  scope.reset();  // ends against the kept anchor and domain
  EXPECT_EQ(get_current(), nullptr);
}

TEST_F(HostileTest, AKernelDestroyedWhileAnotherThreadRunsAsItsTaskWaitsForIt) {
  auto k = std::make_unique<kernel>(det("waits"));
  task_struct* t = k->fork(nullptr, {.comm = "other"}).task;
  task_struct* target = k->fork(nullptr, {.comm = "target"}).task;
  std::atomic<bool> entered{false};
  std::atomic<bool> acquired{false};
  std::thread other([&] {
    const current_task_scope scope(t);
    entered = true;
    while (g_capture->count(contract_kind::teardown_order) == 0) {  // the teardown reported
      std::this_thread::yield();
    }
    // The kernel is being torn down but still exists: the teardown waits for this
    // scope, so the kfunc reads live memory.
    task_struct* ref = bpf_task_acquire(target);
    acquired = ref == target;
    bpf_task_release(ref);
  });
  while (!entered.load()) {
    std::this_thread::yield();
  }
  k.reset();
  other.join();
  EXPECT_TRUE(acquired.load());
  expect_unnamed(contract_kind::teardown_order, 1);
  expect_taken(
      contract_kind::leak, [](const recorded&) { return true; }, 2);
  // The other thread's registration was ended after the kernel's domain was
  // destroyed: the domain was kept. Whatever else teardown said is about it.
  expect_taken(
      contract_kind::teardown_order, [](const recorded&) { return true; }, 0);
}

TEST_F(HostileTest, AKernelDestroyedWhileAnotherThreadIsInAReadSectionKeepsItsDomain) {
  auto k = std::make_unique<kernel>(det("reader"));
  task_struct* t = k->fork(nullptr, {.comm = "found"}).task;
  const pid_t pid = t->pid;
  std::mutex m;
  std::condition_variable cv;
  bool inside = false;
  bool destroyed = false;
  rcu_domain* domain = &k->rcu();
  std::string comm;
  std::thread reader([&] {
    const rcu_thread_registration reg(*domain);
    const rcu_read_guard guard(*domain);
    task_struct* found = k->init_pid_ns().find_task(pid);
    {
      std::unique_lock lock(m);
      inside = true;
      cv.notify_all();
      cv.wait(lock, [&] { return destroyed; });
    }
    comm = found->comm;  // the task is a tombstone: its memory is still there
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return inside; });
  }
  k.reset();
  {
    const std::lock_guard lock(m);
    destroyed = true;
  }
  cv.notify_all();
  reader.join();
  EXPECT_EQ(comm, "found");
  expect_taken(contract_kind::leak, [](const recorded&) { return true; });
  expect_unnamed(contract_kind::teardown_order);  // the live registration
}

TEST_F(HostileTest, ARegistrationWithADestroyedKernelsDomainEndsSafely) {
  auto k = std::make_unique<kernel>(det("registered"));
  std::optional<rcu_thread_registration> reg;
  reg.emplace(k->rcu());
  k.reset();
  expect_unnamed(contract_kind::teardown_order);
  reg.reset();
}

// A domain of the user's own (not a kernel's), on the heap so that AddressSanitizer
// sees a use of it after its destructor: the registration's end touches only the
// domain's core, which the early teardown keeps.
TEST_F(HostileTest, AUserDomainDestroyedUnderARegistrationKeepsWhatTheRegistrationTouches) {
  auto domain = std::make_unique<rcu_domain>("mine", std::make_unique<deterministic_rcu>());
  rcu_backend* const backend = domain->backend();
  std::optional<rcu_thread_registration> reg;
  reg.emplace(*domain);
  ASSERT_TRUE(backend->thread_registered());
  domain.reset();
  expect_about_domain(contract_kind::teardown_order, "mine");
  // The backend the domain owned is kept: the registration ends on it.
  EXPECT_TRUE(backend->thread_registered());
  reg.reset();
  EXPECT_FALSE(backend->thread_registered()) << "the registration's end unregistered the thread";
  EXPECT_EQ(backend->thread_registrations(), 0U);
}

TEST_F(HostileTest, AUserNativeDomainDestroyedUnderARegistrationUnregistersTheThreadLater) {
  auto domain = std::make_unique<rcu_domain>("mine-native");
  std::optional<rcu_thread_registration> reg;
  reg.emplace(*domain);
  domain.reset();
  expect_about_domain(contract_kind::teardown_order, "mine-native");
  const rcu_domain witness("witness");  // liburcu's registration is per thread, not per domain
  EXPECT_TRUE(witness.thread_registered());
  reg.reset();
  EXPECT_FALSE(witness.thread_registered()) << "the registration's end unregistered the thread";
}

TEST_F(HostileTest, AUserDomainDestroyedUnderAnotherThreadsRegistrationLetsItEnd) {
  auto domain = std::make_unique<rcu_domain>("mine-shared", std::make_unique<deterministic_rcu>());
  rcu_backend* const backend = domain->backend();
  std::mutex m;
  std::condition_variable cv;
  bool registered = false;
  bool destroyed = false;
  bool still_registered = false;
  bool unregistered = false;
  std::thread other([&] {
    {
      const rcu_thread_registration reg(*domain);
      std::unique_lock lock(m);
      registered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return destroyed; });
      still_registered = backend->thread_registered();
    }
    unregistered = !backend->thread_registered();
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return registered; });
  }
  domain.reset();
  {
    const std::lock_guard lock(m);
    destroyed = true;
  }
  cv.notify_all();
  other.join();
  EXPECT_TRUE(still_registered);
  EXPECT_TRUE(unregistered) << "the other thread's registration ended on the kept backend";
  expect_about_domain(contract_kind::teardown_order, "mine-shared");
}

// ---- the quarantine's eviction is not a blind spot ---------------------------------------------

TEST_F(HostileTest, ATaskUsedAfterItLeftTheQuarantineIsStillReported) {
  TASKLIFE_REQUIRE_CHECKS(check_level::full);  // freed memory is kept only there
  kernel_config c = det("evict");
  c.quarantine_capacity = 1;
  kernel k(std::move(c));
  task_struct* first = k.fork(nullptr, {.comm = "first"}).task;
  task_struct* second = k.fork(nullptr, {.comm = "second"}).task;
  const std::uint64_t id = task_id(first);
  retire_and_free(k, first);
  retire_and_free(k, second);
  ASSERT_EQ(k.stats().quarantined, 1U) << "the first one was evicted";
  get_task_struct(first);
  put_task_struct(first);
  expect_about_task(contract_kind::use_after_free, id, 2);
  expect_clean(k);
}

// ---- the same rcu_head queued twice ------------------------------------------------------------

int g_callbacks = 0;
void count_callback(rcu_head*) {
  ++g_callbacks;
}

TEST_F(HostileTest, AnRcuHeadQueuedTwiceIsRefusedAndTheDomainDrains) {
  g_callbacks = 0;
  rcu_head head{};
  {
    rcu_domain domain("twice", std::make_unique<deterministic_rcu>());
    domain.call_rcu(&head, &count_callback);
    domain.call_rcu(&head, &count_callback);
    expect_about_address(contract_kind::already_queued, &head);
    domain.rcu_barrier();
    EXPECT_EQ(g_callbacks, 1);
    EXPECT_EQ(domain.stats().pending(), 0U);
    // After its callback ran the head may be queued again.
    domain.call_rcu(&head, &count_callback);
  }  // the destructor drains: no hang
  EXPECT_EQ(g_callbacks, 2);
}

// ---- pid namespaces
// ------------------------------------------------------------------------------

template <class Ns>
concept can_free_nr = requires(Ns& ns) {
  ns.free_nr(1);
};

TEST_F(HostileTest, OnlyTheKernelCreatesPidNamespacesAndItValidatesPidMax) {
  static_assert(!std::is_constructible_v<pid_namespace, kernel&, pid_namespace*, int, int>);
  static_assert(!can_free_nr<pid_namespace>);
  for (const int bad : {-2, 0, 1, PID_MAX_LIMIT + 1, INT_MAX}) {
    kernel_config c = det("pid_max");
    c.pid_max = bad;
    kernel k(std::move(c));
    expect_taken(contract_kind::invalid_argument,
                 [](const recorded& r) { return r.object.kernel == "pid_max"; });
    EXPECT_EQ(k.init_pid_ns().pid_max(), PID_MAX_DEFAULT);
    task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
    ASSERT_NE(t, nullptr);
    retire_and_free(k, t);
    expect_clean(k);
  }
}

TEST_F(HostileTest, APidNamespaceNestedTooDeepIsNotCreated) {
  kernel k(det("deep"));
  pid_namespace* ns = &k.init_pid_ns();
  for (int i = 0; i < 40; ++i) {
    ns = &k.create_pid_namespace(*ns);
  }
  EXPECT_EQ(ns->level(), MAX_PID_NS_LEVEL);
  expect_taken(
      contract_kind::limit_exceeded, [](const recorded&) { return true; }, 8);
  // A lookup outside rcu_read_lock is refused when the handler returns.
  task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
  EXPECT_EQ(k.init_pid_ns().find_task(t->pid), nullptr);
  expect_taken(contract_kind::missing_rcu_lock, [](const recorded&) { return true; });
  retire_and_free(k, t);
  expect_clean(k);
}

// ---- foreign tasks to the lifecycle
// ---------------------------------------------------------------

TEST_F(HostileTest, AKernelsLifecycleRefusesAnotherKernelsTask) {
  kernel a(det("a"));
  kernel b(det("b"));
  task_struct* tb = b.fork(nullptr, {.comm = "of-b"}).task;
  const std::uint64_t id = task_id(tb);
  const fork_result child = a.fork(tb);
  EXPECT_FALSE(child);
  a.do_exit(tb);
  a.finish_task_switch(tb);
  EXPECT_FALSE(a.wait_task_zombie(tb));
  EXPECT_FALSE(a.retire(tb));
  {
    auto scope = a.run_as(tb);
    EXPECT_EQ(get_current(), nullptr) << "an inert scope";
  }
  expect_about_task(contract_kind::foreign_object, id, 6);
  pid_namespace& ns = a.create_pid_namespace(b.init_pid_ns());
  EXPECT_EQ(&ns, &b.init_pid_ns()) << "nothing created";
  expect_taken(contract_kind::foreign_object,
               [](const recorded& r) { return r.object.kernel == "b"; });
  // b's task is untouched and dies normally in b.
  EXPECT_EQ(tb->exit_state.load(), 0);
  EXPECT_EQ(refcount_read(&tb->rcu_users), 2U);
  EXPECT_EQ(a.stats().forked, 0U);
  retire_and_free(b, tb);
  expect_clean(a);
  expect_clean(b);
}

// ---- over-release caught at the release, without holder tracking ------------------------------

class HostileProfileTest : public HostileTest,
                           public ::testing::WithParamInterface<semantics_profile> {};

TEST_P(HostileProfileTest, OverReleaseIsCaughtAtTheRelease) {
  kernel_config c = det("over");
  c.profile = GetParam();
  kernel k(std::move(c));
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "victim"}).task;
  const std::uint64_t id = task_id(t);
  bpf_array_map<task_value> map(k, 1, "stash");
  {
    auto scope = k.run_as(prog);
    const rcu_read_guard guard(k.rcu());
    // A second bpf_task_release of one acquired reference.
    task_struct* ref = bpf_task_acquire(t);
    ASSERT_EQ(ref, t);
    bpf_task_release(ref);
    bpf_task_release(ref);
    // A release of a reference never acquired.
    bpf_task_release(t);
    expect_about_task(contract_kind::over_release, id, 2);
    // bpf_kptr_xchg of an unreferenced task: caught when the slot's reference
    // is released (the map's destructor at update).
    EXPECT_EQ(bpf_kptr_xchg(&map.lookup_elem(0)->task, t), nullptr);
  }
  EXPECT_EQ(map.update_elem(0, task_value{}, BPF_ANY), 0);
  expect_about_task(contract_kind::over_release, id);
  // put_task_struct_rcu_user twice on one extra reference; put_task_struct of
  // usage never taken.
  refcount_inc(&t->rcu_users);
  put_task_struct_rcu_user(t);
  put_task_struct_rcu_user(t);
  put_task_struct(t);
  expect_about_task(contract_kind::over_release, id, 2);
  EXPECT_EQ(refcount_read(&t->rcu_users), 2U);
  EXPECT_EQ(refcount_read(&t->usage), 1U);
  // The task is consistent: it dies normally, freed exactly once.
  retire_and_free(k, t);
  retire_and_free(k, prog);
  EXPECT_EQ(k.stats().freed, 2U);
  expect_clean(k);
}

INSTANTIATE_TEST_SUITE_P(Profiles, HostileProfileTest,
                         ::testing::Values(semantics_profile::rcu_users_inc,
                                           semantics_profile::usage_based,
                                           semantics_profile::rcu_safe, semantics_profile::current,
                                           semantics_profile::newest),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST_F(HostileTest, PutTaskStructManyRefusesANonPositiveCount) {
  kernel k(det("many"));
  task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
  put_task_struct_many(t, -5);
  put_task_struct_many(t, 0);
  expect_about_task(contract_kind::invalid_argument, task_id(t), 2);
  EXPECT_EQ(refcount_read(&t->usage), 1U);
  get_task_struct(t);
  get_task_struct(t);
  put_task_struct_many(t, 3);  // one more than taken
  expect_about_task(contract_kind::over_release, task_id(t));
  put_task_struct_many(t, 2);
  EXPECT_EQ(refcount_read(&t->usage), 1U);
  retire_and_free(k, t);
  expect_clean(k);
}

// ---- maps ---------------------------------------------------------------------------------------

struct tagged_value {
  kptr<task_struct> task;
  kptr<task_struct> not_a_field;  // a kptr member the value does not list
  long tag = 7;
  static constexpr auto kptr_fields = std::make_tuple(&tagged_value::task);
};

TEST_F(HostileTest, XchgIntoAFieldThatIsNoKptrFieldIsRefused) {
  kernel k(det("fields"));
  task_struct* prog = k.fork(nullptr, {.comm = "prog"}).task;
  task_struct* t = k.fork(nullptr, {.comm = "t"}).task;
  {
    bpf_array_map<tagged_value> map(k, 2, "tagged");
    auto scope = k.run_as(prog);
    const rcu_read_guard guard(k.rcu());
    tagged_value* v = map.lookup_elem(1);
    task_struct* ref = bpf_task_acquire(t);
    ASSERT_EQ(ref, t);
    auto* tag_slot = reinterpret_cast<kptr<task_struct>*>(&v->tag);
    EXPECT_EQ(bpf_kptr_xchg(tag_slot, ref), nullptr);
    EXPECT_EQ(bpf_kptr_xchg(&v->not_a_field, ref), nullptr);
    expect_about_address(contract_kind::foreign_object, tag_slot);
    expect_about_address(contract_kind::foreign_object, &v->not_a_field);
    EXPECT_EQ(v->tag, 7) << "the field was not overwritten";
    EXPECT_EQ(bpf_kptr_xchg(&v->task, ref), nullptr);  // the kptr field itself works
  }
  retire_and_free(k, t);
  retire_and_free(k, prog);
  expect_clean(k);
}

TEST_F(HostileTest, MapsWithoutEntriesOrTooManyAreRefusedAtCreation) {
  kernel k(det("sizes"));
  {
    bpf_hash_map<int, task_value> none(k, 0, "hash0");
    bpf_array_map<task_value> empty(k, 0, "array0");
    expect_taken(
        contract_kind::invalid_argument,
        [](const recorded& r) { return r.object.map == "hash0" || r.object.map == "array0"; }, 2);
    EXPECT_EQ(none.update_elem(1, task_value{}, BPF_ANY), -E2BIG);
    EXPECT_EQ(empty.update_elem(0, task_value{}, BPF_ANY), -E2BIG);
    bpf_hash_map<int, task_value> huge(k, UINT32_MAX, "hash-huge");
    bpf_array_map<task_value> vast(k, UINT32_MAX, "array-huge");
    expect_taken(
        contract_kind::limit_exceeded,
        [](const recorded& r) {
          return r.object.map == "hash-huge" || r.object.map == "array-huge";
        },
        2);
    EXPECT_EQ(huge.max_entries(), 0U);
    EXPECT_EQ(vast.max_entries(), 0U);
    EXPECT_EQ(huge.update_elem(1, task_value{}, BPF_ANY), -E2BIG);
  }
  expect_clean(k);
}

}  // namespace
}  // namespace tasklife
