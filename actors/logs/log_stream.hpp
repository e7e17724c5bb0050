#pragma once

#include <memory>
#include <optional>

#include "actors/core/replay.hpp"
#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"

namespace troupe {

/// A follower: a log subscriber that also paces its own store reads.
using log_stream_actor = log_subscriber_actor::extend<caf::reacts_to<replay_atom>>;

struct log_stream_state {
  static inline const char* name = "log_stream";
  persistence::log_query query;
  /// Where the client is in the `logs` table (global seqs, lines filtered
  /// out included), and its replays.
  replay_follow follow;
};

/// Feeds one client of `GET /logs?follow=true`: replays stored matches after
/// Last-Event-ID (if given), paced by the client, then forwards new matching
/// records live. A live batch that does not follow on what was seen (the
/// router forwards only while it has subscribers) sends it back to the store.
log_stream_actor::behavior_type
log_stream(log_stream_actor::stateful_pointer<log_stream_state> self,
           std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
           persistence::log_query query, std::optional<uint64_t> last_event_id);

/// Reads stored matches of `query` for a replay_follow: a page after the
/// cursor, bounded also in lines looked at (however sparse the filter).
replay_follow::reader log_reader(std::shared_ptr<persistence::lmdb_env> env,
                                 persistence::log_query query);

} // namespace troupe
