#include "actors/event_stream.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/event_bus.hpp"
#include "actors/names.hpp"

namespace troupe {

namespace {

using self_ptr = event_subscriber_actor::stateful_pointer<event_stream_state>;

/// Writes one event; false when the stream is gone or the node is stopping.
bool forward(self_ptr self, const event& ev) {
  auto& st = self->state;
  if (ev.seq != 0 && ev.seq <= st.last_sent)
    return true;
  st.last_sent = std::max(st.last_sent, ev.seq);
  if (!st.stream->send(std::to_string(ev.seq), ev.type, to_json(ev)))
    return false;
  if (ev.type == "node.shutting_down") {
    st.stream->close();
    return false;
  }
  return true;
}

} // namespace

event_subscriber_actor::behavior_type
event_stream(self_ptr self, std::shared_ptr<http::sse_stream> stream,
             std::shared_ptr<persistence::lmdb_env> env, std::optional<uint64_t> last_event_id) {
  self->state.stream = stream;
  auto bus = lookup<event_bus_actor>(self->system(), names::event_bus);
  if (!bus) {
    stream->close();
    self->quit();
    return {[](const event&) {}};
  }
  // The stream keeps this actor alive (the bus's reference goes with the
  // bus) until the client goes away; closing drops the callback and with it
  // the reference.
  stream->on_close([hdl = caf::actor_cast<caf::actor>(self)] {
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
  });
  self->monitor(bus);
  self->set_down_handler([self](caf::down_msg&) {
    // The bus restarted: end the stream; the client resumes with Last-Event-ID.
    self->state.stream->close();
    self->quit();
  });
  // Subscribe before reading the store: an event committed after the read is
  // then guaranteed to arrive live (duplicates are skipped by seq).
  self->send(bus, subscribe_atom::value, event_subscriber_actor{self});
  if (last_event_id) {
    auto from = *last_event_id;
    self->state.last_sent = from;
    for (;;) {
      auto page = read_events(*env, from, 1000);
      for (auto& ev : page)
        if (!forward(self, ev)) {
          self->quit();
          return {[](const event&) {}};
        }
      if (page.size() < 1000)
        break;
      from = page.back().seq;
    }
  }
  stream->comment("subscribed");
  return {
    [self](const event& ev) {
      if (!forward(self, ev))
        self->quit();
    },
  };
}

} // namespace troupe
