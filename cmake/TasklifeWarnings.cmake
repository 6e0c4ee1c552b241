# Strict warnings for tasklife's own targets (never forced on consumers).
function(tasklife_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wold-style-cast
    -Wnon-virtual-dtor -Woverloaded-virtual -Wcast-align -Wnull-dereference -Wimplicit-fallthrough
    # clang proves the lock annotations of thread_safety.hpp.
    $<$<CXX_COMPILER_ID:Clang>:-Wthread-safety>
    # GCC 12 at -O3 reports atomic loads of inlined refcount loops as writes into
    # "a region of size 0" (a known false positive of -Wstringop-overflow).
    $<$<CXX_COMPILER_ID:GNU>:-Wno-stringop-overflow>
    $<$<BOOL:${TASKLIFE_WERROR}>:-Werror>)
endfunction()
