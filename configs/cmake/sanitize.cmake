# The sanitizer build (`make test-sanitize`, and `make fuzz` in the same build
# directory): clang, ASan + UBSan on every target, plus libFuzzer's coverage
# instrumentation (fuzzer-no-link) so the fuzz targets of tests/fuzz link the
# same layer libraries the tests use. UBSan stays recoverable so that its
# suppressions file works; UBSAN_OPTIONS=halt_on_error=1 (the Makefile sets it)
# makes every report that is not suppressed fatal.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "TROUPE_SANITIZE needs clang (e.g. -DCMAKE_CXX_COMPILER=clang++-14); got ${CMAKE_CXX_COMPILER_ID}")
endif()
set(TROUPE_SANITIZERS address,undefined)
add_compile_options(-fsanitize=${TROUPE_SANITIZERS},fuzzer-no-link -fno-omit-frame-pointer)
add_link_options(-fsanitize=${TROUPE_SANITIZERS})
# -O1 and line tables only: about a third less compile time than RelWithDebInfo's
# -O2 -g on this 2-core machine, and reports still name file and line.
set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O1 -g1")
