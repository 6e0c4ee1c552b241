# tasklife_add_library_variant(<name> CHECK_LEVEL <0|1|2> [DEFINITIONS <defs>...])
#
# The library's own sources (tasklife_sources) built as a static library with
# another check level and extra private definitions, for tests that need the
# library compiled differently: the unchecked fast paths, the deliberately broken
# grace period of the sanitizer self-test. Everything else is the library's.
function(tasklife_add_library_variant name)
  cmake_parse_arguments(arg "" "CHECK_LEVEL" "DEFINITIONS" ${ARGN})
  add_library(${name} STATIC ${tasklife_sources})
  target_compile_definitions(${name}
    PUBLIC TASKLIFE_CHECK_LEVEL=${arg_CHECK_LEVEL}
           TASKLIFE_VERIFIER=$<BOOL:${TASKLIFE_VERIFIER}>
           TASKLIFE_STATIC_DEFINE
    PRIVATE TASKLIFE_URCU_INLINE=$<BOOL:${TASKLIFE_URCU_INLINE}>
            $<$<NOT:$<EQUAL:${arg_CHECK_LEVEL},0>>:DEBUG_RCU>
            ${arg_DEFINITIONS})
  target_include_directories(${name} PUBLIC
    "${PROJECT_SOURCE_DIR}/include" "${PROJECT_BINARY_DIR}/include")
  target_compile_features(${name} PUBLIC cxx_std_20)
  target_link_libraries(${name} PUBLIC fmt::fmt Threads::Threads PRIVATE PkgConfig::TASKLIFE_URCU)
  tasklife_set_warnings(${name})
endfunction()
