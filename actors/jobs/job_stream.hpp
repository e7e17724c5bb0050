#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "actors/core/replay.hpp"
#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"

namespace troupe {

struct job_stream_state {
  static inline const char* name = "job_stream";
  std::shared_ptr<persistence::lmdb_env> env;
  std::string job_id;
  /// Where the client is in the job's log (the job's own seqs), and its
  /// replays: while one runs, live lines are dropped and the store read
  /// reaches them, so a slow client costs no memory however chatty the job.
  replay_follow follow;
  /// Highest line seq a live update carried (committed, so readable).
  uint64_t live_high = 0;
  /// A status change (or the end) that came while replaying, sent once the
  /// replay passed the lines that came before it.
  struct pending_update {
    uint64_t after_seq = 0;
    job_update update;
  };
  std::deque<pending_update> pending;
};

struct job_stream_options {
  std::string job_id;
  /// Resume after this seq (Last-Event-ID); wins over from_beginning.
  std::optional<uint64_t> last_event_id;
  /// Replay the whole stored log first.
  bool from_beginning = false;
};

/// Streams one job's log to an SSE client: replays stored lines (paced by
/// the client's backlog), then live lines and status changes as the job
/// actor persists them, then a final `complete` event; then the stream ends.
/// Live lines never queue up for a client that is behind: the stream reads
/// them from the store once the client caught up, as `/events` and
/// `/logs?follow` do (actors/core/replay.hpp).
job_stream_actor::behavior_type
job_stream(job_stream_actor::stateful_pointer<job_stream_state> self,
           std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
           job_controller_actor controller, job_stream_options opts);

/// Reads a job's stored lines for a replay_follow, rendered as `render(seq,
/// line)` one item each; `max_page` bounds the seqs one read covers.
replay_follow::reader
job_log_reader(std::shared_ptr<persistence::lmdb_env> env, std::string job_id,
               std::function<replay_item(uint64_t seq, const persistence::stored_line&)> render);

} // namespace troupe
