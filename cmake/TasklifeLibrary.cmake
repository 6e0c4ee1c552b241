# How tasklife's libraries are made: one function for every copy of the library's
# sources (the installed tiers and the test-only variants), so that they differ only
# in what their arguments say.
#
# A tier is the check level the library is compiled with (TASKLIFE_CHECKS: none,
# contracts, full) plus the options that change inline code in the headers
# (TASKLIFE_VERIFIER). Each tier has its own generated tasklife/config.hpp, in its own
# include directory; that header makes every translation unit reference a symbol only
# a library of the same tier defines, so mixing tiers fails at link time.

# tasklife_tier_name(<out-var> <check-level>): none, contracts or full.
function(tasklife_tier_name out level)
  if(level EQUAL 0)
    set(${out} none PARENT_SCOPE)
  elseif(level EQUAL 1)
    set(${out} contracts PARENT_SCOPE)
  elseif(level EQUAL 2)
    set(${out} full PARENT_SCOPE)
  else()
    message(FATAL_ERROR "tasklife: no check level ${level}")
  endif()
endfunction()

# tasklife_configure_tier(<check-level>): generates <build>/tiers/<tier>/tasklife/config.hpp
# (once) and sets tasklife_tier_dir_<level> (its include directory) and
# tasklife_tier_symbol_<level> (the link-check symbol) in the caller's scope.
function(tasklife_configure_tier level)
  tasklife_tier_name(tier ${level})
  if(TASKLIFE_VERIFIER)
    set(TASKLIFE_CONFIG_VERIFIER 1)
    set(verifier on)
  else()
    set(TASKLIFE_CONFIG_VERIFIER 0)
    set(verifier off)
  endif()
  set(TASKLIFE_CONFIG_CHECK_LEVEL ${level})
  set(TASKLIFE_CONFIG_TIER ${tier})
  set(TASKLIFE_TIER_LINK_SYMBOL "tasklife_tier_mismatch__compiled_for_checks_${tier}_verifier_${verifier}")
  set(dir "${PROJECT_BINARY_DIR}/tiers/${tier}")
  configure_file("${PROJECT_SOURCE_DIR}/cmake/config.hpp.in" "${dir}/tasklife/config.hpp" @ONLY)
  set(tasklife_tier_dir_${level} "${dir}" PARENT_SCOPE)
  set(tasklife_tier_symbol_${level} "${TASKLIFE_TIER_LINK_SYMBOL}" PARENT_SCOPE)
endfunction()

# Link-time optimisation of a library that is installed or linked by others: GCC
# writes fat objects (machine code beside the GIMPLE bytecode), so that any linker
# and any compiler can use the archive while GCC builds still optimise across it;
# other compilers' LTO objects are bitcode only, so their libraries are built
# without it (the project's own executables keep it).
function(tasklife_portable_ipo target)
  get_target_property(ipo ${target} INTERPROCEDURAL_OPTIMIZATION)
  if(NOT ipo)
    return()
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(${target} PRIVATE -ffat-lto-objects)
  else()
    set_target_properties(${target} PROPERTIES INTERPROCEDURAL_OPTIMIZATION OFF)
  endif()
endfunction()

# tasklife_add_library(<target> CHECK_LEVEL <0|1|2> [STATIC] [DEFINITIONS <defs>...])
# The library's sources (tasklife_sources) at one check level. STATIC forces a
# static library (test-only variants); otherwise BUILD_SHARED_LIBS decides.
function(tasklife_add_library name)
  cmake_parse_arguments(arg "STATIC" "CHECK_LEVEL" "DEFINITIONS" ${ARGN})
  tasklife_configure_tier(${arg_CHECK_LEVEL})
  tasklife_tier_name(tier ${arg_CHECK_LEVEL})
  if(arg_STATIC)
    add_library(${name} STATIC ${tasklife_sources})
  else()
    add_library(${name} ${tasklife_sources})
  endif()
  target_compile_features(${name} PUBLIC cxx_std_20)
  target_include_directories(${name}
    PUBLIC
      "$<BUILD_INTERFACE:${tasklife_tier_dir_${arg_CHECK_LEVEL}}>"
      "$<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>"
      "$<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>"
      "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/tasklife-${tier}>"
      "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
  get_target_property(type ${name} TYPE)
  target_compile_definitions(${name}
    PUBLIC $<$<STREQUAL:${type},STATIC_LIBRARY>:TASKLIFE_STATIC_DEFINE>
    PRIVATE TASKLIFE_URCU_INLINE=$<BOOL:${TASKLIFE_URCU_INLINE}>
            $<$<NOT:$<EQUAL:${arg_CHECK_LEVEL},0>>:DEBUG_RCU>
            ${arg_DEFINITIONS})
  if(type STREQUAL "SHARED_LIBRARY")
    # Inlined liburcu code in a shared object would reach liburcu's TLS through
    # __tls_get_addr (5x slower read side); liburcu-memb is always loaded at start-up.
    set_source_files_properties("${PROJECT_SOURCE_DIR}/src/rcu.cpp" TARGET_DIRECTORY ${name}
      PROPERTIES COMPILE_OPTIONS "-ftls-model=initial-exec")
  endif()
  # fmt formats the library's messages; the headers do not use it (tasklife/fmt.hpp,
  # the opt-in formatter, is the consumer's own use of fmt).
  target_link_libraries(${name}
    PUBLIC Threads::Threads
    PRIVATE fmt::fmt PkgConfig::TASKLIFE_URCU)
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    # Every copy uses the one generated export.hpp (the macros of tasklife).
    DEFINE_SYMBOL tasklife_EXPORTS
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR})
  tasklife_portable_ipo(${name})
  tasklife_set_warnings(${name})
endfunction()

# tasklife_add_library_variant(<name> CHECK_LEVEL <0|1|2> [DEFINITIONS <defs>...])
# A static, test-only copy of the library built differently: the deliberately
# broken grace period of the sanitizer self-test, a checked library for the
# explorer's benchmarks in a build whose tasklife::tasklife is unchecked.
function(tasklife_add_library_variant name)
  tasklife_add_library(${name} STATIC ${ARGN})
endfunction()

# tasklife_add_testing(<target> <library>): the GoogleTest kit over one tier.
function(tasklife_add_testing name library)
  add_library(${name} "${PROJECT_SOURCE_DIR}/src/testing/testing.cpp")
  target_link_libraries(${name} PUBLIC ${library} GTest::gtest GTest::gmock PRIVATE fmt::fmt)
  set_target_properties(${name} PROPERTIES
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR})
  tasklife_portable_ipo(${name})
  tasklife_set_warnings(${name})
endfunction()
