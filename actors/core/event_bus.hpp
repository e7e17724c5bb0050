#pragma once

#include <optional>
#include <string>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

struct event_bus_state {
  static inline const char* name = "event_bus";
  std::vector<event_subscriber_actor> subscribers;
  /// Events published (committed and delivered).
  uint64_t published = 0;
  /// Publishes waiting for the store.
  size_t in_flight = 0;
  std::vector<caf::typed_response_promise<ok_atom>> flush_waiters;
};

/// Persists each event through the store registered as `store` in the actor
/// registry, then delivers it to every subscriber in sequence order.
event_bus_actor::behavior_type event_bus(event_bus_actor::stateful_pointer<event_bus_state> self,
                                         std::string node_name);

/// A new event of `type` with a JSON object payload `data`, stamped now.
event make_event(std::string type, std::string data = "{}");

/// The event as the API shows it: {"seq","ts","type","node","data"}.
std::string to_json(const event& e);

/// Reads stored events with seq > `since`, oldest first, at most `limit`.
std::vector<event> read_events(const persistence::lmdb_env& env, uint64_t since, size_t limit);

/// The store op that removes events older than `max_age_ns`, oldest first, at
/// most `max_events` (`more` says whether that cut it short). The newest event
/// always stays: the next one's seq follows it, so a seq is never given twice
/// (clients resume with Last-Event-ID). nullopt when nothing is due.
std::optional<write_op> plan_event_trim(const persistence::lmdb_env& env, int64_t now_ns,
                                        int64_t max_age_ns, size_t max_events, bool& more);

/// Storage encoding of an event (the seq is the key).
std::string encode_stored(const event& e);
event decode_stored(uint64_t seq, std::string_view value);

} // namespace troupe
