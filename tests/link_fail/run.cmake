# Builds CONTROL (must link; CONTROL_EXE must then run) and MISMATCH (must fail to
# link with output matching EXPECT) in BUILD_DIR.
foreach(var BUILD_DIR CONTROL CONTROL_EXE MISMATCH EXPECT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: ${var} not set")
  endif()
endforeach()

execute_process(COMMAND ${CMAKE_COMMAND} --build "${BUILD_DIR}" --target ${CONTROL}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the control (same tier) did not build:\n${out}")
endif()
execute_process(COMMAND "${CONTROL_EXE}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the control (same tier) failed to run (${rc}):\n${out}")
endif()
message(STATUS "control: ${out}")

execute_process(COMMAND ${CMAKE_COMMAND} --build "${BUILD_DIR}" --target ${MISMATCH}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "code compiled for another tier linked against tasklife::tasklife")
endif()
if(NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "the mismatch failed to build, but not with the expected link error "
                      "(${EXPECT}):\n${out}")
endif()
string(REGEX MATCH "[^\n]*${EXPECT}[^\n]*" line "${out}")
message(STATUS "mismatch refused as expected: ${line}")
