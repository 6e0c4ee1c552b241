# Strict warnings for tasklife's own targets (never forced on consumers).
function(tasklife_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wold-style-cast
    -Wnon-virtual-dtor -Woverloaded-virtual -Wcast-align -Wnull-dereference -Wimplicit-fallthrough
    $<$<BOOL:${TASKLIFE_WERROR}>:-Werror>)
endfunction()
