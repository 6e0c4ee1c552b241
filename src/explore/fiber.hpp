// Fibers: the explorer's simulated threads, each with its own stack, run one at
// a time on the explorer's OS thread.
//
// What it is
//   A fiber runs a function on a stack of its own; switch_to() saves the running
//   context and resumes another. On x86-64 the switch is a few instructions that
//   save the callee-saved registers and the stack pointer (no system call);
//   elsewhere it is ucontext's swapcontext. AddressSanitizer and ThreadSanitizer
//   are told about every switch (their fiber APIs), so both keep working inside.
//
// Members
//   fiber(stack_size), fiber::start(entry, arg), fiber::switch_to(from, to),
//   fiber::main_of_this_thread()
//   exception_state, swap_exception_state(other)   the C++ runtime's share of a fiber
//
// Lifetime
//   A fiber's stack is allocated once (mmap, with a guard page below it) and
//   reused by every start(); the function it runs must end by switching away for
//   good (it never returns into the fiber's first frame). A fiber suspended
//   mid-function that will never be resumed (a deadlock, a thread past its step
//   limit) is abandoned: its frames are never unwound, and its stack stays mapped
//   for the life of the process (and is a root for LeakSanitizer), so what those
//   frames own is neither freed under them nor reported as leaked.
//
// Memory ordering
//   None: fibers of one OS thread never run at the same time; a switch is a call.
#pragma once

#include <cstddef>

namespace tasklife::detail {

class fiber {
 public:
  using entry_fn = void (*)(void* arg);

  // The OS thread's own context (no stack of its own).
  fiber() noexcept;
  explicit fiber(std::size_t stack_size);
  ~fiber();
  fiber(const fiber&) = delete;
  fiber& operator=(const fiber&) = delete;

  // Prepares the fiber to run entry(arg) from the top of its stack at the next
  // switch to it.
  void start(entry_fn entry, void* arg) noexcept;
  // Suspends `from` (the running context) and resumes `to`.
  static void switch_to(fiber& from, fiber& to) noexcept;
  // The last switch of `from`, whose function has ended: as switch_to, and under
  // ASan its fake stack (detect_stack_use_after_return) is freed rather than saved.
  // A reused fiber gets a new one when it starts again, so saving it here leaked one
  // fake stack per execution and thread: gigabytes over an exploration.
  [[noreturn]] static void finish_to(fiber& from, fiber& to) noexcept;
  // This suspended fiber will never run again: its stack is kept (see Lifetime).
  void abandon() noexcept;
  // How many stacks abandon() has kept in this process so far.
  static std::size_t abandoned_stacks() noexcept;

  // Where a new fiber begins (called by the switch code, not by users).
  static void trampoline(fiber* self) noexcept;

 private:
  static void jump(fiber& from, fiber& to) noexcept;  // the switch under both
  void* stack_base_ = nullptr;                        // the mapping, guard page included
  std::size_t stack_size_ = 0;                        // usable bytes above the guard page
  void* sp_ = nullptr;                         // saved stack pointer while suspended (x86-64)
  [[maybe_unused]] void* ucontext_ = nullptr;  // ucontext_t, off x86-64
  entry_fn entry_ = nullptr;
  void* arg_ = nullptr;
  // Sanitizer state (used only in sanitizer builds).
  [[maybe_unused]] void* asan_fake_stack_ = nullptr;
  const void* asan_bottom_ = nullptr;
  std::size_t asan_size_ = 0;
  [[maybe_unused]] void* tsan_fiber_ = nullptr;
  [[maybe_unused]] bool owns_tsan_fiber_ = false;
};

// The C++ runtime's per-thread exception state: the stack of exceptions being
// handled (innermost catch first) and the count of exceptions thrown and not yet
// caught (std::uncaught_exceptions). It belongs to a fiber, not to the OS thread:
// a simulated thread that reaches a scheduling point inside a catch block, or in
// a destructor run by unwinding, must find it as it left it after other fibers
// have thrown and caught. The explorer swaps it with every switch, as it swaps
// the library's own thread-local state. The layout is the Itanium C++ ABI's
// __cxa_eh_globals (§2.2.2: caughtExceptions, uncaughtExceptions), which both
// libstdc++ and libc++abi keep as their first two members; the ARM EABI unwinder
// adds a third (propagatingExceptions). The struct below has their members, in
// their order, so it has their layout.
struct exception_state {
  void* caught = nullptr;
  unsigned int uncaught = 0;
#ifdef __ARM_EABI_UNWINDER__
  void* propagating = nullptr;
#endif
};
void swap_exception_state(exception_state& other) noexcept;

}  // namespace tasklife::detail
