#include "actors/job_stream.hpp"

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/replay_pacing.hpp"
#include "persistence/jobs.hpp"
#include "persistence/logs.hpp"

namespace troupe {

namespace {

using self_ptr = job_stream_actor::stateful_pointer<job_stream_state>;
using nlohmann::json;

constexpr size_t replay_page = 512;

std::string log_data(uint64_t seq, int64_t ts_ns, uint8_t stream, const std::string& line) {
  persistence::stored_line s;
  s.ts_ns = ts_ns;
  s.stream = stream;
  s.line = line;
  std::string out;
  out.reserve(128 + 2 * line.size());
  persistence::append_api_json(out, seq, s);
  // Seed clients read {"type":"log","data":"...\n"}; both shapes in one.
  out.pop_back();
  out += ",\"type\":\"log\",\"data\":";
  persistence::append_json_string(out, line + "\n");
  out += '}';
  return out;
}

bool send_line(self_ptr self, uint64_t seq, int64_t ts, uint8_t stream, const std::string& line) {
  auto& st = self->state;
  if (seq <= st.last_sent)
    return true;
  st.last_sent = seq;
  return st.stream->send(std::to_string(seq), "log", log_data(seq, ts, stream, line));
}

void send_complete(self_ptr self, const persistence::job_record& rec) {
  auto& st = self->state;
  json data{{"type", "complete"},
            {"job_id", rec.id},
            {"success", rec.success.value_or(false)},
            {"status", rec.status},
            {"exit_code", rec.exit_code ? json(*rec.exit_code) : json(nullptr)}};
  st.stream->send({}, "complete", data.dump());
  st.stream->close();
  self->quit();
}

void send_status(self_ptr self, const std::string& status, int attempt) {
  json data{{"type", "status"},
            {"job_id", self->state.job_id},
            {"status", status},
            {"attempt", attempt}};
  self->state.stream->send({}, "status", data.dump());
}

void apply(self_ptr self, const job_update& up) {
  auto& st = self->state;
  for (auto& l : up.lines)
    if (!send_line(self, l.seq, l.ts_ns, l.stream, l.line)) {
      self->quit();
      return;
    }
  if (up.complete) {
    // The record is committed before the update was sent: read it whole.
    if (auto rec = persistence::get_job(*st.env, st.job_id)) {
      send_complete(self, *rec);
      return;
    }
    st.stream->close();
    self->quit();
    return;
  }
  if (!up.status.empty())
    send_status(self, up.status, up.attempt);
}

/// Sends the next page of stored lines; paced by the client's backlog.
void replay(self_ptr self) {
  auto& st = self->state;
  auto page_size = next_replay_page(self, *st.stream, replay_page);
  if (page_size == 0)
    return;
  auto from = st.last_sent;
  uint64_t covered = from;
  auto page = persistence::read_logs(*st.env, st.job_id, from, page_size, &covered);
  for (auto& e : page) {
    if (e.seq > st.replay_until)
      break;
    if (!send_line(self, e.seq, e.ts_ns, e.stream, e.line)) {
      self->quit();
      return;
    }
  }
  // Lines the log retention removed leave gaps: page on by what was covered.
  if (covered - from == page_size && covered < st.replay_until) {
    st.last_sent = std::max(st.last_sent, covered);
    self->send(self, replay_atom::value);
    return;
  }
  st.replaying = false;
  auto held = std::move(st.held);
  st.held.clear();
  for (auto& up : held) {
    apply(self, up);
    if (self->getf(caf::abstract_actor::is_terminated_flag))
      return;
  }
}

/// A finished job: replay what was asked for, then `complete`.
void finished(self_ptr self, const persistence::job_record& rec, bool replay_all) {
  auto& st = self->state;
  if (replay_all) {
    st.replay_until = UINT64_MAX;
    st.replaying = true;
    // Reuse the paced replay; `complete` follows once it drained.
    st.held.push_back(job_update{rec.id, {}, rec.status, rec.attempt, true,
                                 rec.success.value_or(false), rec.exit_code.value_or(-1)});
    replay(self);
    return;
  }
  send_complete(self, rec);
}

} // namespace

job_stream_actor::behavior_type
job_stream(self_ptr self, std::shared_ptr<http::sse_stream> stream,
           std::shared_ptr<persistence::lmdb_env> env, job_controller_actor controller,
           job_stream_options opts) {
  auto& st = self->state;
  st.stream = stream;
  st.env = env;
  st.job_id = opts.job_id;
  // The stream keeps this actor alive until the client goes away (closing
  // drops the callback and with it the reference).
  stream->on_close([hdl = caf::actor_cast<caf::actor>(self)] {
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
  });
  auto rec = persistence::get_job(*env, opts.job_id);
  if (!rec) {
    stream->close();
    self->quit();
    return {[](const job_update&) {}, [](replay_atom) {}};
  }
  bool resume = opts.last_event_id.has_value();
  // A Last-Event-ID past the job's last line (a client's guess, or another
  // node's) resumes from that line.
  st.last_sent = std::min(opts.last_event_id.value_or(0),
                          persistence::last_log_seq(*st.env, opts.job_id));
  bool replay_all = resume || opts.from_beginning;
  if (persistence::is_terminal(rec->status)) {
    finished(self, *rec, replay_all);
  } else {
    send_status(self, rec->status, rec->attempt);
    // If the controller (which holds this subscription) goes away, end the
    // stream: the client resumes with Last-Event-ID.
    self->monitor(controller);
    self->set_down_handler([self](caf::down_msg&) {
      self->state.stream->close();
      self->quit();
    });
    // Register first, then read the store: a line committed after the read
    // arrives live; duplicates are dropped by seq.
    self->request(controller, std::chrono::seconds(30), subscribe_atom::value, opts.job_id,
                  job_subscriber_actor{self})
      .then(
        [self, replay_all](uint64_t last_seq) {
          auto& st = self->state;
          if (!replay_all) {
            st.last_sent = std::max(st.last_sent, last_seq);
            return;
          }
          st.replay_until = last_seq;
          st.replaying = true;
          replay(self);
        },
        [self, replay_all](caf::error&) {
          // Ended between our read and the subscription: it is final now.
          auto& st = self->state;
          if (auto rec = persistence::get_job(*st.env, st.job_id);
              rec && persistence::is_terminal(rec->status)) {
            finished(self, *rec, replay_all);
            return;
          }
          st.stream->close();
          self->quit();
        });
  }
  return {
    [self](job_update& up) {
      if (self->state.replaying) {
        self->state.held.push_back(std::move(up));
        return;
      }
      apply(self, up);
    },
    [self](replay_atom) { replay(self); },
  };
}

} // namespace troupe
