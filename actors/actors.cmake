ens_module(ens_actors
  SOURCES actors/memo.c actors/health.c actors/reply.c actors/ids.c actors/keys.c actors/admin_keys.c actors/push.c
          actors/ews.c actors/user.c actors/user_push.c actors/user_subscribe.c
          actors/user_callback.c actors/user_devices.c actors/http_api.c actors/admin_api.c
  LIBS ens_rt ens_ratelimit ens_http ens_apns ens_fcm ens_enroll ens_soap ens_jose ens_store ens_config ens_base
       ens_boringssl PkgConfig::CJSON)

if(NOT ENS_FUZZ)
  add_executable(ensd actors/ensd.c)
  target_compile_options(ensd PRIVATE ${ENS_WARNINGS})
  target_link_libraries(ensd PRIVATE ens_actors)
endif()

# ensd_test: ensd with a clock tests can move forward (SIGUSR2, runtime/clock.h), so that
# deadlines of minutes pass in milliseconds. Built with the tests only; never installed.
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_executable(ensd_test actors/ensd.c)
  target_compile_definitions(ensd_test PRIVATE ENS_TEST_CLOCK)
  target_compile_options(ensd_test PRIVATE ${ENS_WARNINGS})
  target_link_libraries(ensd_test PRIVATE ens_actors)
endif()

ens_unit_test(memo_test SOURCES tests/unit/actors/memo_test.c LIBS ens_actors TIMEOUT 30)
