# EWS SOAP codec (libxml2) and its tests. The Exchange simulator lives in
# tools/exchange_sim.py and is exercised by the integration test below.
ens_module(ens_soap
  SOURCES protocols/soap_xml.c protocols/soap_ews.c protocols/xml_prescan.c
  LIBS ens_base PkgConfig::XML2 Threads::Threads)

ens_unit_test(soap_test SOURCES tests/unit/protocols/soap_test.c LIBS ens_soap TIMEOUT 30)

ens_fuzz_target(fuzz_soap_notification SOURCES tests/fuzz/fuzz_soap_notification.c LIBS ens_soap)
ens_fuzz_target(fuzz_soap_response SOURCES tests/fuzz/fuzz_soap_response.c LIBS ens_soap)
ens_fuzz_target(fuzz_xml_prescan SOURCES tests/fuzz/fuzz_xml_prescan.c LIBS ens_soap)
ens_unit_test(xml_prescan_test SOURCES tests/unit/protocols/xml_prescan_test.c LIBS ens_soap
              TIMEOUT 30)

if(ENS_TESTS AND NOT ENS_FUZZ)
  find_program(ENS_SYSTEM_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  add_test(NAME exchange_sim_test
           COMMAND ${ENS_SYSTEM_PYTHON3} ${PROJECT_SOURCE_DIR}/tests/integration/exchange_sim_test.py
                   --sim ${PROJECT_SOURCE_DIR}/tools/exchange_sim.py
                   --pki ${PROJECT_SOURCE_DIR}/tests/data/pki)
  set_tests_properties(exchange_sim_test PROPERTIES LABELS integration TIMEOUT 60)
endif()
