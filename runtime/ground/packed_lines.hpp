#pragma once

// Lines packed back to back in one buffer, each a 4-byte little-endian length
// then its bytes: how a pipe read travels from the process io thread to the
// log pipeline and into a store write (one allocation per read, not per line).

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace troupe {

/// Appends `line` to a packed buffer: a 4-byte length, then its bytes.
inline void pack_line(std::string& out, std::string_view line) {
  auto n = line.size();
  for (int i = 0; i < 4; ++i)
    out += static_cast<char>((n >> (8 * i)) & 0xff);
  out.append(line);
}

/// Calls `fn(std::string_view)` for every line of a packed buffer, in order.
template <class F> void for_each_packed(std::string_view packed, F&& fn) {
  while (packed.size() >= 4) {
    auto p = reinterpret_cast<const unsigned char*>(packed.data());
    size_t n = p[0] | (size_t{p[1]} << 8) | (size_t{p[2]} << 16) | (size_t{p[3]} << 24);
    packed.remove_prefix(4);
    n = std::min(n, packed.size());
    fn(packed.substr(0, n));
    packed.remove_prefix(n);
  }
}

} // namespace troupe
