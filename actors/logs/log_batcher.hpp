#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include <caf/actor_clock.hpp>

#include "actors/interfaces.hpp"
#include "actors/logs/loki.hpp"
#include "http/http_client.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/config.hpp"

namespace troupe::metrics {
class gauge_board;
} // namespace troupe::metrics

namespace troupe {

struct log_batcher_state {
  static inline const char* name = "log_batcher";
  std::shared_ptr<persistence::lmdb_env> env;
  loki_config cfg;
  http::url base;
  /// Last seq shipped (or dropped); persisted as meta `loki.cursor`.
  uint64_t cursor = 0;
  /// Last seq known to be committed.
  uint64_t head = 0;
  int failures = 0;
  std::optional<loki::breaker> breaker;
  /// What the batcher waits for: nothing, a batch to fill up (new entries
  /// re-evaluate at once), or a backoff/breaker cooldown (they do not).
  enum class wait_kind { none, batch, backoff } waiting = wait_kind::none;
  /// Number of the current timer; a timer with another number is stale.
  uint64_t wait_gen = 0;
  uint64_t shipped = 0;
  uint64_t rejected = 0;
  uint64_t dropped = 0;
  std::string last_error;
  /// Last lag reported to the metrics registry, and when (actor clock).
  /// Where the lag gauge is kept (null: no gauge).
  std::shared_ptr<metrics::gauge_board> gauges;
  /// When the pending batch starting after `pending_after` was first seen
  /// (actor clock): a batch's age is the larger of this and its timestamps.
  uint64_t pending_after = UINT64_MAX;
  caf::actor_clock::time_point pending_since;
  std::mt19937_64 rng{std::random_device{}()};
  /// Label sets and levels seen in the table, for the push body's streams.
  persistence::label_cache labels;
  std::map<std::string, uint32_t> levels;
};

/// The Loki sink: reads the `logs` table after its cursor at its own pace,
/// pushes batches (100 entries, 1 MiB or 1 s by default) to
/// `{url}/loki/api/v1/push`, retries outages with jittered exponential
/// backoff behind a circuit breaker (honouring Retry-After), skips batches
/// Loki rejects as bad (400), and keeps at most `outbox_bytes` unshipped
/// (dropping and counting the oldest beyond). The cursor survives restarts,
/// so nothing committed is lost and nothing shipped is sent twice. Blocking
/// HTTP: spawn it detached.
log_batcher_actor::behavior_type
log_batcher(log_batcher_actor::stateful_pointer<log_batcher_state> self,
            std::shared_ptr<persistence::lmdb_env> env, loki_config cfg,
            std::shared_ptr<metrics::gauge_board> gauges);

} // namespace troupe
