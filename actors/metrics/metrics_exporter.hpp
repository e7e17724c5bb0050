#pragma once

// The export loop of the metrics registry (the seeds' metrics server
// scheduler): every `metrics.export_interval` it
//   - proxy mode: polls each upstream's /monitoring/system and hands the
//     series to the registry (re-exported with an `upstream` label);
//   - redis mode: folds the per-process SSE stats other processes publish
//     under {prefix}:{tenant}:{project}:sse:connections:{instance}:{pid}
//     into a gauge, and writes every series' windows back under
//     {prefix}:{tenant}:{project}:metrics:{series} with a TTL;
//   - pushes the exposition to the Pushgateway (PUT) if configured, and
//     deletes the group on clean shutdown.
// Detached: Redis and HTTP calls block.

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "actors/interfaces.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "http/http_client.hpp"
#include "persistence/redis.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

/// The exporter's latest status, readable without asking the actor: it is
/// detached and may be inside a blocking Redis or HTTP call, and a readiness
/// probe must not wait for that. Empty until the exporter has started.
class exporter_status {
public:
  void set(component_status x) {
    std::lock_guard<std::mutex> guard{mtx_};
    latest_ = std::move(x);
  }
  std::optional<component_status> get() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return latest_;
  }

private:
  mutable std::mutex mtx_;
  std::optional<component_status> latest_;
};

struct metrics_exporter_state {
  static inline const char* name = "metrics_exporter";
  metrics_config cfg;
  metrics::naming names;
  std::unique_ptr<redis::client> redis;
  std::optional<http::url> pushgateway;
  std::string push_path;
  std::vector<http::url> upstreams;
  std::shared_ptr<exporter_status> board;
  uint64_t cycles = 0;
  bool pushed = false;
  /// Set by shutdown: no further cycle runs, and a cycle still in flight
  /// does not push again after the group was deleted.
  bool stopping = false;
  /// Per exporter: {"status": ok|failing, "error", "last_success"}.
  std::string redis_status = "disabled";
  std::string redis_error;
  std::string push_status = "disabled";
  std::string push_error;
  std::string proxy_status = "disabled";
  std::string proxy_error;
  int64_t last_redis_ok_ns = 0;
  int64_t last_push_ok_ns = 0;
  uint64_t folded_keys = 0;
  uint64_t written_keys = 0;
};

metrics_exporter_actor::behavior_type
metrics_exporter(metrics_exporter_actor::stateful_pointer<metrics_exporter_state> self,
                 metrics_config cfg, bool schedule, std::shared_ptr<exporter_status> board);

/// Parses one published SSE stats value: a JSON object with `count` (or
/// `connections`/`value`) and `ts` (Unix seconds, or `timestamp`). nullopt
/// if malformed.
struct sse_stat {
  double count = 0;
  double ts = 0;
};
std::optional<sse_stat> parse_sse_stat(std::string_view value);

} // namespace troupe
