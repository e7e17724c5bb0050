#pragma once

#include <memory>
#include <optional>

#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"

namespace troupe {

/// A follower: a log subscriber that also paces its own store reads.
using log_stream_actor = log_subscriber_actor::extend<caf::reacts_to<replay_atom>>;

struct log_stream_state {
  static inline const char* name = "log_stream";
  std::shared_ptr<http::sse_stream> stream;
  std::shared_ptr<persistence::lmdb_env> env;
  persistence::log_query query;
  /// Highest global seq looked at (sent or filtered out); UINT64_MAX until
  /// the first live batch when following from now.
  uint64_t seen = UINT64_MAX;
  /// Reading the store (resuming, filling a gap, or a client that fell
  /// behind): live batches are dropped meanwhile, the store read reaches them.
  bool catching_up = false;
};

/// Feeds one client of `GET /logs?follow=true`: replays stored matches after
/// Last-Event-ID (if given), paced by the client, then forwards new matching
/// records live. A live batch that does not follow on what was seen (the
/// router forwards only while it has subscribers) sends it back to the store.
log_stream_actor::behavior_type
log_stream(log_stream_actor::stateful_pointer<log_stream_state> self,
           std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
           persistence::log_query query, std::optional<uint64_t> last_event_id);

} // namespace troupe
