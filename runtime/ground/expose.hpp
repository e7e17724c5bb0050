#pragma once

// How the built-in proxy reaches an app (an app's `spec.expose`): one type
// for the apps spec that reads it and the proxy's routing table that uses it.

#include <cstdint>
#include <string>

namespace troupe {

struct expose_rule {
  /// Exact host ("api.example.com") or a wildcard ("*.example.com": any
  /// name ending in ".example.com"); empty: any host. Lower case.
  std::string host;
  /// "/api" (starts with '/', no trailing '/' except "/" itself); empty: any path.
  std::string path_prefix;
  /// Remove the prefix before forwarding ("/api/x" → "/x").
  bool strip_prefix = false;
  /// A listener of its own (0: the shared proxy listener).
  uint16_t port = 0;
};

} // namespace troupe
