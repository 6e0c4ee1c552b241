// Fibers (fiber.hpp).
#include "fiber.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <new>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TASKLIFE_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TASKLIFE_FIBER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define TASKLIFE_FIBER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TASKLIFE_FIBER_TSAN 1
#endif
#endif

#ifdef TASKLIFE_FIBER_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif
#ifdef TASKLIFE_FIBER_TSAN
extern "C" {
void* __tsan_get_current_fiber(void);                      // NOLINT(bugprone-reserved-identifier)
void* __tsan_create_fiber(unsigned flags);                 // NOLINT(bugprone-reserved-identifier)
void __tsan_destroy_fiber(void* fiber);                    // NOLINT(bugprone-reserved-identifier)
void __tsan_switch_to_fiber(void* fiber, unsigned flags);  // NOLINT(bugprone-reserved-identifier)
}
#endif

#if defined(__x86_64__)
// tasklife_fiber_switch(void** save_sp, void* load_sp): pushes the callee-saved
// registers, saves the stack pointer, loads the other one, pops its registers and
// returns into it. A new fiber's stack is laid out so that this "return" enters
// tasklife_fiber_start with the fiber in %rbx.
extern "C" void tasklife_fiber_switch(void** save_sp, void* load_sp) noexcept;
extern "C" void tasklife_fiber_start() noexcept;
asm(R"(
  .text
  .globl tasklife_fiber_switch
  .type tasklife_fiber_switch,@function
tasklife_fiber_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tasklife_fiber_switch,.-tasklife_fiber_switch

  .globl tasklife_fiber_start
  .type tasklife_fiber_start,@function
tasklife_fiber_start:
  movq %rbx, %rdi
  call tasklife_fiber_trampoline
  ud2
  .size tasklife_fiber_start,.-tasklife_fiber_start
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

extern "C" void tasklife_fiber_trampoline(void* self) noexcept;

namespace tasklife::detail {

fiber::fiber() noexcept {
#ifdef TASKLIFE_FIBER_ASAN
  // The OS thread's stack, for ASan's switch annotations back to it.
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr = nullptr;
    std::size_t size = 0;
    pthread_attr_getstack(&attr, &addr, &size);
    asan_bottom_ = addr;
    asan_size_ = size;
    pthread_attr_destroy(&attr);
  }
#endif
#ifdef TASKLIFE_FIBER_TSAN
  tsan_fiber_ = __tsan_get_current_fiber();
#endif
#if !defined(__x86_64__)
  ucontext_ = new ucontext_t;
#endif
}

fiber::fiber(std::size_t stack_size) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  stack_size_ = (stack_size + page - 1) / page * page;
  stack_base_ = mmap(nullptr, stack_size_ + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack_base_ == MAP_FAILED) {
    throw std::bad_alloc();
  }
  mprotect(stack_base_, page, PROT_NONE);  // the guard page: an overflow faults
#ifdef TASKLIFE_FIBER_TSAN
  tsan_fiber_ = __tsan_create_fiber(0);
  owns_tsan_fiber_ = true;
#endif
#if !defined(__x86_64__)
  ucontext_ = new ucontext_t;
#endif
}

namespace {
// Relaxed: a statistic read to bound the explorer's growth; it orders nothing.
std::atomic<std::size_t> g_abandoned_stacks{0};
}  // namespace

std::size_t fiber::abandoned_stacks() noexcept {
  return g_abandoned_stacks.load(std::memory_order_relaxed);
}

void fiber::abandon() noexcept {
  if (stack_base_ == nullptr) {
    return;
  }
  g_abandoned_stacks.fetch_add(1, std::memory_order_relaxed);
#ifdef TASKLIFE_FIBER_ASAN
  // The frames still point at what they own: LeakSanitizer scans the stack (the
  // usable part: the guard page cannot be read).
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  __lsan_register_root_region(static_cast<char*>(stack_base_) + page, stack_size_);
#endif
  stack_base_ = nullptr;  // never unmapped: a few hundred KiB per abandoned execution
}

fiber::~fiber() {
  if (stack_base_ != nullptr) {
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    munmap(stack_base_, stack_size_ + page);
  }
#ifdef TASKLIFE_FIBER_TSAN
  if (owns_tsan_fiber_) {
    __tsan_destroy_fiber(tsan_fiber_);
  }
#endif
#if !defined(__x86_64__)
  delete static_cast<ucontext_t*>(ucontext_);
#endif
}

void fiber::start(entry_fn entry, void* arg) noexcept {
  entry_ = entry;
  arg_ = arg;
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  char* bottom = static_cast<char*>(stack_base_) + page;
  asan_bottom_ = bottom;
  asan_size_ = stack_size_;
#ifdef TASKLIFE_FIBER_ASAN
  // A reused stack: the frames of its last run never returned, so their poison
  // is still there.
  __asan_unpoison_memory_region(bottom, stack_size_);
#endif
#ifdef TASKLIFE_FIBER_TSAN
  // Likewise TSan's shadow stack of the fiber: a fresh fiber for a fresh run.
  if (owns_tsan_fiber_) {
    __tsan_destroy_fiber(tsan_fiber_);
    tsan_fiber_ = __tsan_create_fiber(0);
  }
#endif
#if defined(__x86_64__)
  // From the top (16-byte aligned) down: the "return address"
  // tasklife_fiber_start, then the frame tasklife_fiber_switch pops: rbp,
  // rbx (= this), r12 .. r15. Its `ret` leaves the stack pointer at the aligned
  // top, so the call in tasklife_fiber_start enters the trampoline as the ABI
  // wants (16-byte aligned before the call).
  auto top = reinterpret_cast<std::uintptr_t>(bottom + stack_size_);
  top &= ~std::uintptr_t{15};
  // The stack top is an address rounded down to 16 bytes inside this fiber's own
  // allocation; only the switch code reads through it.
  auto* slot = reinterpret_cast<void**>(top);  // NOLINT(performance-no-int-to-ptr)
  *--slot = reinterpret_cast<void*>(&tasklife_fiber_start);
  *--slot = nullptr;  // rbp
  *--slot = this;     // rbx
  *--slot = nullptr;  // r12
  *--slot = nullptr;  // r13
  *--slot = nullptr;  // r14
  *--slot = nullptr;  // r15
  sp_ = slot;
#else
  auto* uc = static_cast<ucontext_t*>(ucontext_);
  getcontext(uc);
  uc->uc_stack.ss_sp = bottom;
  uc->uc_stack.ss_size = stack_size_;
  uc->uc_link = nullptr;
  makecontext(uc, reinterpret_cast<void (*)()>(&tasklife_fiber_trampoline), 1, this);
#endif
}

// The switch itself, after ASan's start (each caller says what becomes of the
// fake stack of `from`) and before its finish.
void fiber::jump(fiber& from, fiber& to) noexcept {
#ifdef TASKLIFE_FIBER_TSAN
  __tsan_switch_to_fiber(to.tsan_fiber_, 0);
#endif
#if defined(__x86_64__)
  tasklife_fiber_switch(&from.sp_, to.sp_);
#else
  swapcontext(static_cast<ucontext_t*>(from.ucontext_), static_cast<ucontext_t*>(to.ucontext_));
#endif
}

void fiber::switch_to(fiber& from, fiber& to) noexcept {
#ifdef TASKLIFE_FIBER_ASAN
  __sanitizer_start_switch_fiber(&from.asan_fake_stack_, to.asan_bottom_, to.asan_size_);
#endif
  jump(from, to);
#ifdef TASKLIFE_FIBER_ASAN
  const void* came_from_bottom = nullptr;
  std::size_t came_from_size = 0;
  __sanitizer_finish_switch_fiber(from.asan_fake_stack_, &came_from_bottom, &came_from_size);
#endif
}

void fiber::finish_to(fiber& from, fiber& to) noexcept {
#ifdef TASKLIFE_FIBER_ASAN
  // nullptr: this fiber's fake stack is destroyed; it never resumes from here.
  __sanitizer_start_switch_fiber(nullptr, to.asan_bottom_, to.asan_size_);
  from.asan_fake_stack_ = nullptr;
#endif
  jump(from, to);
  std::abort();  // never resumed: a reused fiber starts again at its trampoline
}

void fiber::trampoline(fiber* self) noexcept {
  self->entry_(self->arg_);
  std::abort();  // an entry must switch away for good, never return
}

void swap_exception_state(exception_state& other) noexcept {
  // __cxa_get_globals() is the OS thread's record (declared by <cxxabi.h>, its
  // type left incomplete there): copied out and in as the struct it is.
  void* globals = abi::__cxa_get_globals();
  exception_state mine;
  std::memcpy(&mine, globals, sizeof mine);
  std::memcpy(globals, &other, sizeof other);
  other = mine;
}

}  // namespace tasklife::detail

// The first code a new fiber runs. It finishes ASan's switch before anything
// instrumented runs (ASan wants nothing of its own between a start and a finish
// of a switch, and the call below is to a function that never returns, before
// which the compiler would otherwise clean ASan's view of the stack).
#ifdef TASKLIFE_FIBER_ASAN
#define TASKLIFE_FIBER_NO_ASAN __attribute__((no_sanitize("address")))
#else
#define TASKLIFE_FIBER_NO_ASAN
#endif
// `used`: it is called only from the asm above, which link-time optimisation does
// not see into.
extern "C" TASKLIFE_FIBER_NO_ASAN __attribute__((used)) void tasklife_fiber_trampoline(
    void* self) noexcept {
#ifdef TASKLIFE_FIBER_ASAN
  const void* from_bottom = nullptr;
  std::size_t from_size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &from_bottom, &from_size);
#endif
  tasklife::detail::fiber::trampoline(static_cast<tasklife::detail::fiber*>(self));
}
