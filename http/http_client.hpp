#pragma once

// A small blocking HTTP/1.1 client for shipping data out (Loki pushes): one
// request per fresh connection, bounded by a timeout, never throwing. Beast
// stays in http_client.cpp.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/ground/url.hpp"

namespace troupe::http {

/// Largest response body fetch() reads (larger ones fail with an error).
inline constexpr uint64_t max_response_bytes = 256ull << 20;

/// What came back.
struct client_response {
  unsigned status = 0;                        ///< 0 on transport errors
  std::map<std::string, std::string> headers; ///< names lower-cased; repeats joined with ", "
  std::string body;
  std::string error; ///< transport error text when status is 0
};

/// One HTTP/1.1 request to `base.target` + `path_suffix` on a fresh
/// connection; resolve, connect, write and read together take at most
/// `timeout`. Never throws.
client_response fetch(const url& base, std::string_view method, std::string_view path_suffix,
                      const std::vector<std::pair<std::string, std::string>>& headers,
                      std::string_view body, std::chrono::milliseconds timeout);

/// Standard base64 with padding (RFC 4648), e.g. for Basic auth.
std::string base64(std::string_view data);

} // namespace troupe::http
