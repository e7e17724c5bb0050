#include "actors/core/event_bus.hpp"

#include <chrono>

#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/names.hpp"
#include "persistence/events.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

using nlohmann::json;

event make_event(std::string type, std::string data) {
  event e;
  e.ts_ns = now_ns();
  e.type = std::move(type);
  e.data = std::move(data);
  return e;
}

std::string to_json(const event& e) {
  auto data = json::parse(e.data, nullptr, false);
  if (data.is_discarded())
    data = json::object();
  json j{{"seq", e.seq},
         {"ts", rfc3339(e.ts_ns)},
         {"type", e.type},
         {"node", e.node},
         {"data", std::move(data)}};
  return j.dump();
}

namespace {

void publish_done(event_bus_actor::stateful_pointer<event_bus_state> self) {
  auto& st = self->state;
  if (--st.in_flight == 0) {
    for (auto& rp : st.flush_waiters)
      rp.deliver(ok_atom::value);
    st.flush_waiters.clear();
  }
}

/// Answers once no publish is waiting for the store.
caf::result<ok_atom> drained(event_bus_actor::stateful_pointer<event_bus_state> self) {
  if (self->state.in_flight == 0)
    return ok_atom::value;
  auto rp = self->make_response_promise<ok_atom>();
  self->state.flush_waiters.push_back(rp);
  return rp;
}

} // namespace

event_bus_actor::behavior_type event_bus(event_bus_actor::stateful_pointer<event_bus_state> self,
                                         std::string node_name) {
  self->set_down_handler(
      [self](caf::down_msg& dm) { drop_terminated(self->state.subscribers, dm.source); });
  return {
      [self, node_name](publish_atom, event& ev) -> caf::result<uint64_t> {
        auto store = lookup(self->system(), names::store);
        if (!store)
          return caf::make_error(ec::unavailable, std::string{"store is not running"});
        if (ev.node.empty())
          ev.node = node_name;
        if (ev.ts_ns == 0)
          ev.ts_ns = now_ns();
        write_batch batch{write_op{write_op::append, "events", {}, persistence::encode_stored(ev)}};
        auto rp = self->make_response_promise<uint64_t>();
        ++self->state.in_flight;
        // Responses come back in request order, so delivery follows seq order.
        self->request(*store, std::chrono::seconds(30), write_atom::value, std::move(batch))
            .then(
                [self, rp, ev](write_result& r) mutable {
                  ev.seq = r.appended.empty() ? 0 : r.appended.front();
                  ++self->state.published;
                  for (auto& sub : self->state.subscribers)
                    self->send(sub, ev);
                  rp.deliver(ev.seq);
                  publish_done(self);
                },
                [self, rp, ev](caf::error& err) mutable {
                  logging::get("event_bus")
                      ->error("event {} not persisted: {}", ev.type, caf::to_string(err));
                  rp.deliver(std::move(err));
                  publish_done(self);
                });
        return rp;
      },
      [self](subscribe_atom, event_subscriber_actor& sub) {
        self->monitor(sub);
        self->state.subscribers.push_back(std::move(sub));
      },
      [self](unsub_atom, const event_subscriber_actor& sub) {
        auto& subs = self->state.subscribers;
        subs.erase(std::remove(subs.begin(), subs.end(), sub), subs.end());
      },
      [self](shutdown_atom) { return drained(self); },
      [self](flush_atom) { return drained(self); },
  };
}

} // namespace troupe
