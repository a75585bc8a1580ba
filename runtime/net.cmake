# The network runtime: TCP and TLS streams, listeners, deadline-bound connects.
ens_module(ens_net
  SOURCES runtime/stream_tcp.c runtime/stream_tls.c runtime/net.c
  LIBS ens_base PkgConfig::UV ens_boringssl)

ens_unit_test(net_test SOURCES tests/unit/runtime/net_test.c LIBS ens_net TIMEOUT 30)
