# Key rotation end to end: a real redis-server, the simulators, ensd and ensctl.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME keys_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/keys_test.py
                   $<TARGET_FILE:ensd> $<TARGET_FILE:ensctl> ${CMAKE_BINARY_DIR}/keys-work)
  set_tests_properties(keys_test PROPERTIES TIMEOUT 300 LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
endif()
