# Redis restarted ten times under load: every scheduler recovers, /ready is honest, no mail lost.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME redis_restart_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/redis_restart_test.py
                   $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/redis-restart-work)
  set_tests_properties(redis_restart_test PROPERTIES TIMEOUT 180 LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()
