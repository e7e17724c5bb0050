#pragma once

// What a health probe checks and how its results add up (Kubernetes
// semantics): pure, so the thresholds are tested without actors or time.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace troupe::apps {

enum class probe_kind : uint8_t { http, tcp, exec };

/// "http", "tcp" or "exec".
const char* to_string(probe_kind x);

/// One probe of an instance as the spec gives it (the app spec is mapped
/// onto this by the app wing).
struct probe_spec {
  probe_kind kind = probe_kind::http;
  /// http: the request target, e.g. /healthz.
  std::string path = "/";
  /// http, tcp: the port on 127.0.0.1.
  uint16_t port = 0;
  /// exec: argv run in the instance's environment; exit 0 is healthy.
  std::vector<std::string> command;
  std::chrono::milliseconds initial_delay{0};
  std::chrono::milliseconds interval{5'000};
  std::chrono::milliseconds timeout{2'000};
  uint32_t failure_threshold = 3;
  uint32_t success_threshold = 1;
};

/// Empty if `spec` is usable, else "<field>: <reason>" (field names as in
/// the app spec: intervalSeconds, failureThreshold …).
std::string validate(const probe_spec& spec);

/// What one probe found.
enum class probe_verdict : uint8_t {
  healthy,
  unhealthy,
  /// Not run (the prober was overloaded): counts neither way.
  skipped,
};

/// unknown until the thresholds decide; then healthy or unhealthy.
enum class health_status : uint8_t { unknown, healthy, unhealthy };

/// "unknown", "healthy" or "unhealthy".
const char* to_string(health_status x);

/// Counts consecutive results against the thresholds. Status starts unknown
/// (a readiness probe's instance is not ready yet; a liveness probe has not
/// failed yet) and changes after failure_threshold consecutive failures or
/// success_threshold consecutive successes.
class health_tracker {
public:
  health_tracker(uint32_t failure_threshold, uint32_t success_threshold);

  /// Adds one result; returns the new status when it changed.
  std::optional<health_status> record(probe_verdict verdict, int64_t at_ns,
                                      const std::string& error);

  health_status status() const { return status_; }
  uint32_t consecutive_failures() const { return failures_; }
  uint32_t consecutive_successes() const { return successes_; }
  /// Wall-clock time of the last counted result (0: none yet).
  int64_t last_check_ns() const { return last_check_ns_; }
  /// The last failure's error, kept after recovery so status shows why it failed.
  const std::string& last_error() const { return last_error_; }

private:
  uint32_t failure_threshold_;
  uint32_t success_threshold_;
  health_status status_ = health_status::unknown;
  uint32_t failures_ = 0;
  uint32_t successes_ = 0;
  int64_t last_check_ns_ = 0;
  std::string last_error_;
};

/// What a probe decides: readiness gates traffic, liveness failures restart.
enum class probe_role : uint8_t { readiness, liveness };

/// "readiness" or "liveness".
const char* to_string(probe_role x);

/// The name of a status change as the owner announces it: readiness
/// "ready"/"unready", liveness "live"/"live_failed".
const char* transition_event(probe_role role, health_status now);

} // namespace troupe::apps
