#pragma once

// The byte pattern of the test backend's /download and the checksum both
// sides compute (tests/support/app_backend.cpp, e2e_traffic).

#include <cstddef>
#include <cstdint>

namespace troupe::test {

/// 64-bit FNV-1a offset basis.
constexpr uint64_t fnv_basis = 14695981039346656037ull;

/// 64-bit FNV-1a over `n` bytes, continuing from `h`.
inline uint64_t fnv(uint64_t h, const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

/// Byte i of /download's pattern.
inline char pattern_byte(uint64_t i) {
  return static_cast<char>('a' + (i * 7 + i / 4096) % 26);
}

} // namespace troupe::test
