# --out where a directory cannot be made (a regular file is in the way): exit 2 (an
# output that cannot be written), a reason on stderr for each output, and no "wrote"
# line for any of them.
file(WRITE "${WORK}/in-the-way" "a file, not a directory\n")
execute_process(COMMAND "${CMD}" run pid_lookup_race --quiet --out "${WORK}/in-the-way/out"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "an unwritable --out exited ${rc}, not 2 (1 is a failed expectation)")
endif()
if(out MATCHES "wrote ")
  message(FATAL_ERROR "claims to have written what it could not:\n${out}")
endif()
foreach(what "directory" "text timeline" "JSON trace" "SVG timeline" "ftrace text")
  if(NOT err MATCHES "${what}")
    message(FATAL_ERROR "no reason given for the ${what} on stderr, got:\n${err}")
  endif()
endforeach()
