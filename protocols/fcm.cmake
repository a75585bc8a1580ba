# FCM HTTP v1: payloads, service-account OAuth2 (HTTP/1.1 token endpoint) and
# the HTTP/2 client (push.md section 2).
ens_module(ens_fcm
  SOURCES protocols/fcm.c
  LIBS ens_h2 ens_http ens_net ens_json_text ens_base ens_boringssl PkgConfig::CJSON)

ens_unit_test(fcm_test SOURCES tests/unit/protocols/fcm_test.c LIBS ens_fcm TIMEOUT 30)

ens_fuzz_target(fuzz_fcm_response SOURCES tests/fuzz/fuzz_fcm_response.c LIBS ens_fcm)

# Live test: the C driver pushes through fcm_client over TLS + h2 (and fetches
# its token over TLS + HTTP/1.1) from tools/fcm_sim.py on free ports.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_executable(fcm_live_driver tests/integration/fcm_live_driver.c)
  target_compile_options(fcm_live_driver PRIVATE ${ENS_WARNINGS} -Wno-missing-prototypes)
  target_link_libraries(fcm_live_driver PRIVATE ens_fcm)
  add_test(NAME fcm_live
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/fcm_live.py
                   $<TARGET_FILE:fcm_live_driver>)
  set_tests_properties(fcm_live PROPERTIES LABELS integration TIMEOUT 90
                       ENVIRONMENT "ENS_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data;ENS_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endif()
