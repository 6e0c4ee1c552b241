# One consumer case: builds tests/consumer/project against tasklife one way and runs
# every program it builds.
#
#   cmake -DMODE=<install|subdirectory|fetchcontent> -DSOURCE_DIR=<tests/consumer/project>
#         -DWORK_DIR=<scratch> -DGENERATOR=<gen> -DCXX_COMPILER=<c++>
#         [-DBUILD_DIR=<tasklife build to install>]            (install)
#         [-DTASKLIFE_SOURCE_DIR=<tasklife source tree>]      (subdirectory, fetchcontent)
#         -P run.cmake
#
# install: `cmake --install` of BUILD_DIR into a private prefix, then the project
# through find_package, then the same programs through pkg-config (each tier, the
# kit), then the tier check: code compiled with tasklife-fast's flags and linked
# against the checked library must fail to link, naming its tier.
# fetchcontent: clones TASKLIFE_SOURCE_DIR's repository at its HEAD commit (what is
# committed is what is fetched).
foreach(var MODE SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: ${var} not set")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer step failed (${rc}): ${ARGN}")
  endif()
endfunction()

set(configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Debug
                   -DCONSUMER_MODE=${MODE})
if(MODE STREQUAL "install")
  if(NOT DEFINED BUILD_DIR)
    message(FATAL_ERROR "run.cmake: install needs BUILD_DIR")
  endif()
  set(prefix "${WORK_DIR}/prefix")
  step(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
  list(APPEND configure_args -DCMAKE_PREFIX_PATH=${prefix})
elseif(MODE STREQUAL "subdirectory")
  # Built from source inside the consumer: both tiers and the kit, warning-free
  # (-Werror on tasklife's own targets) with this compiler.
  list(APPEND configure_args -DTASKLIFE_SOURCE_DIR=${TASKLIFE_SOURCE_DIR} -DTASKLIFE_WERROR=ON)
elseif(MODE STREQUAL "fetchcontent")
  execute_process(COMMAND git -C "${TASKLIFE_SOURCE_DIR}" rev-parse HEAD
    OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "fetchcontent needs a git checkout of tasklife at ${TASKLIFE_SOURCE_DIR}")
  endif()
  list(APPEND configure_args -DTASKLIFE_GIT_REPOSITORY=${TASKLIFE_SOURCE_DIR}
                             -DTASKLIFE_GIT_TAG=${head} -DTASKLIFE_WERROR=ON)
else()
  message(FATAL_ERROR "run.cmake: MODE must be install, subdirectory or fetchcontent")
endif()

step(${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}" ${configure_args})
step(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
foreach(program consumer_checked consumer_fast consumer_testing_checked consumer_testing_fast
                consumer_fmt)
  step("${WORK_DIR}/build/${program}")
endforeach()

if(NOT MODE STREQUAL "install")
  message(STATUS "consumer (${MODE}, ${CXX_COMPILER}): every program ran")
  return()
endif()

# ---- pkg-config, from the same install ----
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${prefix}/lib/pkgconfig:$ENV{PKG_CONFIG_PATH}")
# flags(<out> <modules>...): pkg-config --static --cflags --libs, as a list.
function(flags out)
  execute_process(COMMAND ${PKG_CONFIG} --static --cflags --libs ${ARGN}
    OUTPUT_VARIABLE f OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config ${ARGN} failed")
  endif()
  separate_arguments(f UNIX_COMMAND "${f}")
  set(${out} ${f} PARENT_SCOPE)
endfunction()
set(pc "${WORK_DIR}/pkg-config")
file(MAKE_DIRECTORY "${pc}")
flags(checked tasklife)
flags(fast tasklife-fast)
step(${CXX_COMPILER} -std=c++20 -DCONSUMER_EXPECT_TIER="full" "${SOURCE_DIR}/main.cpp" ${checked}
     -Wl,-rpath,${prefix}/lib -o "${pc}/consumer_checked")
step("${pc}/consumer_checked")
step(${CXX_COMPILER} -std=c++20 -DCONSUMER_EXPECT_TIER="none" "${SOURCE_DIR}/main.cpp" ${fast}
     -Wl,-rpath,${prefix}/lib -o "${pc}/consumer_fast")
step("${pc}/consumer_fast")
flags(kit tasklife-testing-fast gtest_main)
step(${CXX_COMPILER} -std=c++20 "${SOURCE_DIR}/testing_test.cpp" ${kit}
     -Wl,-rpath,${prefix}/lib -o "${pc}/consumer_testing_fast")
step("${pc}/consumer_testing_fast")
flags(with_fmt tasklife fmt)
step(${CXX_COMPILER} -std=c++20 "${SOURCE_DIR}/fmt_main.cpp" ${with_fmt} -Wl,-rpath,${prefix}/lib
     -o "${pc}/consumer_fmt")
step("${pc}/consumer_fmt")

# ---- mixing tiers: compiled with tasklife-fast's flags, linked with -ltasklife ----
execute_process(COMMAND ${PKG_CONFIG} --cflags tasklife-fast
  OUTPUT_VARIABLE fast_cflags OUTPUT_STRIP_TRAILING_WHITESPACE)
execute_process(COMMAND ${PKG_CONFIG} --static --libs tasklife
  OUTPUT_VARIABLE checked_libs OUTPUT_STRIP_TRAILING_WHITESPACE)
separate_arguments(fast_cflags UNIX_COMMAND "${fast_cflags}")
separate_arguments(checked_libs UNIX_COMMAND "${checked_libs}")
execute_process(
  COMMAND ${CXX_COMPILER} -std=c++20 -DCONSUMER_EXPECT_TIER="none" "${SOURCE_DIR}/main.cpp"
          ${fast_cflags} ${checked_libs} -o "${pc}/consumer_mixed"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "code compiled for tasklife-fast linked against the checked libtasklife")
endif()
set(expect "undefined (reference|symbol).*tasklife_tier_mismatch__compiled_for_checks_none_verifier_on")
if(NOT out MATCHES "${expect}")
  message(FATAL_ERROR "mixing tiers failed, but not with the expected link error:\n${out}")
endif()
message(STATUS "consumer (install, ${CXX_COMPILER}): find_package and pkg-config programs ran; "
               "mixed tiers refused at link time")
