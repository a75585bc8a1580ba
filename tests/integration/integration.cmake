# Integration tests: a real redis-server, the Exchange, APNs and FCM simulators and ensd, on
# loopback (cmake/ens.cmake: ens_integration_test).

# End to end: enrollment over HTTP/1.1 and HTTP/2, the exact pushes, a restart, every status code.
ens_integration_test(e2e_test SCRIPT e2e_test.py TIMEOUT 240
  ARGS $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/e2e-work $<TARGET_FILE:ensctl>)

# Key rotation end to end: ensd and ensctl, two ensd on one Redis.
ens_integration_test(keys_test SCRIPT keys_test.py TIMEOUT 300
  ARGS $<TARGET_FILE:ensd> $<TARGET_FILE:ensctl> ${CMAKE_BINARY_DIR}/keys-work)

# Descriptor limits: ensd under prlimit-style RLIMIT_NOFILE, flooded with connections.
ens_integration_test(fd_flood_test SCRIPT fd_flood_test.py TIMEOUT 90 SKIP_RETURN_CODE 77
  ARGS $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/fd-flood-work)

# Redis restarted ten times under load: every scheduler recovers, /ready is honest, no mail lost.
ens_integration_test(redis_restart_test SCRIPT redis_restart_test.py TIMEOUT 180
  ARGS $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/redis-restart-work)

# A push service that fails for minutes, answers slower than the stream deadline, or fails past
# push.expiry_s: nothing lost, nothing shown twice, expiry counted. The sanitizer build runs the
# same shapes at a tenth of the times.
if(ENS_SANITIZE)
  set(_push_short "--short")
endif()
foreach(_case outage slow expiry)
  ens_integration_test(push_${_case}_test SCRIPT push_outage_test.py TIMEOUT 420
    ARGS $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/push-work ${_case} ${_push_short})
endforeach()

# Enrollment binding, rate limits, replays and start-up order, tried as an attacker would.
ens_integration_test(enroll_guard_test SCRIPT enroll_guard_test.py TIMEOUT 300
  ARGS $<TARGET_FILE:ensd> ${CMAKE_BINARY_DIR}/guard-work)

# Passivation and the health index: a mailbox out of memory is still watched; a silently
# dropped subscription is re-created by ensd alone, or its device asked to check in.
ens_integration_test(health_test SCRIPT health_test.py TIMEOUT 180
  ARGS $<TARGET_FILE:ensd_test> ${CMAKE_BINARY_DIR}/health-work)
