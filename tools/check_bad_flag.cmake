# A bad flag: a non-zero exit and one line on stderr saying why.
execute_process(COMMAND "${CMD}" run pid_lookup_race --bogus
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "a bad flag exited 0")
endif()
string(STRIP "${err}" err)
string(FIND "${err}" "\n" newline)
if(NOT newline EQUAL -1 OR err STREQUAL "" OR NOT err MATCHES "bogus")
  message(FATAL_ERROR "expected one line naming the flag on stderr, got:\n${err}")
endif()
