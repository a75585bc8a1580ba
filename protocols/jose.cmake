# JOSE (JWK, JWE) and split-knowledge credential sealing.
ens_module(ens_jose
  SOURCES protocols/jwk.c protocols/jwe.c protocols/seal.c
  LIBS ens_base ens_boringssl PkgConfig::CJSON)

ens_unit_test(jwe_test SOURCES tests/unit/protocols/jwe_test.c LIBS ens_jose TIMEOUT 30)
ens_unit_test(seal_test SOURCES tests/unit/protocols/seal_test.c LIBS ens_jose TIMEOUT 30)

ens_fuzz_target(fuzz_jwe SOURCES tests/fuzz/fuzz_jwe.c LIBS ens_jose)
ens_fuzz_target(fuzz_seal_token SOURCES tests/fuzz/fuzz_seal_token.c LIBS ens_jose)
if(ENS_FUZZ)
  # The JWE fuzzer decrypts with the committed test keys.
  target_compile_definitions(fuzz_jwe PRIVATE ENS_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
endif()
