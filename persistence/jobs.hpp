#pragma once

// Job records and job logs in LMDB. Records live in `jobs` under their id
// (time-ordered, so key order is submission order); a job's lines live once,
// in the global `logs` table, and `job_logs` indexes them by the job's own
// sequence numbers (persistence/logs.hpp has the layout).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "persistence/records.hpp"

namespace troupe::persistence {

class lmdb_env;

/// Job states; terminal ones never change again.
namespace job_status {
inline constexpr const char* queued = "queued";
inline constexpr const char* running = "running";
inline constexpr const char* succeeded = "succeeded";
inline constexpr const char* failed = "failed";
inline constexpr const char* cancelled = "cancelled";
inline constexpr const char* timed_out = "timed_out";
inline constexpr const char* lost = "lost";
} // namespace job_status

bool is_terminal(std::string_view status);

/// Everything stored about a job.
struct job_record {
  std::string id;
  std::string name;
  std::string status = job_status::queued;
  /// The job_spec as JSON (actors/jobs/job_spec.hpp).
  std::string spec;
  int priority = 50;
  std::map<std::string, std::string> labels;
  int retries = 0;
  /// 1 for the first run; counts retries.
  int attempt = 1;
  std::string node;
  std::string request_id;
  /// The name of the token that submitted the job ("" when auth is off, and
  /// in records stored before it was kept).
  std::string submitted_by;
  /// Why the job ended the way it did (timeouts, crashes, recovery).
  std::string reason;
  /// Absolute path of the workspace ("" once removed).
  std::string workspace;
  int64_t queued_at = 0;
  int64_t started_at = 0;
  int64_t ended_at = 0;
  /// A retried job waits until this time (ns since epoch).
  int64_t not_before = 0;
  /// Process group of the running attempt (0 if none).
  int64_t pgid = 0;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::optional<bool> success;
};

/// A fresh, time-ordered job id (UUIDv7 text form).
std::string new_job_id();

std::string encode(const job_record& r);
job_record decode_job(std::string_view value);

std::optional<job_record> get_job(const lmdb_env& env, const std::string& id);

struct job_filter {
  std::optional<std::string> status;
  std::vector<std::pair<std::string, std::string>> labels;
  /// Only jobs queued at or after this time (ns; 0 = all).
  int64_t since_ns = 0;
};

/// Newest first, starting after `cursor` (a job id; "" = newest). A page
/// ends after `limit` matches, after looking at `max_scan` records however
/// sparse the filter, or once its matches hold `max_bytes` (stored size), so
/// it may be short or even empty while more follow. `next_cursor` is where the
/// next page starts; empty when nothing further can match.
std::vector<job_record> list_jobs(const lmdb_env& env, const job_filter& filter,
                                  const std::string& cursor, size_t limit, std::string& next_cursor,
                                  size_t max_scan = SIZE_MAX, size_t max_bytes = SIZE_MAX);

/// Visits every job record (oldest first) until `fn` returns false.
void for_each_job(const lmdb_env& env, const std::function<bool(const job_record&)>& fn);

struct log_entry {
  uint64_t seq = 0;
  int64_t ts_ns = 0;
  /// 1 = stdout, 2 = stderr.
  uint8_t stream = 1;
  std::string line;
};

struct stored_line;

/// The `job_logs` index key of the batch starting at the job's line `seq`.
std::string log_key(const std::string& job_id, uint64_t seq);

/// Visits the job's lines with seq in (after, after + limit], in order, in
/// place (one read transaction; the line views live during `fn`). Returns
/// the highest seq covered: lines removed by the log retention are skipped,
/// so callers page on with the result, and are done when it equals `after`.
uint64_t read_log_lines(const lmdb_env& env, const std::string& job_id, uint64_t after,
                        size_t limit,
                        const std::function<void(uint64_t seq, const stored_line&)>& fn);

/// Like read_log_lines, but `fn` may refuse a line (returns false): the read
/// stops before it and returns the seq before it, so the caller resumes there
/// (a page bounded by bytes).
uint64_t read_log_lines_until(const lmdb_env& env, const std::string& job_id, uint64_t after,
                              size_t limit,
                              const std::function<bool(uint64_t seq, const stored_line&)>& fn);

/// Lines with seq in (after, after + limit], in order; `covered` (if given)
/// gets what read_log_lines returns.
std::vector<log_entry> read_logs(const lmdb_env& env, const std::string& job_id, uint64_t after,
                                 size_t limit, uint64_t* covered = nullptr);

/// Store ops that remove a job's log: its lines in `logs` and its index
/// entries, at most about `max_lines` lines (one bounded transaction). The
/// ops end with the index entries they cover, so a purge cut short leaves the
/// rest findable for the next one. `ops` is empty when no log is left.
struct log_purge {
  write_batch ops;
  uint64_t lines = 0;
  /// The ops remove the whole log.
  bool complete = true;
};
log_purge purge_job_log_ops(const lmdb_env& env, const std::string& job_id, uint64_t max_lines);

/// The highest stored sequence number of a job's log (0 if none).
uint64_t last_log_seq(const lmdb_env& env, const std::string& job_id);

/// A log line as the API shows it: {"seq","ts","stream","line"}.
std::string to_api_json(const log_entry& e);
/// Appends the same JSON for a stored line without copying it first.
void append_api_json(std::string& out, uint64_t seq, const stored_line& s);

} // namespace troupe::persistence
