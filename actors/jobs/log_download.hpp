#pragma once

#include <memory>
#include <string>

#include "actors/core/replay.hpp"
#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

/// Writes one job's stored log to a chunked response (GET /jobs/{id}/logs).
using log_download_actor = caf::typed_actor<
    // Internal: writes the next page once the client took enough of the last.
    caf::reacts_to<replay_atom>>;

struct log_download_state {
  static inline const char* name = "log_download";
  std::string job_id;
  /// Where the download is in the job's log, and its pacing.
  replay_follow follow;
};

/// Writes a job's stored log (text, or NDJSON when `ndjson`) a page at a time,
/// one chunk per page, paced like SSE replays (actors/core/replay.hpp): what
/// is queued for the client stays under half of http.sse_queue_bytes however
/// long the log or its lines, and the io thread never reads LMDB. Ends the
/// response at the end of the stored log; cuts it short (an incomplete
/// chunked body) when the store fails.
log_download_actor::behavior_type
log_download(log_download_actor::stateful_pointer<log_download_state> self,
             std::shared_ptr<persistence::lmdb_env> env, std::string job_id,
             std::shared_ptr<http::sse_stream> out, bool ndjson);

} // namespace troupe
