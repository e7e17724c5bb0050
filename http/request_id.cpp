#include "http/request_id.hpp"

#include <random>

namespace troupe::http {

std::string random_hex() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (size_t i = 0; i < id.size(); i += 16) {
    auto x = rng();
    for (size_t j = 0; j < 16; ++j, x >>= 4)
      id[i + j] = hex[x & 0xf];
  }
  return id;
}

std::string request_id_for(std::string_view client) {
  if (client.empty() || client.size() > 200)
    return random_hex();
  for (unsigned char c : client)
    if (c < 0x21 || c > 0x7e)
      return random_hex();
  return std::string{client};
}

} // namespace troupe::http
