# tools/ensctl: the admin command-line tool, and its integration test against a
# fake admin server (tests/integration/fake_admin.py).
if(NOT ENS_FUZZ)
  add_executable(ensctl tools/ensctl.c tools/ensctl_http.c)
  target_compile_options(ensctl PRIVATE ${ENS_WARNINGS})
  target_link_libraries(ensctl PRIVATE ens_config ens_base ens_llhttp PkgConfig::CJSON)
endif()

if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME ensctl_test
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/ensctl_test.py
                   $<TARGET_FILE:ensctl>)
  set_tests_properties(ensctl_test PROPERTIES LABELS integration TIMEOUT 60)
endif()
