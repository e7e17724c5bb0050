#pragma once

// The query parameters (and Last-Event-ID) the API reads, parsed one way: the
// first bad one becomes a 400 `invalid_parameter` naming it.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/router.hpp"

namespace troupe {

/// Reads parameters of one request. After a bad one, error() holds its 400 and
/// what is read later is the fallback: read them all, then check once.
class query_params {
public:
  explicit query_params(const http::request& req) : req_(req) {}

  /// An unsigned integer in [min, max]; `fallback` when absent.
  uint64_t uint(const std::string& name, uint64_t fallback, uint64_t min, uint64_t max);
  /// A time, RFC 3339 or Unix seconds, in ns since the epoch; nullopt when absent.
  std::optional<int64_t> time(const std::string& name);
  /// One of `choices`; nullopt when absent.
  std::optional<std::string> one_of(const std::string& name,
                                    const std::vector<std::string>& choices);
  /// Comma-separated `key:value` pairs (a key is not empty); none when absent.
  std::vector<std::pair<std::string, std::string>> key_values(const std::string& name);
  /// `true`/`1` or `false`/`0`; `fallback` when absent.
  bool flag(const std::string& name, bool fallback);
  /// The sequence number to resume after: the Last-Event-ID header, or else the
  /// query parameter `query_name` when one is given; nullopt when neither is set.
  std::optional<uint64_t> last_event_id(const std::string& query_name = {});

  /// The 400 for the first bad parameter, if there was one.
  const std::optional<http::response>& error() const { return error_; }
  /// Answers `ex` with error() if there is one; true if it did.
  bool reply_if_bad(const http::exchange_ptr& ex) const;

private:
  void bad(const std::string& name, const std::string& what, const std::string& raw);

  const http::request& req_;
  std::optional<http::response> error_;
};

} // namespace troupe
