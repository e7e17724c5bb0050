#pragma once

#include <optional>
#include <string>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "persistence/events.hpp"

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

} // namespace troupe
