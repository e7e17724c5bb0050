#pragma once

// Routing and the handler-facing request/response types. Deliberately free of
// Beast so that handlers compile fast; http/server.cpp does the wire work.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/auth.hpp"
#include "runtime/ground/url.hpp"

namespace troupe::http {

/// Percent-decoding is ground floor (runtime/ground/url.hpp); routes use it here.
using troupe::url_decode;

/// What a route reads from the request body; the server enforces it before
/// the body is read (413/415), so a route never buffers more than it needs.
enum class body_kind : uint8_t {
  none,   ///< no body (a request with one gets 413)
  json,   ///< JSON or YAML, at most http.max_json_bytes
  upload, ///< JSON/YAML as above, or multipart/form-data up to
          ///< jobs.max_archive_bytes, streamed to a file (request::body_file)
};

/// What the server checks before a route's handler runs.
struct route_options {
  /// The least role a caller needs; role::none makes the route public.
  role needs = role::admin;
  body_kind body = body_kind::none;
  /// Also accepts the token as `?access_token=` (SSE: EventSource cannot set
  /// headers); the parameter is removed from the request before logging.
  bool query_token = false;
};

/// A parsed request as handlers see it.
struct request {
  std::string method;                         ///< upper case, e.g. GET
  std::string target;                         ///< raw target, path plus query
  std::string path;                           ///< decoded path without the query
  std::map<std::string, std::string> query;   ///< decoded query parameters
  std::map<std::string, std::string> headers; ///< names lower-cased
  std::map<std::string, std::string> params;  ///< path parameters from the route
  std::string body;
  /// Set instead of `body` when an upload was streamed to disk: the path of
  /// a file the server removes once the request is done.
  std::string body_file;
  std::string request_id;
  /// The peer's IP address.
  std::string peer;
  /// The authenticated caller: the token's name ("" when auth.mode is none)
  /// and the role it grants (admin when auth.mode is none).
  std::string principal;
  role granted = role::none;

  /// A header's value, or "" (name must be lower case).
  const std::string& header(const std::string& name) const;
  /// A query parameter, if present.
  std::optional<std::string> param(const std::string& name) const;
};

/// A complete response.
struct response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static response json(unsigned status, std::string body);
  /// `{"error":{"code","message","field"?}}`
  static response error(unsigned status, std::string_view code, std::string_view message,
                        std::string_view field = {});
};

/// A server-sent-events stream. Thread-safe: any thread or actor may send.
class sse_stream {
public:
  virtual ~sse_stream() = default;
  /// Queues an event; false if the stream is closed (client gone, queue
  /// overflow or shutdown): the producer should stop.
  virtual bool send(std::string_view id, std::string_view event, std::string_view data) = 0;
  /// Queues an SSE comment line (`: text`).
  virtual bool comment(std::string_view text) = 0;
  /// Queues body bytes as they are (streams started with exchange::chunked).
  virtual bool write(std::string_view bytes) = 0;
  /// Ends the stream after the queued events are written.
  virtual void close() = 0;
  /// Ends it at once, without the end of the chunked body: a download cut
  /// short shows as incomplete to the client instead of as a whole body.
  virtual void abort() = 0;
  virtual bool closed() const = 0;
  /// Events queued but not yet written (producers replaying history pace
  /// themselves with it).
  virtual size_t backlog() const = 0;
  /// Events that may be queued before the stream is dropped as too slow.
  virtual size_t capacity() const = 0;
  /// Bytes queued but not yet written.
  virtual size_t backlog_bytes() const = 0;
  /// Bytes that may be queued before the stream is dropped as too slow
  /// (http.sse_queue_bytes); a producer replaying history keeps well below.
  virtual size_t capacity_bytes() const = 0;
  /// Runs `fn` once when the stream closes (immediately if it already did).
  virtual void on_close(std::function<void()> fn) = 0;
};

/// One request in flight: answer it exactly once, with `reply` or `stream`.
class exchange {
public:
  virtual ~exchange() = default;
  virtual const http::request& req() const = 0;
  /// Sends the response (from any thread).
  virtual void reply(response res) = 0;
  /// Starts an SSE response (status 200) and returns its stream.
  virtual std::shared_ptr<sse_stream>
  stream(std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  /// Starts a chunked 200 response of `content_type` whose body the producer
  /// writes with sse_stream::write, pacing itself with backlog() (no SSE
  /// framing, no pings); the connection closes after it.
  virtual std::shared_ptr<sse_stream> chunked(std::string content_type) = 0;
};

using exchange_ptr = std::shared_ptr<exchange>;
using handler = std::function<void(const exchange_ptr&)>;

/// Maps method + path pattern (`/jobs/{id}/stream`) to handlers.
class router {
public:
  /// Every route states the role it needs and the body it takes.
  void add(std::string method, std::string pattern, route_options opts, handler h);

  struct match_result {
    const handler* fn = nullptr; ///< set when method and path match
    route_options opts;          ///< of the matched route
    std::map<std::string, std::string> params;
    std::string allow; ///< methods of the path, if only the method failed
    std::string route; ///< the pattern that matched (for metrics)
  };

  /// Finds the handler; GET routes also answer HEAD.
  match_result match(std::string_view method, std::string_view path) const;

private:
  struct route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    route_options opts;
    handler fn;
  };
  std::vector<route> routes_;
};

/// Splits a target into decoded path and query parameters.
void parse_target(std::string_view target, std::string& path,
                  std::map<std::string, std::string>& query);

} // namespace troupe::http
