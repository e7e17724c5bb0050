#include "actors/logs/log_stream.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/names.hpp"

namespace troupe {

namespace {

using self_ptr = log_stream_actor::stateful_pointer<log_stream_state>;

/// Matches read from the store per page of a replay, and lines looked at.
constexpr size_t replay_page_lines = 500;
constexpr size_t replay_scan = 20'000;

bool send_line(self_ptr self, const replay_item& item) {
  return self->state.follow.stream().send(std::to_string(item.seq), item.event, item.data);
}

/// Live lines, in global seq order, rendered by the router: the client gets
/// those its query matches; the others only move its cursor.
void on_batch(self_ptr self, const log_committed& batch) {
  auto& st = self->state;
  if (batch.size() == 0)
    return;
  auto last = batch.first_seq + batch.size() - 1;
  persistence::stored_line s;
  if (!st.query.matches(batch.labels, s)) {
    st.follow.pass(self, batch.first_seq, last);
    return;
  }
  if (batch.log_json.size() != batch.size()) {
    st.follow.start(self); // not rendered for this stream: read them
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    s.seq = batch.first_seq + i;
    s.ts_ns = batch.ts_ns[i];
    s.level = batch.levels[i];
    if (!st.query.matches(s)) {
      st.follow.pass(self, s.seq, s.seq);
      continue;
    }
    if (!st.follow.admit(self, s.seq))
      continue;
    if (!send_line(self, {s.seq, "log", batch.log_json[i]})) {
      self->quit();
      return;
    }
  }
}

} // namespace

replay_follow::reader log_reader(std::shared_ptr<persistence::lmdb_env> env,
                                 persistence::log_query query) {
  return [env, query](uint64_t after, replay_fill& fill) {
    replay_page page;
    page.covered = after;
    env->read([&](persistence::txn& t) {
      persistence::label_cache labels;
      size_t looked = 0;
      persistence::scan_logs(t, after, [&](const persistence::stored_line& s) {
        if (query.matches(s)) {
          auto& l = labels.get(t, s.labels);
          if (query.matches(l, s)) {
            replay_item item{s.seq, "log", {}};
            persistence::append_api_json(item.data, s, l);
            if (!fill.take(sse_event_bytes(std::to_string(s.seq), item.event, item.data))) {
              page.more = true; // the next page starts with this line
              return false;
            }
            page.items.push_back(std::move(item));
          }
        }
        page.covered = s.seq;
        if (++looked < replay_scan && !fill.full())
          return true;
        page.more = true;
        return false;
      });
      // Ran off the end: everything ever numbered was looked at (the newest
      // lines may be gone; paging must not stay before them).
      if (!page.more)
        page.covered = std::max(page.covered, persistence::log_high_water(t));
    });
    return page;
  };
}

log_stream_actor::behavior_type log_stream(self_ptr self, std::shared_ptr<http::sse_stream> stream,
                                           std::shared_ptr<persistence::lmdb_env> env,
                                           persistence::log_query query,
                                           std::optional<uint64_t> last_event_id) {
  auto& st = self->state;
  st.query = query;
  st.follow = replay_follow{stream, replay_page_lines, log_reader(env, std::move(query))};
  auto router = lookup(self->system(), names::logs);
  if (!router) {
    stream->close();
    self->quit();
    return {[](const log_committed&) {}, [](replay_atom) {}};
  }
  st.follow.end_with_client(self);
  st.follow.end_with(self, *router);
  // Subscribe first, then read the store: nothing committed in between is
  // missed, and what both deliver is told apart by seq.
  self->send(*router, subscribe_atom::value, log_subscriber_actor{self});
  stream->comment("following");
  if (last_event_id) {
    st.follow.resume_after(std::min(*last_event_id, persistence::last_log_record_seq(*env)));
    st.follow.start(self);
  }
  return {
      [self](const log_committed& batch) { on_batch(self, batch); },
      [self](replay_atom) {
        self->state.follow.step(self,
                                [self](const replay_item& item) { return send_line(self, item); });
      },
  };
}

} // namespace troupe
