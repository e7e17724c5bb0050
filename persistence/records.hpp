#pragma once

// The records persistence stores and returns: events, store writes and their
// results, log records and their label sets. Plain structs, so the storage
// layer needs nothing above it; actors/interfaces.hpp makes them messages
// (their `inspect` overloads live there).

#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

/// A typed event of the node (lifecycle, jobs, instances, scaling …). It is
/// persisted by the store before any subscriber sees it.
struct event {
  /// Position in the persisted event log; assigned by the store.
  uint64_t seq = 0;
  /// Wall-clock time of the event, nanoseconds since the Unix epoch.
  int64_t ts_ns = 0;
  /// Dotted type, e.g. `node.started`, `actor.restarted`.
  std::string type;
  /// Name of the node that raised it.
  std::string node;
  /// Event payload as a JSON object (serialized).
  std::string data;
};

/// One write of a group-committed batch.
struct write_op {
  enum kind_t : uint8_t {
    /// Stores `value` under `key`.
    put,
    /// Removes `key`; absent keys are not an error.
    erase,
    /// Stores `value` under the next sequence key of `table` (big-endian u64).
    append,
    /// Appends the log lines packed in `value` (persistence::log_op_builder)
    /// to `logs` and, if `key` is not empty, indexes them under it in
    /// `job_logs`. Its result is the first global seq and the line count.
    log_append,
    /// Removes the keys of `table` in [key, value) (value empty: to the end).
    erase_range,
  };
  uint8_t kind = put;
  std::string table;
  std::string key;
  std::string value;
};

using write_batch = std::vector<write_op>;

/// What a committed batch produced: the sequence numbers given to its
/// `append` ops, in op order (a `log_append` op adds its first seq and its
/// line count).
struct write_result {
  std::vector<uint64_t> appended;
};

/// One line in the log pipeline (job output, troupe's own logs, later app
/// instances). The router adds namespace and node and assigns the global seq.
struct log_record {
  /// Position in the persisted `logs` table; assigned by the router's write.
  uint64_t seq = 0;
  int64_t ts_ns = 0;
  std::string line;
  /// 1 = stdout, 2 = stderr.
  uint8_t stream = 1;
  /// Empty: detected from the line (JSON level/severity) or the stream.
  std::string level;
  /// Job name or app name; `troupe` for the daemon's own lines.
  std::string service;
  /// Job id or replica id (Loki's `pod`); the logger name for troupe.
  std::string instance;
  /// `job`, `app`, `troupe` or a subprocess name.
  std::string source;
  std::string request_id;
  std::string ns;
  std::string node;
};

using log_batch = std::vector<log_record>;

/// The labels a batch of lines shares: stored once per distinct set (the
/// `log_labels` table), not with every line.
struct log_labels {
  /// Job name or app name; `troupe` for the daemon's own lines.
  std::string service;
  /// Job id or replica id; the logger name for troupe.
  std::string instance;
  /// `job`, `app`, `troupe` or a subprocess name.
  std::string source;
  std::string request_id;
  /// Filled in by the router when empty.
  std::string ns;
  std::string node;
};

} // namespace troupe

namespace troupe::persistence {

/// One change of an app's desired replicas, or one the autoscaler held
/// back (to == from): stored in `app_scaling`, and the autoscaler's message
/// to the app manager.
struct scaling_decision {
  std::string app;
  int64_t ts_ns = 0;
  int32_t from = 0;
  int32_t to = 0;
  /// register, up, down, api, or the autoscaler's reason.
  std::string reason;
  /// The autoscaler's decisions (rule non-empty): what it looked at, and
  /// the rule that acted or held (to == from).
  std::string rule;
  std::string metric;
  std::string window;
  double observed = 0;
  double target = 0;
  int32_t proposal = 0;
};

} // namespace troupe::persistence
