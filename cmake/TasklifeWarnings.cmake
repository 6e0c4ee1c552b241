# Strict warnings for tasklife's own targets (never forced on consumers).
function(tasklife_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wold-style-cast
    -Wnon-virtual-dtor -Woverloaded-virtual -Wcast-align -Wnull-dereference -Wimplicit-fallthrough
    # clang proves the lock annotations of thread_safety.hpp.
    $<$<CXX_COMPILER_ID:Clang>:-Wthread-safety>
    $<$<BOOL:${TASKLIFE_WERROR}>:-Werror>)
endfunction()
