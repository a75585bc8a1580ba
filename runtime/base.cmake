ens_module(ens_base
  SOURCES runtime/err.c runtime/alloc.c runtime/buf.c runtime/log.c runtime/b64.c runtime/file.c
          runtime/clock.c
  LIBS Threads::Threads)

ens_unit_test(base_test SOURCES tests/unit/runtime/base_test.c LIBS ens_base)
