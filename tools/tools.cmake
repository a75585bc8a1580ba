# Source checks that run with the tests (STYLE.md 19).
if(ENS_TESTS AND NOT ENS_FUZZ)
  add_test(NAME checksrc COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/checksrc ${PROJECT_SOURCE_DIR})
  set_tests_properties(checksrc PROPERTIES LABELS lint TIMEOUT 60)
endif()

# The container image without a container engine: the build context .dockerignore leaves, the
# Dockerfile's runtime packages against what ensd and ensctl load, the compose file's health check.
# Not in sanitizer builds: their binaries also load the sanitizer runtimes, which the image never ships.
if(ENS_TESTS AND NOT ENS_FUZZ AND NOT ENS_SANITIZE)
  add_test(NAME container_lint
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/container_lint ${PROJECT_SOURCE_DIR}
                   $<TARGET_FILE:ensd> $<TARGET_FILE:ensctl>)
  set_tests_properties(container_lint PROPERTIES LABELS lint TIMEOUT 60)
endif()
