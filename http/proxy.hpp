#pragma once

// The built-in proxy's data plane (issue 13): Beast on io threads of its own,
// each with its own connections and upstream keep-alive pools (like an nginx
// worker), so a request takes no lock but the balancer's. It routes by the
// route table (http/proxy_routes), balances by the least outstanding of two
// random ready instances (http/proxy_balancer), rewrites headers
// (http/proxy_headers), streams bodies both ways through a fixed buffer
// (uploads, downloads, SSE, long polls: never buffered whole), tunnels
// upgrades (WebSocket), retries once on another instance where that is safe,
// and answers 503/504/502 itself. What it measures leaves through
// `on_request` (an io thread calls it; the node feeds troupe's recorder).
//
// It knows nothing of actors: the traffic actor (actors/traffic) tells it
// each app's ready endpoints and asks it for in-flight counts.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/proxy_balancer.hpp"
#include "http/proxy_routes.hpp"

namespace troupe::http {

/// One answered request, as the proxy measured it.
struct proxy_record {
  std::string_view app;
  /// Empty when no instance was tried (503 no_ready_instance).
  std::string_view instance;
  unsigned status = 0;
  /// From the request header's arrival to the response's last byte.
  double seconds = 0;
};

/// Scale from zero (issue 14): while an app has no ready instance, its
/// requests are held — bodies read into the request's relay buffer, up to
/// its size; the rest waits in the socket — and forwarded in arrival order
/// once one is ready, with `X-Troupe-Cold-Start: 1`. Past either bound: 503
/// with Retry-After.
struct activation_options {
  std::chrono::milliseconds timeout{30'000};
  size_t max_pending = 1000;
};

struct proxy_options {
  /// The shared listener (apps without a port of their own).
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  int io_threads = 1;
  std::chrono::milliseconds upstream_timeout{60'000};
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds client_idle_timeout{75'000};
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds upstream_idle_timeout{60'000};
  balancer_options balancing;
  size_t max_connections = 10'000;
  size_t max_header_bytes = 16 * 1024;
  /// Idle upstream connections kept per instance and io thread.
  size_t upstream_keepalive = 32;
  bool via = false;
  /// Called on an io thread for every request answered.
  std::function<void(const proxy_record&)> on_request;
  /// Called on an io thread when an instance is ejected.
  std::function<void(const std::string& app, const std::string& instance)> on_eject;
  /// Called on an io thread when a request is held for an app that has no
  /// ready instance (at most once a second per app while requests wait).
  std::function<void(const std::string& app)> on_activate;
};

/// What the proxy sees of one app now.
struct proxy_app_view {
  std::string app;
  uint64_t active_connections = 0;
  std::vector<balancer::load> instances;
  /// Wall-clock ns of the app's last request (0: none).
  int64_t last_request_ns = 0;
  /// Requests held while the app activates.
  uint64_t pending = 0;
};

class proxy_server {
public:
  explicit proxy_server(proxy_options opts);
  ~proxy_server();
  proxy_server(const proxy_server&) = delete;
  proxy_server& operator=(const proxy_server&) = delete;

  /// Binds the shared listener and starts the io threads. Throws
  /// std::runtime_error naming the address when it cannot listen.
  void start();
  /// Closes the listeners and connections and joins the threads.
  void stop();
  /// The shared listener's port (the bound one when 0 was asked).
  uint16_t port() const;

  /// Adds or updates `app`: its expose rule (nullopt: /{app}/…), its
  /// ready instances and whether requests are held while none is
  /// (`activation`; nullopt: 503 at once). Held requests go on as soon as
  /// an instance is ready. Throws spec_error (a rule another app holds) or
  /// std::runtime_error (its own port cannot be listened on); nothing
  /// changes then.
  void set_app(const std::string& app, const std::optional<expose_rule>& rule,
               const std::vector<balancer::endpoint>& ready,
               std::optional<activation_options> activation = std::nullopt);
  void remove_app(const std::string& app);

  /// Requests in flight on the instance now, plus one while new requests
  /// may still be routed to it (a drain waits for 0).
  uint32_t in_flight(const std::string& app, const std::string& instance) const;

  std::optional<proxy_app_view> app_view(const std::string& app) const;
  std::vector<std::string> apps() const;
  /// Client connections open now.
  size_t connections() const;
  /// Ports of apps' own listeners.
  std::vector<uint16_t> app_ports() const;

  /// Its state and io threads (http/proxy.cpp).
  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::http
