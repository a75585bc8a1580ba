ens_module(ens_actors
  SOURCES actors/reply.c actors/ids.c actors/keys.c actors/admin_keys.c actors/push.c
          actors/ews.c actors/user.c actors/http_api.c actors/admin_api.c
  LIBS ens_rt ens_ratelimit ens_http ens_apns ens_fcm ens_enroll ens_soap ens_jose ens_store ens_config ens_base
       ens_boringssl PkgConfig::CJSON)

if(NOT ENS_FUZZ)
  add_executable(ensd actors/ensd.c)
  target_compile_options(ensd PRIVATE ${ENS_WARNINGS})
  target_link_libraries(ensd PRIVATE ens_actors)
endif()
