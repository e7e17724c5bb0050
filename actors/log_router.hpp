#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "runtime/config.hpp"

namespace troupe {

struct log_router_state {
  static inline const char* name = "log_router";
  logs_config cfg;
  std::string node;
  /// Text or JSON, for the stdout sink.
  bool json_stdout = false;
  std::vector<log_subscriber_actor> subscribers;
  /// Highest seq committed to the `logs` table.
  uint64_t last_seq = 0;
  /// Batches sent to the store and not yet committed.
  size_t in_flight = 0;
  std::vector<caf::typed_response_promise<ok_atom>> shutdown_waiters;
  /// Latest timestamp given per instance: lines of one pipe read share a
  /// read time, and Loki would take equal lines at an equal time for
  /// duplicates (and order equal times arbitrarily), so each line gets at
  /// least the previous one's time + 1 ns. Bounded: forgotten past 4096.
  std::unordered_map<std::string, int64_t> last_ts;
  /// Lines handled, and own lines lost to the capture buffer.
  uint64_t lines = 0;
  uint64_t dropped_own = 0;
};

/// Routes every line: fills in labels and levels, persists the batch in the
/// `logs` table (the store sink, and the outbox of the Loki batcher), then
/// forwards it to live subscribers, the stdout sink and a nudge to the
/// batcher registered as `loki`, which reads the table at its own pace.
log_router_actor::behavior_type
log_router(log_router_actor::stateful_pointer<log_router_state> self, logs_config cfg,
           std::string node, bool json_stdout);

/// Formats a record for the stdout sink (text or one JSON object), with newline.
std::string stdout_line(const log_record& r, bool json);

} // namespace troupe
