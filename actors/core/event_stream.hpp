#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

/// A subscriber that also paces its own replay from the store.
using event_stream_actor = event_subscriber_actor::extend<caf::reacts_to<replay_atom>>;

struct event_stream_state {
  static inline const char* name = "event_stream";
  std::shared_ptr<http::sse_stream> stream;
  std::shared_ptr<persistence::lmdb_env> env;
  /// Highest seq written to the stream; live events at or below it are
  /// duplicates of the replay and skipped.
  uint64_t last_sent = 0;
  /// Replaying from the store: live events are dropped meanwhile (the
  /// replay reaches them); one that skips a seq, or comes while the client
  /// is behind (replay_pacing.hpp), starts a replay again.
  bool replaying = false;
  /// last_sent says where the client is (a Last-Event-ID, or the first live
  /// event when following from now).
  bool tracking = false;
};

/// Feeds one SSE client of `GET /events`: subscribes to the event bus, first
/// replays stored events after `last_event_id` (when given), then forwards live
/// ones; ends the stream after `node.shutting_down` or when the bus goes away.
event_stream_actor::behavior_type
event_stream(event_stream_actor::stateful_pointer<event_stream_state> self,
             std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
             std::optional<uint64_t> last_event_id);

} // namespace troupe
