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

#include "http/router.hpp"

namespace troupe::http {

struct server_options {
  int io_threads = 1;
  uint64_t body_limit = 64ull << 20;
  std::chrono::milliseconds request_timeout{30'000};
  std::chrono::milliseconds sse_ping_interval{15'000};
  size_t sse_queue_limit = 4096;
  size_t sse_queue_bytes = 4u << 20;
  std::shared_ptr<const authenticator> auth; ///< null: auth.mode none (every caller is admin)
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
  /// Throws std::runtime_error on failure.
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
