#pragma once

// URLs as troupe reads them: percent-decoding (request targets, credentials)
// and the base URLs of the services it talks to (HTTP sinks and upstreams,
// Redis). Pure parsing, so config validates with the parsers the clients use.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe {

/// Percent-decodes `s` (and turns '+' into ' ' when `form` is true); a
/// malformed escape stays as it is.
std::string url_decode(std::string_view s, bool form = false);

/// Percent-decodes `in` into `out`; false on a malformed escape.
bool percent_decode(std::string_view in, std::string& out);

} // namespace troupe

namespace troupe::http {

/// A parsed base URL.
struct url {
  std::string scheme; ///< "http"
  std::string host;   ///< without brackets for IPv6 literals
  std::string port;   ///< "80" when not given
  std::string target; ///< base path, "/" when not given
};

/// Parses "http://host[:port][/base/path]". nullopt with `error` set when
/// malformed or unsupported (https, credentials, query, fragment).
std::optional<url> parse_url(std::string_view text, std::string* error = nullptr);

} // namespace troupe::http

namespace troupe::redis {

/// Where a server is and how to log in.
struct url_parts {
  std::string host;
  uint16_t port = 6379;
  std::string password; ///< empty: no AUTH
  std::string username; ///< empty: AUTH with the password only (the default user)
  int db = 0;           ///< SELECTed after connecting when not 0
};

/// Parses "redis://[[user]:password@]host[:port][/db]". User and password are
/// percent-decoded; IPv6 hosts go in brackets. nullopt with `error` naming
/// the reason for anything else (rediss://, a query, a bad port or db, ...).
std::optional<url_parts> parse_url(std::string_view text, std::string* error = nullptr);

} // namespace troupe::redis
