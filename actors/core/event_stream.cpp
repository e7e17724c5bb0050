#include "actors/core/event_stream.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/core/replay_pacing.hpp"

namespace troupe {

namespace {

using self_ptr = event_stream_actor::stateful_pointer<event_stream_state>;

constexpr size_t replay_page = 500;

/// Writes one event (`data` is its JSON); false when the stream is gone or
/// the node is stopping.
bool forward(self_ptr self, const event& ev, const std::string& data) {
  auto& st = self->state;
  if (ev.seq != 0 && ev.seq <= st.last_sent)
    return true;
  st.last_sent = std::max(st.last_sent, ev.seq);
  if (!st.stream->send(std::to_string(ev.seq), ev.type, data))
    return false;
  if (ev.type == "node.shutting_down") {
    st.stream->close();
    return false;
  }
  return true;
}

/// One page of stored events after last_sent (bounded in events and bytes),
/// the next once the client has taken it; live from the end of the table on.
void replay(self_ptr self) {
  auto& st = self->state;
  auto budget = next_replay_page(self, *st.stream, replay_page);
  if (!budget)
    return;
  std::vector<std::pair<event, std::string>> page;
  replay_fill fill{budget};
  bool refused = false;
  try {
    st.env->read([&](persistence::txn& t) {
      t.scan("events", persistence::seq_key(st.last_sent + 1),
             [&](std::string_view k, std::string_view v) {
               auto ev = persistence::decode_stored(persistence::seq_from_key(k), v);
               auto data = to_json(ev);
               if (!fill.take(sse_event_bytes(std::to_string(ev.seq), ev.type, data))) {
                 refused = true;
                 return false;
               }
               page.emplace_back(std::move(ev), std::move(data));
               return !fill.full();
             });
    });
  } catch (const std::exception&) {
    st.stream->close();
    self->quit();
    return;
  }
  for (auto& [ev, data] : page)
    if (!forward(self, ev, data)) {
      self->quit();
      return;
    }
  if (refused || fill.full()) {
    self->send(self, replay_atom::value);
    return;
  }
  st.replaying = false;
}

void start_replay(self_ptr self) {
  if (!self->state.replaying) {
    self->state.replaying = true;
    self->send(self, replay_atom::value);
  }
}

} // namespace

event_stream_actor::behavior_type event_stream(self_ptr self,
                                               std::shared_ptr<http::sse_stream> stream,
                                               std::shared_ptr<persistence::lmdb_env> env,
                                               std::optional<uint64_t> last_event_id) {
  self->state.stream = stream;
  self->state.env = std::move(env);
  auto bus = lookup(self->system(), names::event_bus);
  if (!bus) {
    stream->close();
    self->quit();
    return {[](const event&) {}, [](replay_atom) {}};
  }
  // The stream keeps this actor alive (the bus's reference goes with the
  // bus) until the client goes away; closing drops the callback and with it
  // the reference.
  stream->on_close([hdl = caf::actor_cast<caf::actor>(self)] {
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
  });
  self->monitor(*bus);
  self->set_down_handler([self](caf::down_msg&) {
    // The bus restarted: end the stream; the client resumes with Last-Event-ID.
    self->state.stream->close();
    self->quit();
  });
  // Subscribe before reading the store: an event committed after the read is
  // then guaranteed to arrive live (duplicates are skipped by seq).
  self->send(*bus, subscribe_atom::value, event_subscriber_actor{self});
  stream->comment("subscribed");
  if (last_event_id) {
    // Past the newest event (a client's guess) means: from the newest on.
    auto newest = self->state.env->read([](persistence::txn& t) { return t.last_seq("events"); });
    self->state.last_sent = std::min(*last_event_id, newest);
    self->state.tracking = true;
    start_replay(self);
  }
  return {
      [self](const event& ev) {
        auto& st = self->state;
        if (st.replaying && ev.seq != 0)
          return; // the replay reaches it
        if (!st.tracking && ev.seq != 0) {
          st.tracking = true; // following from now: this is where it starts
          st.last_sent = ev.seq - 1;
        }
        // Events the bus delivered before we listened, or a client too far
        // behind to queue more for: the store has them.
        if (ev.seq > st.last_sent + 1 || (ev.seq != 0 && client_behind(*st.stream))) {
          start_replay(self);
          return;
        }
        if (!forward(self, ev, to_json(ev)))
          self->quit();
      },
      [self](replay_atom) { replay(self); },
  };
}

} // namespace troupe
