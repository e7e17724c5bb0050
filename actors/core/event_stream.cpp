#include "actors/core/event_stream.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"

namespace troupe {

namespace {

using self_ptr = event_stream_actor::stateful_pointer<event_stream_state>;

constexpr size_t events_per_page = 500;

/// Writes one event; false when the stream is gone or the node is stopping
/// (a live `node.shutting_down`: a replayed one is an earlier run's).
bool send_event(self_ptr self, const replay_item& item, bool live) {
  auto& stream = self->state.follow.stream();
  if (!stream.send(std::to_string(item.seq), item.event, item.data))
    return false;
  if (live && item.event == "node.shutting_down") {
    stream.close();
    return false;
  }
  return true;
}

} // namespace

replay_item event_item(const event& ev) {
  return {ev.seq, ev.type, to_json(ev)};
}

replay_follow::reader event_reader(std::shared_ptr<persistence::lmdb_env> env) {
  return [env](uint64_t after, replay_fill& fill) {
    replay_page page;
    page.covered = after;
    env->read([&](persistence::txn& t) {
      t.scan("events", persistence::seq_key(after + 1),
             [&](std::string_view k, std::string_view v) {
               auto item = event_item(persistence::decode_stored(persistence::seq_from_key(k), v));
               if (!fill.take(sse_event_bytes(std::to_string(item.seq), item.event, item.data))) {
                 page.more = true; // the next page starts with this event
                 return false;
               }
               page.covered = item.seq;
               page.items.push_back(std::move(item));
               return !(page.more = fill.full());
             });
    });
    return page;
  };
}

namespace {

/// Lookups of a bus that is not running yet: 100 x 100 ms.
constexpr int max_attach_attempts = 100;

/// Subscribes to the bus and starts the replay; retried while the bus is
/// not running (the node is starting), the stream closed after the last try.
void attach(self_ptr self) {
  auto& st = self->state;
  auto bus = lookup(self->system(), names::event_bus);
  if (!bus) {
    if (++st.attempts >= max_attach_attempts) {
      st.follow.stream().close();
      self->quit();
      return;
    }
    self->delayed_send(self, std::chrono::milliseconds(100), replay_atom::value);
    return;
  }
  st.attached = true;
  st.follow.end_with(self, *bus);
  // Subscribe before reading the store: an event committed after the read is
  // then guaranteed to arrive live (duplicates are skipped by seq).
  self->send(*bus, subscribe_atom::value, event_subscriber_actor{self});
  st.follow.stream().comment("subscribed");
  if (st.last_event_id) {
    // Past the newest event (a client's guess) means: from the newest on.
    auto newest = st.env->read([](persistence::txn& t) { return t.last_seq("events"); });
    st.follow.resume_after(std::min(*st.last_event_id, newest));
    st.follow.start(self);
  }
}

} // namespace

event_stream_actor::behavior_type event_stream(self_ptr self,
                                               std::shared_ptr<http::sse_stream> stream,
                                               std::shared_ptr<persistence::lmdb_env> env,
                                               std::optional<uint64_t> last_event_id) {
  auto& st = self->state;
  st.follow = replay_follow{stream, events_per_page, event_reader(env)};
  st.env = std::move(env);
  st.last_event_id = last_event_id;
  st.follow.end_with_client(self);
  attach(self);
  return {
      [self](const event& ev) {
        // Events without a seq were never stored: they go out as they come.
        if (ev.seq != 0 && !self->state.follow.admit(self, ev.seq))
          return;
        if (!send_event(self, event_item(ev), true))
          self->quit();
      },
      [self](replay_atom) {
        if (!self->state.attached) {
          attach(self);
          return;
        }
        self->state.follow.step(
            self, [self](const replay_item& item) { return send_event(self, item, false); });
      },
  };
}

} // namespace troupe
