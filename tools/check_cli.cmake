# One command line of the tasklife command and what it must do: its exit status
# (RC), a pattern its stderr must match (ERR, optional), one its stdout must match
# (OUT, optional), and with QUIET_STDOUT nothing on stdout at all. ARGS separates
# the arguments with '|'; SH_ARGS instead is a shell's argument text (CMake lists
# cannot carry an empty argument).
string(REPLACE "|" ";" args "${ARGS}")
if(DEFINED DIR)
  set(wd WORKING_DIRECTORY "${DIR}")
endif()
if(DEFINED SH_ARGS)
  set(args -c "\"$0\" ${SH_ARGS}" "${CMD}")
  set(CMD sh)
endif()
execute_process(COMMAND "${CMD}" ${args} ${wd} TIMEOUT 120
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc STREQUAL "${RC}")
  message(FATAL_ERROR "exit status ${rc}, expected ${RC}\nstdout:\n${out}\nstderr:\n${err}")
endif()
if(DEFINED ERR)
  string(STRIP "${err}" stripped)
  string(FIND "${stripped}" "\n" newline)
  if(NOT stripped MATCHES "${ERR}" OR NOT newline EQUAL -1)
    message(FATAL_ERROR "expected one line on stderr matching '${ERR}', got:\n${err}")
  endif()
endif()
if(DEFINED OUT AND NOT out MATCHES "${OUT}")
  message(FATAL_ERROR "expected stdout matching '${OUT}', got:\n${out}")
endif()
if(QUIET_STDOUT AND NOT out STREQUAL "")
  message(FATAL_ERROR "expected nothing on stdout, got:\n${out}")
endif()
