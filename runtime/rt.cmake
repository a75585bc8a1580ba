ens_module(ens_rt
  SOURCES runtime/rt.c runtime/metrics.c
  LIBS ens_base PkgConfig::UV)

ens_unit_test(rt_test SOURCES tests/unit/runtime/rt_test.c LIBS ens_rt TIMEOUT 30)
