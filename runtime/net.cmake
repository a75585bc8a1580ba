# The network runtime: TCP and TLS streams, listeners, deadline-bound connects.
ens_module(ens_net
  SOURCES runtime/stream_tcp.c runtime/stream_tls.c runtime/net.c runtime/listener.c
          runtime/fdlimit.c
  LIBS ens_base PkgConfig::UV ens_boringssl)

ens_unit_test(net_test SOURCES tests/unit/runtime/net_test.c LIBS ens_net TIMEOUT 30)
ens_unit_test(listener_test SOURCES tests/unit/runtime/listener_test.c LIBS ens_net TIMEOUT 30)
ens_unit_test(fdlimit_test SOURCES tests/unit/runtime/fdlimit_test.c LIBS ens_net)
