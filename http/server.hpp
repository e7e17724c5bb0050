#pragma once

// The HTTP/1.1 server (Boost.Beast) on its own io threads: keep-alive,
// pipelining (requests on a connection are answered in order), per-connection
// timeouts, body limits, SSE, and graceful draining. Handlers get plain
// request/response types (http/router.hpp) and may answer from any thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "http/auth.hpp"
#include "http/router.hpp"

namespace troupe::http {

struct server_options {
  int io_threads = 1;
  /// Largest JSON/YAML body (body_kind::json and non-multipart uploads).
  uint64_t max_json_bytes = 1u << 20;
  /// Largest multipart upload body (body_kind::upload), streamed to a file.
  uint64_t max_upload_bytes = 256ull << 20;
  /// Where uploads are streamed to (must exist, private to troupe).
  std::string upload_dir;
  /// Idle timeout: waiting for a request, and between bytes of a body or a write.
  std::chrono::milliseconds request_timeout{30'000};
  /// A request's headers must be complete this long after its first byte.
  std::chrono::milliseconds header_timeout{10'000};
  /// Overall cap on reading one request.
  std::chrono::milliseconds max_request_duration{600'000};
  std::chrono::milliseconds sse_ping_interval{15'000};
  size_t sse_queue_limit = 4096;
  size_t sse_queue_bytes = 4u << 20;
  /// Open connections at most; further ones are answered 503 and closed.
  size_t max_connections = 1024;
  /// null: auth.mode none (every caller is admin).
  std::shared_ptr<const authenticator> auth;
  /// Browser origins served besides the server's own.
  std::vector<std::string> allowed_origins;
  /// Host values accepted on a loopback listener besides localhost,
  /// 127.0.0.1 and [::1] (with any port).
  std::vector<std::string> allowed_hosts;
  /// Mutating requests per second per token and per client address (0: off).
  double rate_limit = 0;
  double rate_burst = 20;
  /// PEM files; both set: HTTPS.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// Routes whose access log line is written at debug level (probes).
  std::vector<std::string> quiet_routes{"/healthz", "/readyz", "/metrics"};
  /// Called on the io thread once per answered request (an SSE stream when it
  /// starts) with the matched route pattern ("" if none), the status and the
  /// seconds from reading the request to writing the response head. Must be
  /// cheap and must not throw.
  std::function<void(const request&, const std::string& route, unsigned status, double seconds)>
      on_answered;
};

class server {
public:
  server(server_options opts, std::shared_ptr<const router> routes);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds and listens (port 0: any free port); returns the bound HOST:PORT.
  /// Throws std::runtime_error on failure (also for unusable TLS files).
  std::string bind(const std::string& host, uint16_t port);

  /// Starts the io threads and accepting connections.
  void start();

  /// Graceful stop: no new connections, idle keep-alive connections closed,
  /// SSE streams ended after their queued events, in-flight requests finish
  /// (up to `grace`); then the io threads stop. Idempotent.
  void stop(std::chrono::milliseconds grace);

  /// Requests being handled right now (SSE streams excluded once started).
  size_t in_flight() const;
  /// Open connections.
  size_t connections() const;
  /// Open streaming responses (SSE, and chunked downloads such as job logs).
  size_t sse_streams() const;

  class impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::http
