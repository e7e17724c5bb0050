#pragma once

#include <memory>
#include <optional>

#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"

namespace troupe {

struct log_stream_state {
  static inline const char* name = "log_stream";
  std::shared_ptr<http::sse_stream> stream;
  persistence::log_query query;
  uint64_t last_sent = 0;
};

/// Feeds one client of `GET /logs?follow=true`: replays stored matches after
/// Last-Event-ID (if given), then forwards new matching records live.
log_subscriber_actor::behavior_type
log_stream(log_subscriber_actor::stateful_pointer<log_stream_state> self,
           std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
           persistence::log_query query, std::optional<uint64_t> last_event_id);

} // namespace troupe
