// tasklife/thread_safety.hpp — locks whose rules the compiler checks.
//
// What it is
//   Clang's thread-safety analysis (-Wthread-safety) turns "guarded by" comments
//   into rules it proves at compile time: a member declared TASKLIFE_GUARDED_BY(m)
//   may only be touched while m is held, a function declared TASKLIFE_REQUIRES(m)
//   only be called with m held. std::mutex carries no annotations in libstdc++,
//   so tasklife's code locks these thin wrappers instead. Under GCC the macros
//   expand to nothing and the wrappers are exactly the standard types.
//
// Members
//   TASKLIFE_CAPABILITY, TASKLIFE_SCOPED_CAPABILITY, TASKLIFE_GUARDED_BY,
//   TASKLIFE_PT_GUARDED_BY, TASKLIFE_REQUIRES, TASKLIFE_REQUIRES_SHARED,
//   TASKLIFE_EXCLUDES, TASKLIFE_ACQUIRE, TASKLIFE_RELEASE,
//   TASKLIFE_ACQUIRE_SHARED, TASKLIFE_RELEASE_SHARED, TASKLIFE_RETURN_CAPABILITY,
//   TASKLIFE_NO_THREAD_SAFETY_ANALYSIS   the attributes
//   detail::mutex, detail::shared_mutex   std::mutex / std::shared_mutex, annotated
//   detail::lock_guard, detail::shared_lock   their scoped holders
//
// Lifetime
//   As the standard types they wrap: a mutex must outlive every holder.
//
// Memory ordering
//   The standard mutexes': unlock synchronises with the next lock of the same
//   mutex, so whatever a holder wrote is visible to the next holder.
#pragma once

#include <mutex>
#include <shared_mutex>

#if defined(__clang__)
#define TASKLIFE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define TASKLIFE_THREAD_ANNOTATION(x)
#endif

#define TASKLIFE_CAPABILITY(name) TASKLIFE_THREAD_ANNOTATION(capability(name))
#define TASKLIFE_SCOPED_CAPABILITY TASKLIFE_THREAD_ANNOTATION(scoped_lockable)
#define TASKLIFE_GUARDED_BY(m) TASKLIFE_THREAD_ANNOTATION(guarded_by(m))
#define TASKLIFE_PT_GUARDED_BY(m) TASKLIFE_THREAD_ANNOTATION(pt_guarded_by(m))
#define TASKLIFE_REQUIRES(...) TASKLIFE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define TASKLIFE_REQUIRES_SHARED(...) \
  TASKLIFE_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define TASKLIFE_EXCLUDES(...) TASKLIFE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define TASKLIFE_ACQUIRE(...) TASKLIFE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define TASKLIFE_RELEASE(...) TASKLIFE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TASKLIFE_ACQUIRE_SHARED(...) \
  TASKLIFE_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define TASKLIFE_RELEASE_SHARED(...) \
  TASKLIFE_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define TASKLIFE_RETURN_CAPABILITY(x) TASKLIFE_THREAD_ANNOTATION(lock_returned(x))
#define TASKLIFE_NO_THREAD_SAFETY_ANALYSIS TASKLIFE_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace tasklife::detail {

class TASKLIFE_CAPABILITY("mutex") mutex {
 public:
  mutex() = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  void lock() TASKLIFE_ACQUIRE() { m_.lock(); }
  void unlock() TASKLIFE_RELEASE() { m_.unlock(); }
  // For APIs that take the standard type (refcount_dec_and_mutex_lock).
  std::mutex& native() noexcept { return m_; }

 private:
  std::mutex m_;
};

class TASKLIFE_CAPABILITY("mutex") shared_mutex {
 public:
  shared_mutex() = default;
  shared_mutex(const shared_mutex&) = delete;
  shared_mutex& operator=(const shared_mutex&) = delete;

  void lock() TASKLIFE_ACQUIRE() { m_.lock(); }
  void unlock() TASKLIFE_RELEASE() { m_.unlock(); }
  void lock_shared() TASKLIFE_ACQUIRE_SHARED() { m_.lock_shared(); }
  void unlock_shared() TASKLIFE_RELEASE_SHARED() { m_.unlock_shared(); }

 private:
  std::shared_mutex m_;
};

// Holds a mutex (exclusively) for its scope.
template <class Mutex>
class TASKLIFE_SCOPED_CAPABILITY lock_guard {
 public:
  explicit lock_guard(Mutex& m) TASKLIFE_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~lock_guard() TASKLIFE_RELEASE() { m_.unlock(); }
  lock_guard(const lock_guard&) = delete;
  lock_guard& operator=(const lock_guard&) = delete;

 private:
  Mutex& m_;
};

// Holds a shared_mutex shared for its scope.
class TASKLIFE_SCOPED_CAPABILITY shared_lock {
 public:
  explicit shared_lock(shared_mutex& m) TASKLIFE_ACQUIRE_SHARED(m) : m_(m) { m_.lock_shared(); }
  ~shared_lock() TASKLIFE_RELEASE() { m_.unlock_shared(); }
  shared_lock(const shared_lock&) = delete;
  shared_lock& operator=(const shared_lock&) = delete;

 private:
  shared_mutex& m_;
};

}  // namespace tasklife::detail
