#pragma once

// Rolling windows of observations for one series: the last minute, the last
// 15 minutes, the last hour and everything since start. Pure data: time is
// passed in, and buckets rotate lazily when a later time point arrives.
//
// Tiers: 1m = 6 buckets of 10 s, 15m = 15 of 1 min, 1h = 12 of 5 min, plus
// one lifetime aggregate. Bucket epoch = floor((now - start) / width); a
// window is the current (partial) bucket and the n-1 before it, so it covers
// between (n-1) and n bucket widths once that much time has passed.
//
// Memory per series (x86-64), as memory_bytes() counts it:
// - never fed: sizeof(window_ring) = 160 bytes; the first add allocates the
//   33 buckets (112 bytes each, 3,696 in all);
// - fed: 160 + 3,696 + the bins of the 34 sketches (33 buckets + lifetime),
//   8 bytes per bin; a store spans its lowest to its highest key plus at
//   most an eighth (and 16 bins) of slack, and never more than max_bins keys;
// - worst case: 3,856 + 34 sketches x 2 stores x max_bins x 8 bytes
//   = 3,856 + 544 x max_bins bytes (1,117,968 for max_bins = 2048), reached
//   only when every bucket sees values of both signs spanning a ratio of
//   gamma^max_bins (~1e17 at 1 %).
// At 1 % a store needs ~116 bins per decade: latencies over 4 decades take
// ~460 bins (~3.7 KiB) per sketch. benchmarks/metrics.sh measures a series fed
// 1,000 lognormal latencies a second for an hour at ~135 KB.
// expire() releases the bins of stale buckets and, once all are stale, the
// bucket array: a series gone quiet then costs 160 bytes plus its lifetime's
// bins.

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/metrics/sketch.hpp"

namespace troupe::metrics {

/// The windows a series reports.
enum class window : uint8_t { m1, m15, h1, all };

/// "1m", "15m", "1h", "all".
const char* to_string(window w);

/// Mergeable summary of observations: count, sum, extremes and a sketch.
/// Non-finite values are ignored, as the sketch ignores them.
struct aggregate {
  uint64_t count = 0;
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  sketch values;

  explicit aggregate(double relative_accuracy = 0.01, uint32_t max_bins = 2048);

  void add(double v, uint64_t n = 1);

  /// Throws std::invalid_argument (and changes nothing) if the sketches'
  /// relative accuracies differ.
  void merge(const aggregate& other);

  void clear();

  /// sizeof(*this) plus the sketch's bins.
  size_t memory_bytes() const noexcept;

  /// Version byte, count, sum, min, max, then the sketch's encoding.
  std::string encode() const;

  /// Parses `encode()` output; nullopt on malformed or truncated input.
  static std::optional<aggregate> decode(std::string_view bytes);
};

/// What a window reports. min, max, avg and the percentiles are NaN when the
/// window holds no observation.
struct window_stats {
  window w = window::all;
  uint64_t count = 0;
  double sum = 0;
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
  double avg = std::numeric_limits<double>::quiet_NaN();
  /// count / seconds; 0 while seconds is 0.
  double rate = 0;
  /// The time the window's buckets span, from the start of its oldest live
  /// bucket (or the ring's start) to now: the time since start until the
  /// window has filled, then between (n-1)/n of the window length and all of it.
  double seconds = 0;
  double p50 = std::numeric_limits<double>::quiet_NaN();
  double p95 = std::numeric_limits<double>::quiet_NaN();
  double p99 = std::numeric_limits<double>::quiet_NaN();
};

/// The rolling windows of one series; see the file comment.
class window_ring {
public:
  using clock = std::chrono::steady_clock;

  /// Throws std::invalid_argument for an invalid accuracy or max_bins (see sketch).
  explicit window_ring(clock::time_point start, double relative_accuracy = 0.01,
                       uint32_t max_bins = 2048);

  /// Records `v` `n` times at `now`. A `now` before the latest time seen
  /// counts as the latest time seen.
  void add(clock::time_point now, double v, uint64_t n = 1);

  /// Records everything in `delta` at `now`. A delta of another relative
  /// accuracy is re-binned to the ring's first (sketch::rebinned).
  void merge(clock::time_point now, const aggregate& delta);

  /// The summary of window `w` as of `now` (a `now` before the latest time
  /// seen counts as the latest time seen).
  window_stats stats(clock::time_point now, window w) const;

  /// Quantile q of window `w` as of `now` (see sketch::quantile).
  double quantile(clock::time_point now, window w, double q) const;

  /// All live buckets of window `w` merged.
  aggregate merged(clock::time_point now, window w) const;

  /// Everything since start; the same as window::all.
  const aggregate& lifetime() const { return lifetime_; }

  /// Clears the buckets that have gone stale as of `now`, releasing their
  /// bins, and the bucket array when all are; windows report the same after.
  void expire(clock::time_point now);

  clock::time_point start() const { return start_; }

  /// sizeof(*this) plus everything it allocated.
  size_t memory_bytes() const;

private:
  struct bucket {
    /// floor((time - start) / width) of the observations held; -1: none.
    int64_t epoch = -1;
    aggregate data;
  };

  /// Time since start_ as of max(now, latest_).
  clock::duration elapsed(clock::time_point now) const;

  /// Live buckets of tier `w` as of `since_start`, oldest epoch first.
  template <class F> void for_each_live(window w, clock::duration since_start, F f) const;

  /// Moves latest_ to `now` and calls f with the current bucket of each
  /// tier, reset if it held an older epoch.
  template <class F> void for_each_current(clock::time_point now, F f);

  clock::time_point start_;
  clock::time_point latest_;
  /// Until then, current_ names the current buckets: the tiers' widths are
  /// multiples of the 10 s of the first, so none rotates before it does.
  clock::time_point current_until_;
  std::array<uint8_t, 3> current_{};
  /// The tiers' buckets, one after the other: 1m, 15m, 1h.
  std::vector<bucket> buckets_;
  aggregate lifetime_;
};

} // namespace troupe::metrics
