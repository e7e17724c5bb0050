#pragma once

// The metrics registry and its metric_window actors (one per series).
//
// Producers: actors send `metric_deltas` (batched); hot paths that are no
// actors (HTTP io threads) fill a metrics::recorder that the registry drains
// on its tick (a pull source), so a request costs one short lock, never a
// message. Gauges are sampled into their windows on every tick.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/actor_clock.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "actors/metrics/window_ring.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

struct metric_window_state {
  static inline const char* name = "metric_window";
  const metrics::family* fam = nullptr;
  std::vector<std::string> labels;
  std::unique_ptr<metrics::window_ring> ring;
  /// Counter: lifetime total. Gauge: current value.
  double value = 0;
  bool has_value = false;
  /// Histogram: lifetime counts per bucket.
  std::vector<uint64_t> buckets;
};

/// One series of `fam` with these label values.
metric_window_actor::behavior_type
metric_window(metric_window_actor::stateful_pointer<metric_window_state> self,
              const metrics::family* fam, std::vector<std::string> labels,
              double relative_accuracy);

/// Pull sources of the registry: called on every tick (from the registry's
/// thread), each returns what it gathered since the last call.
using metric_source = std::function<metric_deltas()>;

struct metrics_state {
  static inline const char* name = "metrics";
  struct series {
    const metrics::family* fam = nullptr;
    std::vector<std::string> labels;
    metric_window_actor hdl;
  };
  metrics_config cfg;
  metrics::naming names;
  std::string node;
  std::vector<metric_source> sources;
  std::unordered_map<std::string, series> by_id;
  std::vector<metric_window_actor> gauges;
  std::map<std::string, metric_snapshots> proxied;
  double last_activity = 0;
  uint64_t heartbeat = 0;
  uint64_t dropped = 0;
  /// The cap was reported in the log (by the registry / by the recorder).
  bool cap_logged = false;
  bool recorder_cap_logged = false;
  /// Callers waiting for the collection in flight (scrapes arriving while
  /// one runs share it instead of fanning out again).
  std::vector<std::function<void(const metric_snapshots&)>> collect_waiters;
  /// Series that did not answer a collection in time (cumulative).
  uint64_t collect_timeouts = 0;
  /// Cached exposition and when it was rendered (actor clock).
  std::string cached;
  caf::actor_clock::time_point cached_at;
  bool has_cache = false;
};

/// The registry. `sources` are drained every `cfg.sample_interval`.
metrics_actor::behavior_type metrics_registry(metrics_actor::stateful_pointer<metrics_state> self,
                                              metrics_config cfg, std::string node,
                                              std::vector<metric_source> sources);

/// Sends deltas to the registry registered as `metrics` (dropped silently if
/// it is not running: metrics must never stall the work they measure).
void report_metrics(caf::actor_system& sys, metric_deltas deltas);

/// One window's summary as messages carry it (a counter's rate: its sum per second).
metric_window_stats to_stats(const metrics::window_stats& w, metrics::kind k);

/// The 1m, 15m and 1h windows of `ring` as of `now`.
std::vector<metric_window_stats> window_summary(const metrics::window_ring& ring,
                                                metrics::window_ring::clock::time_point now,
                                                metrics::kind k);

/// A gauge delta.
metric_delta gauge_delta(std::string family, std::vector<std::string> labels, double value);

/// A single histogram observation as a delta.
metric_delta histogram_delta(const metrics::family& fam, std::vector<std::string> labels,
                             double value, double relative_accuracy = 0.01);

} // namespace troupe
