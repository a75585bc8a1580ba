# Descriptor limits: ensd under prlimit-style RLIMIT_NOFILE, flooded with connections.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME fd_flood_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/fd_flood_test.py
                   $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/fd-flood-work)
  set_tests_properties(fd_flood_test PROPERTIES TIMEOUT 90 LABELS integration SKIP_RETURN_CODE 77
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()
