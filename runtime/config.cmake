# runtime/config: the server's configuration (JSON file + ENS_* environment).
ens_module(ens_config
  SOURCES runtime/config.c
  LIBS ens_base PkgConfig::CJSON)

ens_unit_test(config_test SOURCES tests/unit/runtime/config_test.c LIBS ens_base PkgConfig::CJSON
  TIMEOUT 30)
