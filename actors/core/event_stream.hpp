#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "actors/core/replay.hpp"
#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

/// A subscriber that also paces its own replay from the store.
using event_stream_actor = event_subscriber_actor::extend<caf::reacts_to<replay_atom>>;

struct event_stream_state {
  static inline const char* name = "event_stream";
  /// Where the client is in the `events` table, and its replays.
  replay_follow follow;
  /// Subscribed to the event bus; until then (a node still starting, a bus
  /// restarting) lookups are retried, `attempts` of them so far.
  bool attached = false;
  int attempts = 0;
  std::shared_ptr<persistence::lmdb_env> env;
  std::optional<uint64_t> last_event_id;
};

/// Feeds one SSE client of `GET /events`: subscribes to the event bus (waiting
/// up to 10 s for one that is not running yet: a node that is still
/// starting), first replays stored events after `last_event_id` (when given),
/// then forwards live ones; ends the stream after `node.shutting_down` or when
/// the bus goes away.
event_stream_actor::behavior_type
event_stream(event_stream_actor::stateful_pointer<event_stream_state> self,
             std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
             std::optional<uint64_t> last_event_id);

/// The event as a stream item: its seq, type and JSON.
replay_item event_item(const event& ev);

/// Reads stored events for a replay_follow (a page after the cursor).
replay_follow::reader event_reader(std::shared_ptr<persistence::lmdb_env> env);

} // namespace troupe
