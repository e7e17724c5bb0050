#pragma once

// Rendering of the registry's series: Prometheus text exposition 0.0.4,
// the /monitoring/system JSON document, and its inverse (proxy mode reads
// an upstream's document back into snapshots). Pure functions.

#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "actors/interfaces.hpp"
#include "actors/metrics/metrics_model.hpp"

namespace troupe::metrics {

/// Everything a render needs from the registry.
struct registry_view {
  const metric_snapshots* local = nullptr;
  /// Proxy mode: upstream base URL → its series.
  const std::map<std::string, metric_snapshots>* proxied = nullptr;
  double last_activity = 0;
  uint64_t heartbeat = 0;
  size_t series = 0;
  uint64_t dropped = 0;
  std::string node;
  std::string mode;
};

/// The exposition: per family its counter/gauge/histogram samples, then the
/// windows — a summary `<name>_window{window, quantile}` (p50/p95/p99 with
/// _sum/_count per window), `<name>_window_max{window}`, `<name>_window_rate{window}` (counters
/// and histograms) — and `<name>_max` (largest value since start). Proxied
/// series carry an extra `upstream` label.
std::string render_prometheus(const registry_view& v, const naming& names);

/// The /monitoring/system document: a `system` summary in the seed's shape
/// (sse, queue depth/pressure/wait, pool utilisation, task and REST latency)
/// and every series with its windows.
std::string render_monitoring(const registry_view& v, const naming& names);

/// One series as JSON (also what Redis mode writes back).
nlohmann::json snapshot_json(const metric_snapshot& s, const naming& names);

/// Reads the `series` of a /monitoring/system document back; series of
/// unknown families are skipped. nullopt with `error` if malformed.
std::optional<metric_snapshots> snapshots_from_monitoring(std::string_view doc, std::string* error);

} // namespace troupe::metrics
