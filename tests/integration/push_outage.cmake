# A push service that fails for minutes, answers slower than the stream deadline, or fails past
# push.expiry_s: nothing lost, nothing shown twice, expiry counted. The sanitizer build runs the
# same shapes at a tenth of the times.
if(ENS_TESTS AND NOT ENS_FUZZ)
  set(_short "")
  if(ENS_SANITIZE)
    set(_short "--short")
  endif()
  foreach(_case outage slow expiry)
    add_test(NAME push_${_case}_test
             COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/push_outage_test.py
                     $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/push-work ${_case} ${_short})
    set_tests_properties(push_${_case}_test PROPERTIES TIMEOUT 420 LABELS integration
                         ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
  endforeach()
endif()
