# persistence/: the Redis store (connection, mailbox domain, admin state).
ens_module(ens_store
  SOURCES persistence/store_redis.c persistence/store_uv.c persistence/store_user.c
          persistence/store_health.c
          persistence/store_admin.c
  LIBS ens_base PkgConfig::UV PkgConfig::HIREDIS PkgConfig::CJSON ens_boringssl m)

# A private redis-server for tests of any module.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_library(ens_test_redis STATIC tests/support/redis_fixture.c)
  target_compile_options(ens_test_redis PRIVATE ${ENS_WARNINGS})
  target_link_libraries(ens_test_redis PUBLIC PkgConfig::HIREDIS)
endif()

ens_unit_test(store_test SOURCES tests/unit/persistence/store_test.c
  LIBS ens_store ens_test_redis TIMEOUT 60)
ens_unit_test(store_redis_test SOURCES tests/unit/persistence/store_redis_test.c
  LIBS ens_store ens_test_redis TIMEOUT 60)
ens_unit_test(store_codec_test SOURCES tests/unit/persistence/store_codec_test.c
  LIBS ens_store TIMEOUT 20)

ens_fuzz_target(fuzz_store_device SOURCES tests/fuzz/fuzz_store_device.c LIBS ens_store)
