#pragma once

// The checks every request passes once its header has arrived, before a
// handler runs or its body is read: Host (DNS rebinding), Origin (browsers),
// the route's role (bearer tokens), its body (media type, size) and the rate
// of mutating requests. Free of Beast so that it is tested directly.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/auth.hpp"
#include "http/rate_limit.hpp"
#include "http/router.hpp"

namespace troupe::http {

struct gate_options {
  /// null: auth.mode none (every caller is admin).
  std::shared_ptr<const authenticator> auth;
  std::vector<std::string> allowed_origins;
  std::vector<std::string> allowed_hosts;
  /// The listener is on a loopback address: Host must name loopback.
  bool loopback = true;
  bool tls = false;
  uint64_t max_json_bytes = 1u << 20;
  uint64_t max_upload_bytes = 256ull << 20;
  /// null: no rate limit.
  std::shared_ptr<rate_limiter> limiter;
};

/// How the body of an admitted request is read.
struct body_plan {
  /// Stream it to a file (multipart uploads) instead of memory.
  bool to_file = false;
  /// Bytes the body may have; a body passing it is answered 413.
  uint64_t limit = 0;
};

/// What the gate decided.
struct verdict {
  /// Set when the request is answered here (refused, or a CORS preflight).
  std::optional<response> answer;
  body_plan body;
};

/// Removes `access_token` from the query and redacts it in the target, so no
/// log line ever shows it; returns its value.
std::optional<std::string> take_access_token(request& req);

/// Host and Origin checks (before routing). Sets `cors` to the headers an
/// allowed foreign origin gets on the response. Answers CORS preflights.
std::optional<response> check_origin(const gate_options& opts, const request& req,
                                     std::vector<std::pair<std::string, std::string>>& cors);

/// The route's checks: role (sets req.principal and req.granted), body
/// (media type and declared size; `content_length` empty when unknown, e.g.
/// chunked), rate limit. `token` is the `?access_token=` value, if any.
verdict admit(const gate_options& opts, request& req, const route_options& route,
              const std::optional<std::string>& token, std::optional<uint64_t> content_length,
              bool has_body);

/// The media type of a Content-Type value, lower case, without parameters.
std::string media_type(std::string_view content_type);

/// application/json, or YAML under any of its usual names.
bool is_json_or_yaml(std::string_view media);

} // namespace troupe::http
