#pragma once

// The autoscaler's decisions (issue 14), pure: one engine per app, fed one
// observation per evaluation (`scaling.policy.evaluationSeconds`), answers
// what the replicas should be and why — or why they stay. No clock, no
// actors: the autoscaler actor gathers the observations from the metric
// windows and the instances' samples, and this decides. Deterministic, so
// the tests replay synthetic metric streams and assert exact sequences.
//
// The rules, in order:
// 1. Each configured metric proposes HPA's `ceil(current × observed /
//    target)` from its per-replica utilization (instances not yet ready
//    count as 0 load: the observed total is divided over `current`); within
//    `tolerance` of the target it proposes `current`. Latency proposes
//    `current + 1` while the window's p95 exceeds `maxP95LatencyMs`. An app
//    idle for `idleSeconds` with `minReplicas: 0` proposes 0. The largest
//    proposal wins.
// 2. Hysteresis (the seed's): a proposal above `current` counts only once
//    its metric has stayed above `scaleOutThresholdPct` of target for
//    `windowSeconds` and every proposal of that window was above `current`;
//    one below only once every metric has stayed below
//    `scaleInThresholdPct` for `windowSeconds`. A missing sample resets the
//    streaks (missing samples never cause a scale-in, idle included: an
//    unknown queue keeps an app up). A non-finite sample counts as missing.
// 3. Stabilization (HPA's behavior): up to the lowest recommendation of the
//    last `scaleUp.stabilizationWindowSeconds`, down to the highest of the
//    last `scaleDown.stabilizationWindowSeconds` (300 s by default).
// 4. Rate policies: at most Pods/Percent per periodSeconds (selectPolicy
//    Max, Min or Disabled).
// 5. `cooldownSeconds` since the last change; 6. min/max replicas.
// A held evaluation (a wanted change stopped by any rule) is reported once
// per rule and minute (and again after a change), not every evaluation.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "actors/apps/app_spec.hpp"

namespace troupe::autoscale {

/// One evaluation's inputs. Totals over the app's instances; nullopt: no
/// sample this time.
struct observation {
  /// Clock of the caller (the actor's), nanoseconds.
  int64_t at_ns = 0;
  /// Desired replicas now, and how many are ready.
  int current = 0;
  int ready = 0;
  std::optional<double> rps;
  std::optional<double> p95_ms;
  /// CPU percent summed over instances (100 = one core busy).
  std::optional<double> cpu_percent;
  std::optional<double> rss_bytes;
  std::optional<double> connections;
  std::optional<double> queue_redis;
  std::optional<double> queue_jobs;
  /// Same clock as at_ns; 0: never (idleness counts from the engine's start).
  int64_t last_request_ns = 0;
  /// Requests the proxy holds for the app while it has no ready instance
  /// (scale from zero): any wakes an app at zero at once.
  int64_t pending = 0;
};

/// What spec.scaling and spec.resources bound.
struct bounds {
  int min_replicas = 1;
  int max_replicas = 1;
  /// resources.cpu in thousandths of a CPU, resources.memory in bytes; 0:
  /// not set (that utilization metric then cannot be computed).
  uint64_t cpu_millis = 0;
  uint64_t memory_bytes = 0;
};

/// One evaluation's outcome, as /apps/{name}/scaling and the app.scaled /
/// app.scale_held events carry it.
struct decision {
  int64_t ts_ns = 0;
  /// The metric whose proposal won (rps, latency, cpu, memory, connections,
  /// queue_redis, queue_jobs, idle).
  std::string metric;
  /// The window the rule looked at, e.g. "20s" (hysteresis) or "300s".
  std::string window;
  double observed = 0;
  double target = 0;
  int proposal = 0;
  int from = 0;
  int to = 0;
  /// scale_out, scale_in, or what held it: tolerance, hysteresis,
  /// stabilization, rate_policy, cooldown, min_replicas, max_replicas,
  /// missing_samples.
  std::string rule;
  std::string reason;
  bool changed() const { return to != from; }
};

class engine {
public:
  engine(app_scaling_policy policy, bounds limits, int64_t start_ns);

  /// Decides for one observation. nullopt: nothing worth recording (no
  /// change wanted, or the same hold as the last one).
  std::optional<decision> evaluate(const observation& o);

  /// Replicas changed by someone else (the API's /scale, a restart): the
  /// engine's rate and cooldown bookkeeping counts it.
  void note_change(int64_t at_ns, int from, int to);

private:
  struct metric_value {
    std::string name;
    std::optional<double> observed;
    /// Per replica (rps, connections, queues) or the percent of a replica's
    /// resources (cpu, memory); 0: the metric is not configured.
    double target = 0;
    /// At zero replicas only more than this wakes the app (a queue's
    /// activationLength; 0 for the rest: any load). While a queue is above
    /// it the app is not idle.
    double activation = 0;
    bool queue = false;
  };
  struct streak {
    int64_t above_since = -1;
    int64_t below_since = -1;
    /// Each evaluation's raw proposal within the last windowSeconds: a
    /// scale-out needs every one above `current` (a spike within a load
    /// that sits at target moves nothing).
    std::deque<std::pair<int64_t, int>> raws;
  };
  struct proposal {
    std::string metric;
    double observed = 0;
    double target = 0;
    int replicas = 0;
    /// Why not acted on, if it is held by this metric's own rules.
    std::string held_rule;
    std::string held_reason;
  };

  std::vector<metric_value> metrics(const observation& o) const;
  int stabilized(int64_t now, int proposal, int current, std::string* why) const;
  int rate_limited(int64_t now, int proposal, int current, std::string* why) const;
  std::optional<decision> held(decision d);

  app_scaling_policy policy_;
  bounds limits_;
  int64_t start_ns_;
  std::map<std::string, streak> streaks_;
  /// Recommendations (after hysteresis) with their time, for stabilization.
  std::deque<std::pair<int64_t, int>> recommendations_;
  /// Changes of replicas: time, from, to (for the rate policies).
  std::deque<std::tuple<int64_t, int, int>> changes_;
  int64_t last_change_ns_ = -1;
  /// When each hold (rule, replicas) was last reported: the same one is
  /// reported again only after hold_repeat_ns, or after a change.
  std::map<std::pair<std::string, int>, int64_t> holds_;
  static constexpr int64_t hold_repeat_ns = 60'000'000'000;
};

/// The thresholds and window the seed puts under `http` (their defaults
/// when the app has no http block): they apply to every metric.
app_scaling_policy::http_metric hysteresis_of(const app_scaling_policy& p);

} // namespace troupe::autoscale
