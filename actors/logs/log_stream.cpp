#include "actors/logs/log_stream.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/names.hpp"
#include "actors/core/replay_pacing.hpp"

namespace troupe {

namespace {

using self_ptr = log_stream_actor::stateful_pointer<log_stream_state>;

/// Matches read from the store per step of a catch-up, and lines looked at.
constexpr size_t catch_up_page = 500;
constexpr size_t catch_up_scan = 20'000;

bool forward(self_ptr self, const log_record& r) {
  auto& st = self->state;
  if (!st.query.matches(r))
    return true;
  return st.stream->send(std::to_string(r.seq), "log", persistence::to_api_json(r));
}

/// One page of stored matches after `seen` (bounded in events, bytes and
/// lines looked at); again until the end, paced by the client's backlog.
void catch_up(self_ptr self) {
  auto& st = self->state;
  auto budget = next_replay_page(self, *st.stream, catch_up_page);
  if (!budget)
    return;
  auto from = st.seen;
  uint64_t scanned = from;
  std::vector<std::pair<uint64_t, std::string>> page;
  replay_fill fill{budget};
  try {
    st.env->read([&](persistence::txn& t) {
      persistence::label_cache labels;
      size_t looked = 0;
      bool stopped = false;
      persistence::scan_logs(t, from, [&](const persistence::stored_line& s) {
        if (st.query.matches(s)) {
          auto& l = labels.get(t, s.labels);
          if (st.query.matches(l, s)) {
            std::string data;
            persistence::append_api_json(data, s, l);
            if (!fill.take(sse_event_bytes(std::to_string(s.seq), "log", data))) {
              stopped = true; // the next page starts with this line
              return false;
            }
            page.emplace_back(s.seq, std::move(data));
          }
        }
        scanned = s.seq;
        if (++looked < catch_up_scan && !fill.full())
          return true;
        stopped = true;
        return false;
      });
      // Ran off the end: everything ever numbered was looked at (the newest
      // lines may be gone; paging must not stay before them).
      if (!stopped)
        scanned = std::max(scanned, persistence::log_high_water(t));
    });
  } catch (const std::exception&) {
    st.stream->close();
    self->quit();
    return;
  }
  for (auto& [seq, data] : page)
    if (!st.stream->send(std::to_string(seq), "log", data)) {
      self->quit();
      return;
    }
  st.seen = scanned;
  if (scanned != from) {
    self->send(self, replay_atom::value);
    return;
  }
  st.catching_up = false; // at the end of the table: live from here
}

void start_catch_up(self_ptr self) {
  if (self->state.catching_up)
    return;
  self->state.catching_up = true;
  self->send(self, replay_atom::value);
}

} // namespace

log_stream_actor::behavior_type log_stream(self_ptr self, std::shared_ptr<http::sse_stream> stream,
                                           std::shared_ptr<persistence::lmdb_env> env,
                                           persistence::log_query query,
                                           std::optional<uint64_t> last_event_id) {
  auto& st = self->state;
  st.stream = stream;
  st.env = std::move(env);
  st.query = std::move(query);
  auto router = lookup(self->system(), names::logs);
  if (!router) {
    stream->close();
    self->quit();
    return {[](const log_batch&) {}, [](replay_atom) {}};
  }
  // The stream keeps this actor alive until the client goes away.
  stream->on_close([hdl = caf::actor_cast<caf::actor>(self)] {
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
  });
  self->monitor(*router);
  self->set_down_handler([self](caf::down_msg&) {
    self->state.stream->close();
    self->quit();
  });
  // Subscribe first, then read the store: nothing committed in between is
  // missed, and what both deliver is told apart by seq.
  self->send(*router, subscribe_atom::value, log_subscriber_actor{self});
  stream->comment("following");
  if (last_event_id) {
    st.seen = std::min(*last_event_id, persistence::last_log_record_seq(*st.env));
    start_catch_up(self);
  }
  return {
      [self](const log_batch& batch) {
        auto& st = self->state;
        if (batch.empty() || st.catching_up)
          return; // the store read in progress reaches these lines
        if (st.seen == UINT64_MAX)
          st.seen = batch.front().seq - 1; // following from now
        if (batch.front().seq > st.seen + 1 || client_behind(*st.stream)) {
          // Lines committed while the router forwarded nothing, or a client
          // too far behind to queue more for: read them (and this batch) from
          // the store at the client's pace.
          start_catch_up(self);
          return;
        }
        for (auto& r : batch) {
          if (r.seq <= st.seen)
            continue;
          st.seen = r.seq;
          if (!forward(self, r)) {
            self->quit();
            return;
          }
        }
      },
      [self](replay_atom) { catch_up(self); },
  };
}

} // namespace troupe
