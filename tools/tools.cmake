# Source checks that run with the tests (STYLE.md 19).
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME checksrc COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/checksrc ${PROJECT_SOURCE_DIR})
  set_tests_properties(checksrc PROPERTIES LABELS lint TIMEOUT 60)
endif()
