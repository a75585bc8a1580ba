# Lets tools/bench/run build apns_bench before CMakeLists.txt includes
# tools/bench/bench.cmake: passed as -DCMAKE_PROJECT_INCLUDE, it defers the
# include to the end of the top-level CMakeLists.txt (when ens_apns and
# ENS_WARNINGS exist) and does nothing once the target is already defined.
set(_ENS_BENCH_DIR ${CMAKE_CURRENT_LIST_DIR})
function(_ens_bench_hook)
  if(NOT TARGET apns_bench)
    include(${_ENS_BENCH_DIR}/bench.cmake)
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL _ens_bench_hook)
