#pragma once

// The built-in proxy's balancer for one app (issue 13): least outstanding
// requests between two random candidates (power of two choices), only ready
// instances that are neither draining nor ejected; passive health (an
// instance with `max_fails` consecutive connect failures is ejected for
// `eject_for`, like nginx's max_fails/fail_timeout); in-flight counts per
// instance, kept for an instance that left the ready set until its last
// request ended (a drain waits on them). Pure data; the caller locks.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace troupe::http {

/// Passive health of the balancer's instances.
struct balancer_options {
  /// Consecutive connect failures that eject an instance.
  uint32_t max_fails = 3;
  std::chrono::milliseconds eject_for{10'000};
};

class balancer {
public:
  using clock = std::chrono::steady_clock;
  using options = balancer_options;

  /// A ready instance: its id and where it listens.
  struct endpoint {
    std::string instance;
    uint16_t port = 0;
  };

  explicit balancer(options o = {}) : opts_(o) {}

  /// The instances that may get new requests now (the app's ready ones).
  /// Counters of instances that stay are kept; one that left is kept while
  /// requests are in flight on it.
  void set_ready(const std::vector<endpoint>& ready);

  /// An instance for a new request: of two random candidates among the
  /// ready, not ejected ones (not in `exclude`: a retry goes elsewhere), the
  /// one with fewer requests in flight. nullopt: none is available.
  std::optional<endpoint> pick(clock::time_point now, std::mt19937_64& rng,
                               const std::vector<std::string>& exclude = {}) const;

  /// A request to `instance` began / ended.
  void started(const std::string& instance);
  void finished(const std::string& instance);

  /// A connect to `instance` failed; true when this ejected it (tell its
  /// health checker).
  bool connect_failed(const std::string& instance, clock::time_point now);

  /// A connect to `instance` succeeded: its failure count starts over.
  void connect_ok(const std::string& instance);

  /// Requests in flight on `instance` (0 for one never seen).
  uint32_t in_flight(const std::string& instance) const;

  /// Requests in flight on every instance together.
  uint64_t in_flight() const;

  /// Ready instances not ejected at `now`.
  size_t available(clock::time_point now) const;

  /// Whether new requests may still go to `instance` (it is in the ready set).
  bool routable(const std::string& instance) const;

  /// Every instance it routes to or still counts requests of.
  struct load {
    std::string instance;
    uint16_t port = 0;
    uint32_t in_flight = 0;
    bool ready = false;
    bool ejected = false;
  };
  std::vector<load> loads(clock::time_point now) const;

private:
  struct state {
    uint16_t port = 0;
    bool ready = false;
    uint32_t in_flight = 0;
    uint32_t failures = 0;
    clock::time_point ejected_until{};
  };

  options opts_;
  std::map<std::string, state> by_id_;
};

} // namespace troupe::http
