#pragma once

// The `logs` table: every line of the pipeline, written once, under a global
// sequence number. It is the local store sink that GET /logs queries, the
// outbox that the other sinks (Loki) read at their own pace, and — through
// the per-instance index in `job_logs` — what a job's stream and
// GET /jobs/{id}/logs read.
//
// Layout (schema 2; integers little-endian unless noted):
//   logs       seq (8, big-endian) → ts_ns (8) | stream (1) | label set id (8)
//                                    | level length (1) | level
//                                    | [request id length (1) | request id]
//                                    | line
//              (the request id is there when the stream byte has bit 0x80
//              set: request ids are per line, so that label sets stay few —
//              one per job and logger, not one per HTTP request)
//   log_labels id (8, big-endian)  → the label set (encode_labels); the id is
//                                    a hash of the set, so interning is an
//                                    idempotent put and needs no counter
//   job_logs   instance + '/' + first per-instance seq (8, big-endian)
//                                  → first global seq (8) | count (4): one
//                                    entry per written batch, whose lines have
//                                    consecutive global seqs

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "persistence/records.hpp"
#include "runtime/ground/json_text.hpp"
#include "runtime/ground/packed_lines.hpp"

namespace troupe::persistence {

/// The `meta` key of the Loki sink's cursor: the last seq it shipped (or dropped).
inline constexpr const char* loki_cursor_key = "loki.cursor";

class lmdb_env;
class txn;

// -- label sets -------------------------------------------------------------------

std::string encode_labels(const log_labels& l);
log_labels decode_labels(std::string_view v);

// -- writing (router → store) ------------------------------------------------------

/// Builds the value of a `write_op::log_append`: one label set, then the
/// lines with their time, stream and level.
class log_op_builder {
public:
  explicit log_op_builder(const log_labels& labels);
  void add(int64_t ts_ns, uint8_t stream, std::string_view level, std::string_view line);
  uint32_t count() const noexcept { return count_; }
  /// The op's value; the builder is empty afterwards.
  std::string take();

private:
  std::string buf_;
  uint32_t count_ = 0;
};

/// Applies a log_append op inside a write transaction: interns the label set,
/// appends every line under the next global seqs (MDB_APPEND), and, when
/// `index_key` is not empty, records the batch in `job_logs` under it.
/// Returns the global seq of the first line and the number of lines.
std::pair<uint64_t, uint32_t> append_log_op(txn& t, std::string_view index_key,
                                            std::string_view op);

/// The records of a log_append op whose first line got global seq `first`.
std::vector<log_record> decode_log_op(std::string_view op, uint64_t first);

/// Appends records (each with its own labels and level) in one go; consecutive
/// records with equal labels share an op. Returns the last global seq.
uint64_t append_log_records(txn& t, const std::vector<log_record>& records);

// -- reading -------------------------------------------------------------------------

/// A stored line, viewed in place: the views live as long as the transaction.
struct stored_line {
  uint64_t seq = 0;
  int64_t ts_ns = 0;
  uint8_t stream = 1;
  uint64_t labels = 0;
  std::string_view level;
  /// The line's own request id (empty: the label set's, as lines stored
  /// before request ids moved out of label sets have it there).
  std::string_view request_id;
  std::string_view line;
};

/// The request id of a stored line.
inline std::string_view request_id_of(const stored_line& s, const log_labels& l) {
  return s.request_id.empty() ? std::string_view{l.request_id} : s.request_id;
}

/// Visits the lines of a log_append op whose first line got global seq
/// `first`, in place (the views live during `fn`), with the op's label set.
void visit_log_op(std::string_view op, uint64_t first,
                  const std::function<void(const stored_line&, const log_labels&)>& fn);

/// Decodes a `logs` value; false if it is malformed.
bool decode_stored(uint64_t seq, std::string_view value, stored_line& out);

/// Label sets by id, read on first use. Bounded: it forgets everything when
/// it grows past `capacity` sets.
class label_cache {
public:
  explicit label_cache(size_t capacity = 4096) : capacity_(capacity) {}
  /// The set with this id; an empty set if it is unknown.
  const log_labels& get(const txn& t, uint64_t id);

private:
  size_t capacity_;
  std::unordered_map<uint64_t, log_labels> sets_;
};

/// Visits stored lines with seq > `after` in order until `fn` returns false.
void scan_logs(const txn& t, uint64_t after, const std::function<bool(const stored_line&)>& fn);

/// The full record of a stored line.
log_record to_record(const stored_line& s, const log_labels& labels);

/// GET /logs filters; empty fields match everything.
struct log_query {
  std::string service;
  std::string instance;
  std::string level;
  std::string request_id;
  std::string source;
  int64_t since_ns = 0;
  int64_t until_ns = 0; ///< 0 = no upper bound
  bool matches(const log_record& r) const;
  /// The label and the line filters (cheap ones first: the line's own).
  bool matches(const log_labels& l, const stored_line& s) const;
  bool matches(const stored_line& s) const;
};

/// Matching records with seq > `after`, oldest first, at most `limit`, after
/// looking at no more than `max_scan` lines (one bounded read however sparse
/// the filter); `scanned_to` is the last seq looked at (resume point).
std::vector<log_record> query_logs(const lmdb_env& env, const log_query& q, uint64_t after,
                                   size_t limit, uint64_t& scanned_to, size_t max_scan = SIZE_MAX);

/// Like query_logs, but appends the matches to `out` as NDJSON (one
/// to_api_json object per line) straight from the table; returns how many.
/// Also ends after the match that makes `out` reach `max_bytes`.
size_t query_logs_ndjson(const lmdb_env& env, const log_query& q, uint64_t after, size_t limit,
                         uint64_t& scanned_to, std::string& out, size_t max_scan = SIZE_MAX,
                         size_t max_bytes = SIZE_MAX);

/// The highest global seq ever given (also when retention removed it).
uint64_t log_high_water(const txn& t);

/// The highest global seq ever given (0 if no line was ever stored).
uint64_t last_log_record_seq(const lmdb_env& env);

// -- retention -----------------------------------------------------------------------

/// What the log retention removes next from `logs`: the oldest lines, as
/// long as they are older than `max_age_ns` or the table is larger than
/// `max_bytes` (it is trimmed to 90 % of it, so the sweep does not run on
/// every line), at most `max_lines` (one bounded transaction).
struct log_trim {
  write_op op; ///< erase_range of the lines
  uint64_t lines = 0;
  uint64_t first_seq = 0; ///< oldest line removed
  uint64_t last_seq = 0;  ///< newest line removed
  /// Of them, lines the Loki sink (if any) had not shipped yet.
  uint64_t unshipped = 0;
  uint64_t table_bytes = 0;
  /// Stopped at max_lines: more is due at once.
  bool more = false;
};
std::optional<log_trim> plan_log_trim(const lmdb_env& env, int64_t now_ns, int64_t max_age_ns,
                                      uint64_t max_bytes, uint64_t max_lines);

/// The record as GET /logs shows it (one JSON object).
std::string to_api_json(const log_record& r);
/// Appends what to_api_json(r) returns, without building the record.
void append_api_json(std::string& out, const stored_line& s, const log_labels& labels);

// -- schema 1 → 2 ------------------------------------------------------------------

/// Rewrites a schema-1 store in the open write transaction: JSON `logs`
/// records become binary ones under the same seqs (so sink cursors stay
/// valid), and `job_logs` lines become index entries — pointing at their copy
/// in `logs` when the pipeline had stored it, else at a new record appended
/// for it. Returns the number of job lines that needed a new record.
uint64_t migrate_logs_v1(txn& t);

} // namespace troupe::persistence
