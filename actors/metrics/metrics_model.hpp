#pragma once

// What troupe measures: the metric families (internal key, exported name,
// kind, unit, labels, histogram bounds), the name mapping from config, and
// the recorder that hot paths (HTTP io threads) fill without messaging.

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/metrics/window_ring.hpp"

namespace troupe::metrics {

enum class kind : uint8_t { counter, gauge, histogram };

const char* to_string(kind k);

/// A metric family. Its series differ by label values.
struct family {
  /// Internal key, e.g. `http.request.duration`; what `metrics.mapping` maps.
  std::string key;
  /// Exported Prometheus name (counters end in `_total`).
  std::string name;
  kind type = kind::gauge;
  /// Unit of the values (`seconds`, `entries`, `count`, `ratio` …).
  std::string unit;
  std::string help;
  std::vector<std::string> label_names;
  /// Histograms: upper bounds of the buckets (`+Inf` implied).
  std::vector<double> bounds;
  /// Histograms: also exported as a counter of observations under this name
  /// (e.g. troupe_http_requests_total); empty: not.
  std::string count_name;
  /// Windowed (a metric_window actor per series). Plain counters/gauges that
  /// need no windows are kept by the registry itself.
  bool windowed = true;
};

/// Every family troupe knows, in exposition order. A deque: the pointers
/// find_family hands out stay valid when add_family appends.
const std::deque<family>& families();

/// The family with this internal key, or nullptr.
const family* find_family(std::string_view key);

/// Registers an extra family (apps add theirs; tests too). Returns false if
/// the key exists. Not thread-safe: call before the registry starts.
bool add_family(family f);

/// Exported names and units after `metrics.mapping` (internal key → {name, unit}).
class naming {
public:
  naming() = default;
  /// Parses the mapping JSON object; throws std::invalid_argument naming the
  /// key and the reason (unknown family key, invalid name, counter without _total).
  explicit naming(std::string_view mapping_json);
  /// The exported name of a family.
  const std::string& name(const family& f) const;
  const std::string& unit(const family& f) const;

private:
  std::map<std::string, std::pair<std::string, std::string>, std::less<>> overrides_;
};

/// `name` without a trailing `_total` (a counter's base name).
std::string without_total(const std::string& name);

/// Every metric name family `f` exports under `name`: its samples (histogram
/// _bucket/_sum/_count, the count counter) and its window families.
std::vector<std::string> exported_names(const family& f, const std::string& name);

/// The series id: family key plus label pairs, e.g.
/// `http.request.duration{method=GET,route=/jobs,status=200}`.
std::string series_id(const family& f, const std::vector<std::string>& labels);

/// Accumulates observations of hot paths between two registry ticks; the
/// registry drains it with take(). Thread-safe; one short lock per call.
/// At most `max_series` distinct series are ever admitted (the registry's
/// cap, so a label flood cannot grow it); observations of further ones are
/// dropped, and take() hands on how many series were refused since the last
/// call as a `metrics.dropped` delta.
class recorder {
public:
  explicit recorder(double relative_accuracy = 0.01, size_t max_series = 20000);

  /// A histogram observation.
  void observe(const family& f, const std::vector<std::string>& labels, double value);
  /// A counter increment.
  void add(const family& f, const std::vector<std::string>& labels, double n = 1);
  /// Everything since the last call, one delta per series.
  metric_deltas take();
  /// Series currently pending (for tests and status).
  size_t pending() const;

private:
  struct pending_series {
    const family* fam = nullptr;
    std::vector<std::string> labels;
    double increment = 0;
    aggregate obs;
    std::vector<uint64_t> buckets;
    explicit pending_series(double alpha) : obs(alpha) {}
  };
  /// nullptr when the series is new and max_series were already admitted.
  pending_series* slot(const family& f, const std::vector<std::string>& labels);

  double alpha_;
  size_t max_series_;
  // Under mtx_: every series admitted so far (at most max_series), and those
  // refused since the last take (at most 65,536 are told apart).
  std::unordered_set<std::string> admitted_;
  std::unordered_set<std::string> refused_;
  mutable std::mutex mtx_;
  std::unordered_map<std::string, pending_series> pending_;
  std::string key_; // reused lookup key (under mtx_)
};

/// Latest values of gauges kept by actors (queue depth, sink lag). The
/// registry reads the board on every tick (a pull source), so a gauge keeps
/// being sampled while it does not change and a restarted registry learns
/// every value again at once. Thread-safe.
class gauge_board {
public:
  void set(const std::string& family, std::vector<std::string> labels, double value);
  /// One gauge delta per value set so far.
  metric_deltas read() const;

private:
  mutable std::mutex mtx_;
  std::map<std::string, metric_delta> values_;
};

/// The `method` label of an HTTP request: one of GET, HEAD, POST, PUT, DELETE,
/// PATCH, OPTIONS, or OTHER for anything else (a client cannot mint series).
std::string_view method_label(std::string_view method) noexcept;

/// Index of the bucket `value` falls in (`bounds.size()` for +Inf).
size_t bucket_index(const std::vector<double>& bounds, double value);

} // namespace troupe::metrics
