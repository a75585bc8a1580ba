# End-to-end test: a real redis-server, the Exchange and APNs simulators and ensd.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME e2e_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/e2e_test.py
                   $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/e2e-work $<TARGET_FILE:ensctl>)
  set_tests_properties(e2e_test PROPERTIES TIMEOUT 240 LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()
include(tests/integration/keys.cmake)
include(tests/integration/fd_flood.cmake)
include(tests/integration/redis_restart.cmake)
include(tests/integration/push_outage.cmake)

# Enrollment binding, rate limits, replays and start-up order, tried as an attacker would.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME enroll_guard_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/enroll_guard_test.py
                   $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/guard-work)
  set_tests_properties(enroll_guard_test PROPERTIES TIMEOUT 300 LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()

# Passivation and the health index: a mailbox out of memory is still watched; a silently
# dropped subscription is re-created by ensd alone, or its device asked to check in.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME health_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/health_test.py
                   $<TARGET_FILE:ensd_test> ${CMAKE_BINARY_DIR}/health-work)
  set_tests_properties(health_test PROPERTIES TIMEOUT 180 LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()
