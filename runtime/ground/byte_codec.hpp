#pragma once

// Little-endian fixed-width fields and LEB128 varints, for compact binary
// encodings (metrics sketches). Readers consume from a string_view and report
// truncated or overlong input as false, never throw.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace troupe::codec {

inline void put_u8(std::string& out, uint8_t x) {
  out.push_back(static_cast<char>(x));
}

inline void put_u32(std::string& out, uint32_t x) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

inline void put_u64(std::string& out, uint64_t x) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
}

inline void put_f64(std::string& out, double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  put_u64(out, bits);
}

inline void put_varint(std::string& out, uint64_t x) {
  while (x >= 0x80) {
    out.push_back(static_cast<char>((x & 0x7f) | 0x80));
    x >>= 7;
  }
  out.push_back(static_cast<char>(x));
}

/// Zigzag: small magnitudes of either sign become small varints.
inline void put_svarint(std::string& out, int64_t x) {
  put_varint(out, (static_cast<uint64_t>(x) << 1) ^ static_cast<uint64_t>(x >> 63));
}

inline bool get_u8(std::string_view& in, uint8_t& x) {
  if (in.empty())
    return false;
  x = static_cast<uint8_t>(in[0]);
  in.remove_prefix(1);
  return true;
}

inline bool get_u64(std::string_view& in, uint64_t& x, int bytes = 8) {
  if (in.size() < static_cast<size_t>(bytes))
    return false;
  x = 0;
  for (int i = 0; i < bytes; ++i)
    x |= uint64_t{static_cast<uint8_t>(in[i])} << (8 * i);
  in.remove_prefix(bytes);
  return true;
}

inline bool get_u32(std::string_view& in, uint32_t& x) {
  uint64_t wide;
  if (!get_u64(in, wide, 4))
    return false;
  x = static_cast<uint32_t>(wide);
  return true;
}

inline bool get_f64(std::string_view& in, double& x) {
  uint64_t bits;
  if (!get_u64(in, bits))
    return false;
  std::memcpy(&x, &bits, sizeof x);
  return true;
}

inline bool get_varint(std::string_view& in, uint64_t& x) {
  x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in.empty())
      return false;
    auto byte = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    // The tenth byte may only carry the top bit of a 64-bit value.
    if (shift == 63 && byte > 1)
      return false;
    x |= uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80) == 0)
      return true;
  }
  return false;
}

inline bool get_svarint(std::string_view& in, int64_t& x) {
  uint64_t z;
  if (!get_varint(in, z))
    return false;
  x = static_cast<int64_t>(z >> 1) ^ -static_cast<int64_t>(z & 1);
  return true;
}

} // namespace troupe::codec
