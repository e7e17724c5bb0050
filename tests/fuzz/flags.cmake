# Included by the top-level CMakeLists.txt when TROUPE_FUZZ is on, before any
# layer is declared: every troupe library is then compiled with libFuzzer's
# coverage instrumentation and ASan + UBSan (the fuzzers link them as usual).
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "TROUPE_FUZZ needs clang (e.g. CXX=clang++-14); got ${CMAKE_CXX_COMPILER_ID}")
endif()
set(TROUPE_FUZZ_SANITIZERS address,undefined)
add_compile_options(-fsanitize=fuzzer-no-link,${TROUPE_FUZZ_SANITIZERS}
  -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
