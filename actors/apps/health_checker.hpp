#pragma once

// One health checker per instance and probe role: probes on the spec's
// schedule (initialDelaySeconds, then every intervalSeconds), counts results
// against the thresholds (actors/apps/health_policy.hpp) and tells its owner
// of every status change. Probes run on the node's prober, never on an
// actor thread.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <caf/typed_event_based_actor.hpp>

#include "actors/apps/health_policy.hpp"
#include "actors/apps/probes.hpp"
#include "actors/interfaces.hpp"

namespace troupe::apps {

struct health_checker_config {
  /// The instance's id (reports carry it).
  std::string instance;
  probe_role role = probe_role::readiness;
  /// What to probe and where (spec, host, env and cwd for exec probes).
  probe_request request;
  /// Until the first healthy result, probe at most this far apart (if
  /// shorter than the interval; zero: off), starting at 5 ms and doubling:
  /// an instance starting up is seen ready within a few ms of answering (a
  /// cold start waits for it), not up to intervalSeconds later. Only for
  /// readiness: liveness failures before a first success restart.
  std::chrono::milliseconds startup_interval{0};
};

struct health_checker_state {
  static inline const char* name = "health_checker";
  health_checker_config cfg;
  health_owner_actor owner;
  std::shared_ptr<prober> probes;
  std::optional<health_tracker> tracker;
  /// Number of the last probe started; results of other probes are stale.
  uint64_t seq = 0;
  bool in_flight = false;
  /// The next probe came due while one was still running.
  bool due = false;
  /// A probe has been healthy (start-up probing is over).
  bool ever_healthy = false;
  /// The next start-up gap (doubles up to cfg.startup_interval).
  std::chrono::milliseconds startup_next{5};

  health_report report() const;
};

/// Spawn with `sys.spawn(health_checker, cfg, owner, prober)`. Quits with
/// ec::invalid_argument naming the field if the probe spec is invalid.
health_checker_actor::behavior_type
health_checker(health_checker_actor::stateful_pointer<health_checker_state> self,
               health_checker_config cfg, health_owner_actor owner, std::shared_ptr<prober> probes);

} // namespace troupe::apps
