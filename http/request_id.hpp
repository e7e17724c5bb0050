#pragma once

// Request ids: the client's X-Request-ID when it is short printable ASCII,
// else a new one. One rule for troupe's own server and its proxy, so the id
// a client sends is the one in troupe's log lines and at the backend.

#include <string>
#include <string_view>

namespace troupe::http {

/// 32 random hex digits (a fresh request id; also unique file names).
std::string random_hex();

/// `client` when it is 1–200 printable ASCII characters (no space), else a
/// new random_hex().
std::string request_id_for(std::string_view client);

} // namespace troupe::http
