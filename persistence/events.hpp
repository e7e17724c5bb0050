#pragma once

// The `events` table: the node's audit log of typed events (persistence/
// records.hpp), one JSON value under each sequence key. The event bus appends
// through the store; GET /events and the event stream read it here.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "persistence/records.hpp"

namespace troupe::persistence {

class lmdb_env;

/// Reads stored events with seq > `since`, oldest first, at most `limit`.
std::vector<event> read_events(const lmdb_env& env, uint64_t since, size_t limit);

/// The store op that removes events older than `max_age_ns`, oldest first, at
/// most `max_events` (`more` says whether that cut it short). The newest event
/// always stays: the next one's seq follows it, so a seq is never given twice
/// (clients resume with Last-Event-ID). nullopt when nothing is due.
std::optional<write_op> plan_event_trim(const lmdb_env& env, int64_t now_ns, int64_t max_age_ns,
                                        size_t max_events, bool& more);

/// Storage encoding of an event (the seq is the key).
std::string encode_stored(const event& e);
event decode_stored(uint64_t seq, std::string_view value);

} // namespace troupe::persistence
