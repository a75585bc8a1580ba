ens_module(ens_json_text
  SOURCES protocols/json_text.c
  LIBS ens_base)
