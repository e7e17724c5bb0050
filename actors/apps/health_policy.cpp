#include "actors/apps/health_policy.hpp"

#include <algorithm>

namespace troupe::apps {

const char* to_string(probe_kind x) {
  switch (x) {
  case probe_kind::http:
    return "http";
  case probe_kind::tcp:
    return "tcp";
  case probe_kind::exec:
    return "exec";
  }
  return "http";
}

const char* to_string(health_status x) {
  switch (x) {
  case health_status::unknown:
    return "unknown";
  case health_status::healthy:
    return "healthy";
  case health_status::unhealthy:
    return "unhealthy";
  }
  return "unknown";
}

std::string validate(const probe_spec& spec) {
  using namespace std::chrono_literals;
  if (spec.kind != probe_kind::exec && spec.port == 0)
    return "port: must be between 1 and 65535";
  if (spec.kind == probe_kind::http && (spec.path.empty() || spec.path.front() != '/'))
    return "path: must start with /";
  // A path goes into the request line: CR, LF or spaces would forge it.
  if (spec.kind == probe_kind::http && spec.path.find_first_of(" \r\n\t") != std::string::npos)
    return "path: must not contain whitespace";
  if (spec.kind == probe_kind::exec && spec.command.empty())
    return "command: must not be empty";
  if (spec.initial_delay < 0ms)
    return "initialDelaySeconds: must be >= 0";
  if (spec.interval <= 0ms)
    return "intervalSeconds: must be > 0";
  if (spec.timeout <= 0ms)
    return "timeoutSeconds: must be > 0";
  if (spec.failure_threshold == 0)
    return "failureThreshold: must be >= 1";
  if (spec.success_threshold == 0)
    return "successThreshold: must be >= 1";
  return {};
}

health_tracker::health_tracker(uint32_t failure_threshold, uint32_t success_threshold)
    : failure_threshold_(std::max<uint32_t>(failure_threshold, 1)),
      success_threshold_(std::max<uint32_t>(success_threshold, 1)) {}

std::optional<health_status> health_tracker::record(probe_verdict verdict, int64_t at_ns,
                                                    const std::string& error) {
  if (verdict == probe_verdict::skipped)
    return std::nullopt;
  last_check_ns_ = at_ns;
  auto next = status_;
  if (verdict == probe_verdict::healthy) {
    failures_ = 0;
    ++successes_;
    if (successes_ >= success_threshold_)
      next = health_status::healthy;
  } else {
    successes_ = 0;
    ++failures_;
    last_error_ = error;
    if (failures_ >= failure_threshold_)
      next = health_status::unhealthy;
  }
  if (next == status_)
    return std::nullopt;
  status_ = next;
  return next;
}

const char* to_string(probe_role x) {
  return x == probe_role::readiness ? "readiness" : "liveness";
}

const char* transition_event(probe_role role, health_status now) {
  bool good = now == health_status::healthy;
  if (role == probe_role::readiness)
    return good ? "ready" : "unready";
  return good ? "live" : "live_failed";
}

} // namespace troupe::apps
