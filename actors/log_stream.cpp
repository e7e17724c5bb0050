#include "actors/log_stream.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/names.hpp"

namespace troupe {

namespace {

using self_ptr = log_subscriber_actor::stateful_pointer<log_stream_state>;

bool forward(self_ptr self, const log_record& r) {
  auto& st = self->state;
  if (r.seq <= st.last_sent || !st.query.matches(r))
    return true;
  st.last_sent = r.seq;
  return st.stream->send(std::to_string(r.seq), "log", persistence::to_api_json(r));
}

} // namespace

log_subscriber_actor::behavior_type
log_stream(self_ptr self, std::shared_ptr<http::sse_stream> stream,
           std::shared_ptr<persistence::lmdb_env> env, persistence::log_query query,
           std::optional<uint64_t> last_event_id) {
  auto& st = self->state;
  st.stream = stream;
  st.query = std::move(query);
  auto router = lookup<log_router_actor>(self->system(), names::logs);
  if (!router) {
    stream->close();
    self->quit();
    return {[](const log_batch&) {}};
  }
  // The stream keeps this actor alive until the client goes away.
  stream->on_close([hdl = caf::actor_cast<caf::actor>(self)] {
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
  });
  self->monitor(router);
  self->set_down_handler([self](caf::down_msg&) {
    self->state.stream->close();
    self->quit();
  });
  // Subscribe first, then read the store: later records arrive live and
  // duplicates are skipped by seq.
  self->send(router, subscribe_atom::value, log_subscriber_actor{self});
  if (last_event_id) {
    st.last_sent = *last_event_id;
    uint64_t from = *last_event_id;
    for (;;) {
      uint64_t scanned = from;
      auto page = persistence::query_logs(*env, st.query, from, 1000, scanned);
      for (auto& r : page)
        if (!forward(self, r)) {
          self->quit();
          return {[](const log_batch&) {}};
        }
      if (scanned == from || page.size() < 1000)
        break;
      from = scanned;
    }
  }
  stream->comment("following");
  return {
    [self](const log_batch& batch) {
      for (auto& r : batch)
        if (!forward(self, r)) {
          self->quit();
          return;
        }
    },
  };
}

} // namespace troupe
