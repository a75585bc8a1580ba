ens_module(ens_enroll
  SOURCES protocols/enroll.c
  LIBS ens_base PkgConfig::CJSON)

ens_unit_test(enroll_test SOURCES tests/unit/protocols/enroll_test.c LIBS ens_enroll)
ens_fuzz_target(fuzz_enroll SOURCES tests/fuzz/fuzz_enroll.c LIBS ens_enroll)
