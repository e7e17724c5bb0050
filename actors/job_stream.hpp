#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

struct job_stream_state {
  static inline const char* name = "job_stream";
  std::shared_ptr<http::sse_stream> stream;
  std::shared_ptr<persistence::lmdb_env> env;
  std::string job_id;
  /// Highest seq written to the client; live lines at or below are skipped.
  uint64_t last_sent = 0;
  /// Replay stored lines up to this seq before live ones (0 = none).
  uint64_t replay_until = 0;
  bool replaying = false;
  /// Live updates that arrived while replaying (applied afterwards).
  std::vector<job_update> held;
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
job_stream_actor::behavior_type
job_stream(job_stream_actor::stateful_pointer<job_stream_state> self,
           std::shared_ptr<http::sse_stream> stream, std::shared_ptr<persistence::lmdb_env> env,
           job_controller_actor controller, job_stream_options opts);

} // namespace troupe
