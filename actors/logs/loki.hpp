#pragma once

// The Loki shipping policy as pure functions: push body, compression, retry
// timing, circuit breaking, batching and log-level detection. No I/O here, so
// every rule can be pinned down by a test with explicit inputs.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::loki {

/// One log entry as shipped.
struct entry {
  int64_t ts_ns; ///< nanoseconds since epoch
  std::string line;
  /// service, instance, namespace, level, source, node
  std::map<std::string, std::string> labels;
  std::string request_id; ///< may be empty
};

/// Where an entry's request id goes.
enum class request_id_mode { structured_metadata, label };

/// Loki push API body (POST /loki/api/v1/push, JSON). Entries are grouped into
/// streams by label set (plus `request_id` as a label in `label` mode); streams
/// keep the order of first appearance, values the input order. A value is
/// `["<ts_ns>", "<line>"]`, or `["<ts_ns>", "<line>", {"request_id": "<id>"}]`
/// in structured_metadata mode when the entry has a request id. Invalid UTF-8
/// is replaced with U+FFFD rather than failing.
std::string push_body(const std::vector<entry>& entries, request_id_mode mode);

/// Writes a push body by hand, stream by stream, without a JSON tree: what
/// the batcher uses on its hot path. The caller groups entries into streams.
class push_body_builder {
public:
  /// Starts a stream with these labels and returns its number.
  size_t add_stream(const std::vector<std::pair<std::string_view, std::string_view>>& labels);
  /// Appends a value to stream `n`: `["<ts_ns>", "<line>"]`, plus
  /// `{"request_id": …}` when `request_id` is not empty.
  void add(size_t n, int64_t ts_ns, std::string_view line, std::string_view request_id);
  /// The body; the builder is empty afterwards.
  std::string finish();
  size_t streams() const noexcept { return heads_.size(); }

private:
  std::vector<std::string> heads_;
  std::vector<std::string> values_;
};

/// gzip (RFC 1952) of `data`. Throws std::runtime_error if zlib fails.
std::string gzip(std::string_view data);

/// The shortest delay backoff() ever returns.
inline constexpr std::chrono::milliseconds backoff_floor{10};

/// Exponential backoff with full jitter for the n-th consecutive failure
/// (n >= 1): uniform in [0, min(max, initial * 2^(n-1))] but never below
/// backoff_floor. `rng01` in [0, 1) is the caller's random draw.
std::chrono::milliseconds backoff(int failures, std::chrono::milliseconds initial,
                                  std::chrono::milliseconds max, double rng01);

/// A Retry-After header (RFC 7231 7.1.3): delta-seconds or an HTTP-date,
/// relative to `now`. nullopt if empty or malformed; negative delays become 0.
std::optional<std::chrono::milliseconds> retry_after(std::string_view header,
                                                     std::chrono::system_clock::time_point now);

/// Circuit breaker: closed → open after `threshold` consecutive failures; open
/// rejects until `cooldown` has passed, then half-open lets exactly one probe
/// through; its success closes (failures reset), its failure reopens (cooldown
/// restarts). Time is passed in.
class breaker {
public:
  enum class state { closed, open, half_open };
  using time_point = std::chrono::steady_clock::time_point;

  breaker(int threshold, std::chrono::milliseconds cooldown);

  /// May a request go out now? In half-open: true once, until its result is
  /// recorded. (Parenthesised so CAF's test DSL macro `allow` leaves it alone.)
  bool(allow)(time_point now);
  /// Records a successful request.
  void success();
  /// Records a failed request.
  void failure(time_point now);
  /// The state at `now`.
  state current(time_point now) const;
  int consecutive_failures() const { return failures_; }

private:
  int threshold_;
  std::chrono::milliseconds cooldown_;
  int failures_ = 0;
  bool tripped_ = false;
  bool probe_out_ = false;
  time_point opened_at_{};
};

/// When a batch is due.
struct batch_limits {
  size_t max_entries = 100;
  size_t max_bytes = 1 << 20;
  std::chrono::milliseconds max_wait{1000};
};

/// decide()'s answer: flush now, or check again after `wait`.
struct batch_decision {
  bool flush;
  std::chrono::milliseconds wait;
};

/// Flush when pending entries >= max_entries, bytes >= max_bytes, or the
/// oldest is max_wait old; never with nothing pending. Otherwise wait
/// max_wait - oldest_age (max_wait when empty).
batch_decision decide(const batch_limits& limits, size_t pending_entries, size_t pending_bytes,
                      std::chrono::milliseconds oldest_age);

/// What to do with a batch after a push.
enum class outcome { ok, drop, retry };

/// 2xx → ok; 408, 429, 5xx and transport errors (status 0) → retry;
/// anything else (other 4xx, 3xx: resending cannot help) → drop.
outcome classify(unsigned status);

} // namespace troupe::loki
