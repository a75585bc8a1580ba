# HTTP/2 client (nghttp2, memory-driven) and the APNs client on top of it.
ens_module(ens_h2
  SOURCES protocols/h2_client.c
  LIBS ens_net ens_base PkgConfig::NGHTTP2 PkgConfig::UV)

ens_module(ens_apns
  SOURCES protocols/apns.c protocols/apns_jwt.c
  LIBS ens_h2 ens_net ens_json_text ens_base ens_boringssl PkgConfig::CJSON)

ens_unit_test(apns_test SOURCES tests/unit/protocols/apns_test.c LIBS ens_apns TIMEOUT 30)
ens_unit_test(h2_client_test SOURCES tests/unit/protocols/h2_client_test.c LIBS ens_h2 TIMEOUT 30)

ens_fuzz_target(fuzz_h2_client SOURCES tests/fuzz/fuzz_h2_client.c LIBS ens_h2)
ens_fuzz_target(fuzz_apns_response SOURCES tests/fuzz/fuzz_apns_response.c LIBS ens_apns)

# Live test: the C driver pushes through apns_client over TLS + h2 to
# tools/apns_sim.py, which the Python script starts on free ports.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_executable(apns_live_driver tests/integration/apns_live_driver.c)
  target_compile_options(apns_live_driver PRIVATE ${ENS_WARNINGS} -Wno-missing-prototypes)
  target_link_libraries(apns_live_driver PRIVATE ens_apns)
  add_test(NAME apns_live
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/apns_live.py
                   $<TARGET_FILE:apns_live_driver>)
  set_tests_properties(apns_live PROPERTIES LABELS integration TIMEOUT 60
                       ENVIRONMENT "ENS_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data;ENS_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endif()
