# Shared build settings and helpers for the module fragments.
include(CTest)
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(UV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
pkg_check_modules(XML2 REQUIRED IMPORTED_TARGET libxml-2.0)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
pkg_check_modules(CJSON REQUIRED IMPORTED_TARGET libcjson)
if(ENS_TESTS)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()

# BoringSSL from Debian's android-libboringssl-dev. Its headers must come before
# /usr/include so that no OpenSSL header can ever be picked up by mistake.
set(ENS_BORINGSSL_INC /usr/include/android CACHE PATH "BoringSSL headers")
set(ENS_BORINGSSL_LIB /usr/lib/x86_64-linux-gnu/android CACHE PATH "BoringSSL libraries")
add_library(ens_boringssl INTERFACE)
target_include_directories(ens_boringssl SYSTEM BEFORE INTERFACE ${ENS_BORINGSSL_INC})
target_link_libraries(ens_boringssl INTERFACE ${ENS_BORINGSSL_LIB}/libssl.so ${ENS_BORINGSSL_LIB}/libcrypto.so)
set(CMAKE_BUILD_RPATH ${ENS_BORINGSSL_LIB})
set(CMAKE_INSTALL_RPATH ${ENS_BORINGSSL_LIB})

# llhttp ships as C sources in node-llhttp.
file(GLOB ENS_LLHTTP_SOURCES /usr/share/llhttp/*.c)
add_library(ens_llhttp STATIC ${ENS_LLHTTP_SOURCES})
target_include_directories(ens_llhttp SYSTEM PUBLIC /usr/share/include/llhttp)
target_compile_options(ens_llhttp PRIVATE -w)
set_target_properties(ens_llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)

set(ENS_WARNINGS -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wmissing-prototypes
    -Wstrict-prototypes -Wvla -Wno-unused-parameter)
add_compile_definitions(_GNU_SOURCE ENS_VERSION="${PROJECT_VERSION}")
include_directories(${PROJECT_SOURCE_DIR})

if(ENS_SANITIZE)
  string(REPLACE "," ";" _ens_san_list "${ENS_SANITIZE}")
  set(_ens_san_flags "-fsanitize=${ENS_SANITIZE}" -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options(${_ens_san_flags})
  add_link_options(${_ens_san_flags})
endif()
if(ENS_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "ENS_FUZZ needs clang (CC=clang)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# ens_module(NAME SOURCES ... LIBS ...): one static library per module.
function(ens_module name)
  cmake_parse_arguments(M "" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} STATIC ${M_SOURCES})
  target_compile_options(${name} PRIVATE ${ENS_WARNINGS})
  target_link_libraries(${name} PUBLIC ${M_LIBS})
endfunction()

# ens_unit_test(NAME SOURCES ... LIBS ...): a cmocka test run by ctest in its own
# process with a timeout. Not built in the fuzz configuration.
function(ens_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT ENS_TESTS OR ENS_FUZZ)
    return()
  endif()
  add_executable(${name} ${T_SOURCES})
  target_compile_options(${name} PRIVATE ${ENS_WARNINGS} -Wno-missing-prototypes)
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS unit
                       ENVIRONMENT "ENS_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data")
endfunction()

# ens_fuzz_target(NAME SOURCES ... LIBS ... [DEFINES ...]): a libFuzzer target, built
# only with ENS_FUZZ=ON; ctest runs it for ENS_FUZZ_SECONDS over its committed corpus.
set(ENS_FUZZ_SECONDS 5 CACHE STRING "Seconds each fuzz target runs under ctest")
function(ens_fuzz_target name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS;DEFINES" ${ARGN})
  if(NOT ENS_FUZZ)
    return()
  endif()
  add_executable(${name} ${F_SOURCES})
  target_compile_definitions(${name} PRIVATE ${F_DEFINES})
  target_compile_options(${name} PRIVATE ${ENS_WARNINGS} -Wno-missing-prototypes)
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  set(_corpus ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name})
  set(_work ${CMAKE_BINARY_DIR}/fuzz-work/${name})
  add_test(NAME ${name}
           COMMAND sh -c "mkdir -p '${_work}' && exec $<TARGET_FILE:${name}> -max_total_time=${ENS_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 '${_work}' '${_corpus}'")
  set_tests_properties(${name} PROPERTIES TIMEOUT 120 LABELS fuzz)
endfunction()

# ens_integration_test(NAME SCRIPT script.py TIMEOUT s ARGS ... [SKIP_RETURN_CODE n]): a Python
# integration test in tests/integration/ (real redis-server and simulators on loopback), run by
# /usr/bin/python3 (Debian's python3-h2, -cryptography and -jwcrypto), with LeakSanitizer on in
# sanitizer builds. Not built in the fuzz configuration.
function(ens_integration_test name)
  cmake_parse_arguments(I "" "SCRIPT;TIMEOUT;SKIP_RETURN_CODE" "ARGS" ${ARGN})
  if(NOT ENS_TESTS OR ENS_FUZZ)
    return()
  endif()
  add_test(NAME ${name}
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/${I_SCRIPT} ${I_ARGS})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${I_TIMEOUT} LABELS integration
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
  if(I_SKIP_RETURN_CODE)
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE ${I_SKIP_RETURN_CODE})
  endif()
endfunction()
