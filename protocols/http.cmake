# HTTP/1.1: the llhttp codec, server connections and the client; the server
# also speaks HTTP/2 (ALPN h2) through protocols/h2_server.c on nghttp2.
ens_module(ens_http
  SOURCES protocols/h1_parser.c protocols/h1_server.c protocols/h1_client.c
          protocols/h2_server.c
  LIBS ens_net ens_llhttp ens_base PkgConfig::NGHTTP2)

ens_unit_test(h1_parser_test SOURCES tests/unit/protocols/h1_parser_test.c LIBS ens_http TIMEOUT 30)
ens_unit_test(h1_http_test SOURCES tests/unit/protocols/h1_http_test.c LIBS ens_http TIMEOUT 60)
ens_unit_test(h2_server_test SOURCES tests/unit/protocols/h2_server_test.c LIBS ens_http TIMEOUT 60)

ens_fuzz_target(fuzz_h1_request SOURCES tests/fuzz/fuzz_h1.c LIBS ens_http
                DEFINES FUZZ_H1_MODE=H1_PARSE_REQUEST)
ens_fuzz_target(fuzz_h1_response SOURCES tests/fuzz/fuzz_h1.c LIBS ens_http
                DEFINES FUZZ_H1_MODE=H1_PARSE_RESPONSE)
ens_fuzz_target(fuzz_h2_server SOURCES tests/fuzz/fuzz_h2_server.c LIBS ens_http)
