#pragma once

// The `logs` table: every line of the pipeline under a global sequence
// number. It is the local store sink that GET /logs queries, and the outbox
// that the other sinks (Loki) read at their own pace.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/interfaces.hpp"

namespace troupe::persistence {

class lmdb_env;

std::string encode(const log_record& r);
log_record decode_log_record(uint64_t seq, std::string_view value);

/// GET /logs filters; empty fields match everything.
struct log_query {
  std::string service;
  std::string instance;
  std::string level;
  std::string request_id;
  std::string source;
  int64_t since_ns = 0;
  int64_t until_ns = 0;  ///< 0 = no upper bound
  bool matches(const log_record& r) const;
};

/// Matching records with seq > `after`, oldest first, at most `limit`;
/// `scanned_to` is the last seq looked at (resume point).
std::vector<log_record> query_logs(const lmdb_env& env, const log_query& q, uint64_t after,
                                   size_t limit, uint64_t& scanned_to);

/// Records with seq > `after`, oldest first, until `limit` records or
/// `max_bytes` of lines (at least one record).
std::vector<log_record> read_logs_after(const lmdb_env& env, uint64_t after, size_t limit,
                                        size_t max_bytes);

/// The record as GET /logs shows it (one JSON object).
std::string to_api_json(const log_record& r);

} // namespace troupe::persistence
