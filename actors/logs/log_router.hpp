#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/message.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

/// The stdout sink's writer: a thread of its own behind a queue bounded in
/// bytes, so that a stdout nobody reads (a full pipe) blocks only that thread
/// and never the router. What does not fit is dropped and counted (the lines
/// are in the store); the thread logs the count once stdout moves again.
class stdout_writer {
public:
  using write_fn = std::function<void(const std::string&)>;
  /// `write` empty: fwrite and fflush to stdout.
  explicit stdout_writer(size_t max_bytes, write_fn write = {});
  /// The thread writes what is queued and ends; nobody waits for it.
  ~stdout_writer();
  stdout_writer(const stdout_writer&) = delete;
  stdout_writer& operator=(const stdout_writer&) = delete;

  /// Queues `text` (`lines` lines); false, and counted as dropped, if the
  /// queue would then hold more than max_bytes.
  bool offer(std::string text, uint64_t lines);
  uint64_t dropped_lines() const;
  /// Waits until everything queued is written; false after `timeout`.
  bool wait_idle(std::chrono::milliseconds timeout) const;

  struct shared;

private:
  std::shared_ptr<shared> s_;
};

/// Bytes the stdout sink holds while stdout does not keep up.
inline constexpr size_t stdout_queue_bytes = 4u << 20;

struct log_router_state {
  static inline const char* name = "log_router";
  logs_config cfg;
  std::string node;
  /// Text or JSON, for the stdout sink.
  bool json_stdout = false;
  /// The stdout sink (when logs.stdout_sink is on).
  std::shared_ptr<stdout_writer> out;
  /// Live subscribers of every line (GET /logs?follow).
  std::vector<log_subscriber_actor> subscribers;
  /// Live subscribers of one index's lines (a job's stream), by index.
  std::unordered_map<std::string, std::vector<log_subscriber_actor>> index_subscribers;
  /// Per index: the seq its next batch starts with, and batches committed
  /// before one still missing (a retried write) with their line count, held
  /// until it comes so that an index's subscribers get its lines in order.
  /// Bounded: forgotten past 4096 indexes, and at most max_held batches wait.
  struct index_order {
    uint64_t next = 0;
    std::map<uint64_t, std::pair<uint64_t, caf::message>> held;
  };
  std::unordered_map<std::string, index_order> order;
  /// A producer has only a few batches in flight (the job actor: 4), so
  /// more waiting means the missing one is not coming (its producer gave
  /// up or crashed): they go out, and readers read the gap from the store.
  static constexpr size_t max_held = 4;
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
/// fans it out once: rendered once per shape its live readers need (GET
/// /logs?follow, a job's stream) and sent as one shared message, to the
/// stdout sink, and as a nudge to the batcher registered as `loki`, which
/// reads the table at its own pace.
log_router_actor::behavior_type
log_router(log_router_actor::stateful_pointer<log_router_state> self, logs_config cfg,
           std::string node, bool json_stdout);

/// The same with a given stdout sink writer (tests; null: none).
log_router_actor::behavior_type
log_router_with(log_router_actor::stateful_pointer<log_router_state> self, logs_config cfg,
                std::string node, bool json_stdout, std::shared_ptr<stdout_writer> out);

/// Formats a line for the stdout sink (text or one JSON object), with newline.
std::string stdout_line(const persistence::stored_line& s, const log_labels& l, bool json);

} // namespace troupe
