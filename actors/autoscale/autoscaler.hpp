#pragma once

// One app's autoscaler (issue 14), started by the app manager while the app
// is up with `scaling.policy.mode: auto`. Each `evaluationSeconds` it reads
// what the node already measures — the app's status (desired, ready) and
// CPU/RSS sums from the app manager, connections and the last request from
// the traffic actor, the request counter and the latency window from the
// metrics registry — turns it into one observation, lets the decision engine
// (actors/autoscale/decide) decide, and sends what is worth recording to the
// app manager, which applies a change (only `desired`) and records changes
// and holds alike. It never touches instances itself.
//
// Queue inputs (KEDA-style): `queue.jobs` asks the job controller how many
// queued jobs carry the label; `queue.redis` runs LLEN on its own
// connection (persistence/redis: reconnects on demand, every call bounded by
// a timeout) — that blocks the actor for up to the timeout, so an
// autoscaler with a Redis queue runs detached (the node's seam spawns it
// so). The proxy's request held at zero (`activate_atom`) starts an
// evaluation at once instead of at the next tick.

#include <chrono>
#include <optional>
#include <string>

#include "actors/autoscale/decide.hpp"
#include "actors/interfaces.hpp"
#include "persistence/redis.hpp"

namespace troupe {

struct autoscaler_state {
  static inline const char* name = "autoscaler";
  std::string app;
  std::optional<autoscale::engine> engine;
  std::chrono::seconds interval{5};
  /// The app's request counter at the last evaluation (-1: none yet) and when.
  double last_total = -1;
  int64_t last_at_ns = 0;
  uint64_t evaluations = 0;
  /// Desired replicas as the last evaluation left them (-1: none yet), and
  /// what they were before it.
  int expected = -1;
  int expected_from = -1;
  /// The last recorded decision's rule and reason.
  std::string last_rule;
  std::string last_reason;
  /// An evaluation is gathering its inputs; another was asked meanwhile
  /// (an activation): it follows at once.
  bool evaluating = false;
  bool again = false;
  uint64_t activations = 0;
  /// queue.redis: its key, its connection (nullptr: the URL does not
  /// parse), and the last failure (named in status, logged once per change).
  std::string redis_key;
  std::unique_ptr<redis::client> redis;
  std::string redis_error;
  /// queue.jobs: the label NAME=VALUE counted.
  std::string jobs_label;
};

/// How long a queue.redis connect or LLEN may block an autoscaler.
inline constexpr std::chrono::milliseconds queue_redis_timeout{1'000};

autoscaler_actor::behavior_type
autoscaler(autoscaler_actor::stateful_pointer<autoscaler_state> self, std::string app,
           app_scaling_policy policy, autoscale::bounds limits);

} // namespace troupe
