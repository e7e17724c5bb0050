#pragma once

// A small blocking Redis client over hiredis, for one dedicated (detached)
// actor: every call blocks for at most the configured timeout (per connect,
// per command). hiredis stays in redis.cpp.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/ground/url.hpp"

struct redisContext;

namespace troupe::redis {

/// One reply, with nested arrays.
struct reply {
  enum class kind { nil, integer, string, array, status, error } type = kind::nil;
  long long integer = 0;       ///< kind::integer
  std::string str;             ///< kind::string, status and error (the message)
  std::vector<reply> elements; ///< kind::array
};

/// A connection that is re-established on demand. Not thread-safe. Never
/// raises SIGPIPE, even where the process does not ignore it.
class client {
public:
  /// Connects right away; a failure is not fatal (see connected()), the next
  /// command tries again.
  client(url_parts where, std::chrono::milliseconds timeout);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Runs one command; arguments are binary-safe. Without a connection it
  /// connects first. When an established connection fails (I/O error,
  /// timeout, server gone) it reconnects once and runs the command again, so
  /// a non-idempotent command may run twice if only its reply was lost.
  /// nullopt with `error` (and last_error()) set, naming host:port, when it
  /// still fails. A Redis error reply is a reply of kind::error, not nullopt.
  std::optional<reply> command(const std::vector<std::string>& args, std::string* error = nullptr);

  /// Every key matching `pattern`: SCAN 0 MATCH pattern COUNT 1000 until the
  /// cursor is 0 again, duplicates removed, in the order SCAN returned them.
  std::optional<std::vector<std::string>> scan(const std::string& pattern,
                                               std::string* error = nullptr);

  /// Whether the last operation succeeded (an error reply counts as success).
  bool connected() const noexcept { return connected_; }

  /// Why the last failed operation failed.
  const std::string& last_error() const noexcept { return last_error_; }

private:
  struct context_deleter {
    void operator()(redisContext* ctx) const;
  };

  bool connect();
  std::optional<reply> run(const std::vector<std::string>& args);
  bool fail(std::string what);
  std::string where() const;

  url_parts where_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<redisContext, context_deleter> ctx_;
  bool connected_ = false;
  std::string last_error_;
};

} // namespace troupe::redis
