# Token-bucket rate limits shared by the schedulers (SipHash from BoringSSL).
ens_module(ens_ratelimit
  SOURCES runtime/ratelimit.c
  LIBS ens_base ens_boringssl Threads::Threads)

ens_unit_test(ratelimit_test SOURCES tests/unit/runtime/ratelimit_test.c LIBS ens_ratelimit)
