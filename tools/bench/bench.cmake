# tools/bench: benchmark drivers for tools/bench/run (see docs/benchmarks.md).
# apns_bench pushes N alerts through protocols/apns toward an HTTP/2 sink.
if(NOT ENS_FUZZ)
  add_executable(apns_bench tools/bench/apns_bench.c)
  target_compile_options(apns_bench PRIVATE ${ENS_WARNINGS} -Wno-missing-prototypes)
  target_link_libraries(apns_bench PRIVATE ens_apns)
endif()
