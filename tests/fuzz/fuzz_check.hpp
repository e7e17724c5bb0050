#pragma once

// What the fuzz targets share: a check that stops the run with a message
// (libFuzzer saves the input as a crash artifact), and a scratch directory.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "support/temp_dir.hpp"

/// Aborts with the failed condition and a detail when `cond` is false.
#define FUZZ_CHECK(cond, detail)                                                                   \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s\n  %s\n", __FILE__, __LINE__, #cond,    \
                   std::string{detail}.c_str());                                                   \
      std::abort();                                                                                \
    }                                                                                              \
  } while (0)

namespace troupe::fuzz {

/// One directory for the whole run (iterations reuse it): creating one per
/// input would cost more than the input.
inline const troupe::test::temp_dir& scratch() {
  static troupe::test::temp_dir dir;
  return dir;
}

/// The input as text, for messages.
inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

} // namespace troupe::fuzz
