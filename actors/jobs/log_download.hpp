#pragma once

// GET /jobs/{id}/logs: one actor per download streams a job's stored log.

#include <cstdint>
#include <memory>
#include <string>

#include <caf/stateful_actor.hpp>

#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

struct log_download_state {
  static inline const char* name = "log_download";
  std::shared_ptr<persistence::lmdb_env> env;
  std::string job_id;
  std::shared_ptr<http::sse_stream> out;
  bool ndjson = false;
  uint64_t after = 0;
};

/// Writes a job's stored log to a chunked response a page at a time, paced
/// like SSE replays (replay_pacing.hpp): what is queued for the client stays
/// under half of http.sse_queue_bytes however long the log or its lines, and
/// the io thread never reads LMDB.
caf::behavior log_download(caf::stateful_actor<log_download_state>* self,
                           std::shared_ptr<persistence::lmdb_env> env, std::string job_id,
                           std::shared_ptr<http::sse_stream> out, bool ndjson);

} // namespace troupe
