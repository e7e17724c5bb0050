#include "actors/jobs/job_stream.hpp"

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/log_render.hpp"
#include "actors/core/names.hpp"
#include "persistence/jobs.hpp"
#include "persistence/logs.hpp"

namespace troupe {

namespace {

using self_ptr = job_stream_actor::stateful_pointer<job_stream_state>;
using nlohmann::json;

constexpr size_t lines_per_page = 512;

bool send_item(self_ptr self, const replay_item& item) {
  return self->state.follow.stream().send(std::to_string(item.seq), item.event, item.data);
}

void send_complete(self_ptr self, const persistence::job_record& rec) {
  auto& stream = self->state.follow.stream();
  json data{{"type", "complete"},
            {"job_id", rec.id},
            {"success", rec.success.value_or(false)},
            {"status", rec.status},
            {"exit_code", rec.exit_code ? json(*rec.exit_code) : json(nullptr)}};
  stream.send({}, "complete", data.dump());
  stream.close();
  self->quit();
}

void send_status(self_ptr self, const std::string& status, int attempt) {
  json data{
      {"type", "status"}, {"job_id", self->state.job_id}, {"status", status}, {"attempt", attempt}};
  self->state.follow.stream().send({}, "status", data.dump());
}

/// Sends an update's status change, or its end (then the stream closes).
void apply_status(self_ptr self, const job_update& up) {
  auto& st = self->state;
  if (up.complete) {
    // The record is committed before the update was sent: read it whole.
    if (auto rec = persistence::get_job(*st.env, st.job_id)) {
      send_complete(self, *rec);
      return;
    }
    st.follow.stream().close();
    self->quit();
    return;
  }
  if (!up.status.empty())
    send_status(self, up.status, up.attempt);
}

bool terminated(self_ptr self) {
  return self->getf(caf::abstract_actor::is_terminated_flag);
}

/// Sends the held status changes that came before line `next_seq` (all of
/// them when `all`).
void flush_pending(self_ptr self, uint64_t next_seq, bool all = false) {
  auto& st = self->state;
  while (!st.pending.empty() && (all || st.pending.front().after_seq < next_seq)) {
    auto p = std::move(st.pending.front());
    st.pending.pop_front();
    apply_status(self, p.update);
    if (terminated(self))
      return;
  }
}

/// The next page of stored lines, the status changes held for them in
/// between; live from the end of the stored log on.
void replay(self_ptr self) {
  auto caught_up = self->state.follow.step(self, [self](const replay_item& item) {
    flush_pending(self, item.seq);
    return !terminated(self) && send_item(self, item);
  });
  if (caught_up)
    flush_pending(self, 0, true);
}

/// A finished job: replay what was asked for, then `complete`.
void finished(self_ptr self, const persistence::job_record& rec, bool replay_all) {
  auto& st = self->state;
  if (!replay_all) {
    send_complete(self, rec);
    return;
  }
  // `complete` follows once the paced replay reached the end.
  job_update end;
  end.job_id = rec.id;
  end.status = rec.status;
  end.attempt = rec.attempt;
  end.complete = true;
  end.success = rec.success.value_or(false);
  end.exit_code = rec.exit_code.value_or(-1);
  st.pending.push_back({UINT64_MAX, std::move(end)});
  st.follow.hold();
  replay(self);
}

/// Live lines of the job (from the log router, in the job's seq order): sent
/// as they come unless the stream is replaying, the batch skips lines, or the
/// client falls behind; then the (remaining) lines are dropped — the replay
/// reads them from the store at the client's pace.
void on_lines(self_ptr self, const log_committed& batch) {
  auto& st = self->state;
  if (batch.size() == 0)
    return;
  st.live_high = std::max(st.live_high, batch.first_index_seq + batch.size() - 1);
  if (batch.index_json.size() != batch.size()) {
    st.follow.start(self); // not rendered for this stream: read them
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    auto seq = batch.first_index_seq + i;
    if (!st.follow.admit(self, seq))
      continue;
    if (!st.follow.stream().send(std::to_string(seq), "log", batch.index_json[i])) {
      self->quit();
      return;
    }
  }
}

/// A status change: sent at once if the client has every line before it;
/// else it waits for the replay to pass them (one starts if none runs).
void on_update(self_ptr self, job_update& up) {
  auto& st = self->state;
  if (!st.follow.replaying() && up.after_seq <= st.follow.cursor()) {
    apply_status(self, up);
    return;
  }
  if (up.complete || !up.status.empty()) {
    auto after = up.complete ? UINT64_MAX : std::max(up.after_seq, st.live_high);
    st.pending.push_back({after, std::move(up)});
    st.follow.start(self);
  }
}

} // namespace

replay_follow::reader
job_log_reader(std::shared_ptr<persistence::lmdb_env> env, std::string job_id,
               std::function<replay_item(uint64_t seq, const persistence::stored_line&)> render) {
  return [env, job_id, render](uint64_t after, replay_fill& fill) {
    replay_page page;
    page.covered = persistence::read_log_lines_until(
        *env, job_id, after, fill.max_events(),
        [&](uint64_t seq, const persistence::stored_line& s) {
          auto item = render(seq, s);
          // Raw items (a download's bytes) take their size in the queue.
          auto bytes = item.event.empty()
                           ? item.data.size()
                           : sse_event_bytes(std::to_string(seq), item.event, item.data);
          if (!fill.take(bytes)) {
            page.more = true; // the next page starts with this line
            return false;
          }
          page.items.push_back(std::move(item));
          return true;
        });
    // Lines the log retention removed leave gaps: paging goes on by what
    // was covered, and a page that covered all its seqs may have more.
    if (page.covered - after == fill.max_events())
      page.more = true;
    return page;
  };
}

/// Subscribes to the job's updates. A job between two attempts may still be
/// listed as running while its attempt's actor is already gone (the
/// controller has not seen it end): the delegated subscription fails then.
/// The attempt told the controller it ended before it went away, so a new
/// request, sent after that failure, finds the job backing off or queued:
/// it is asked again (`tries` times) instead of ending the stream.
void subscribe(self_ptr self, job_controller_actor controller, bool replay_all, int tries) {
  auto& st = self->state;
  self->request(controller, std::chrono::seconds(30), subscribe_atom::value, st.job_id,
                job_subscriber_actor{self})
      .then(
          [self, replay_all](uint64_t last_seq) {
            auto& st = self->state;
            st.live_high = std::max(st.live_high, last_seq);
            if (!replay_all) {
              st.follow.follow_from(last_seq);
              return;
            }
            replay(self);
          },
          [self, controller, replay_all, tries](caf::error&) {
            auto& st = self->state;
            auto rec = persistence::get_job(*st.env, st.job_id);
            if (rec && persistence::is_terminal(rec->status)) {
              // Ended between our read and the subscription: it is final now.
              finished(self, *rec, replay_all);
              return;
            }
            if (rec && tries > 0) {
              subscribe(self, controller, replay_all, tries - 1);
              return;
            }
            st.follow.stream().close();
            self->quit();
          });
}

job_stream_actor::behavior_type job_stream(self_ptr self, std::shared_ptr<http::sse_stream> stream,
                                           std::shared_ptr<persistence::lmdb_env> env,
                                           job_controller_actor controller,
                                           job_stream_options opts) {
  auto& st = self->state;
  st.env = env;
  st.job_id = opts.job_id;
  st.follow = replay_follow{
      stream, lines_per_page, job_log_reader(env, opts.job_id, [](uint64_t seq, const auto& s) {
        return replay_item{seq, "log", job_line_json(seq, s.ts_ns, s.stream, s.line)};
      })};
  st.follow.end_with_client(self);
  auto rec = persistence::get_job(*env, opts.job_id);
  if (!rec) {
    stream->close();
    self->quit();
    return {[](const job_update&) {}, [](const log_committed&) {}, [](replay_atom) {}};
  }
  bool resume = opts.last_event_id.has_value();
  bool replay_all = resume || opts.from_beginning;
  // A Last-Event-ID past the job's last line (a client's guess, or another
  // node's) resumes from that line. Following from now, the subscription's
  // answer (or the first live line) says where the client starts.
  if (replay_all)
    st.follow.resume_after(
        std::min(opts.last_event_id.value_or(0), persistence::last_log_seq(*st.env, opts.job_id)));
  if (persistence::is_terminal(rec->status)) {
    finished(self, *rec, replay_all);
  } else {
    send_status(self, rec->status, rec->attempt);
    // If the controller or the log router (which hold the subscriptions) go
    // away, end the stream: the client resumes with Last-Event-ID.
    st.follow.end_with(self, controller);
    // Register first, then read the store (the replay starts with the
    // answer): a line committed after the read arrives live; duplicates are
    // dropped by seq. Live updates before the answer wait for the replay.
    if (replay_all)
      st.follow.hold();
    if (auto router = lookup(self->system(), names::logs)) {
      st.follow.end_with(self, *router);
      self->send(*router, subscribe_atom::value, opts.job_id, log_subscriber_actor{self});
    }
    subscribe(self, controller, replay_all, 3);
  }
  return {
      [self](job_update& up) { on_update(self, up); },
      [self](const log_committed& batch) { on_lines(self, batch); },
      [self](replay_atom) { replay(self); },
  };
}

} // namespace troupe
