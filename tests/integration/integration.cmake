# End-to-end test: a real redis-server, the Exchange and APNs simulators and ensd.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME e2e_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/e2e_test.py
                   $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/e2e-work $<TARGET_FILE:ensctl>)
  set_tests_properties(e2e_test PROPERTIES TIMEOUT 240 LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()
include(tests/integration/keys.cmake)
