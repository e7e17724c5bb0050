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

#include <chrono>
#include <optional>
#include <string>

#include "actors/autoscale/decide.hpp"
#include "actors/interfaces.hpp"

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
  /// The last recorded decision's rule and reason.
  std::string last_rule;
  std::string last_reason;
};

autoscaler_actor::behavior_type
autoscaler(autoscaler_actor::stateful_pointer<autoscaler_state> self, std::string app,
           app_scaling_policy policy, autoscale::bounds limits);

} // namespace troupe
