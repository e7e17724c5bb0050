#pragma once

// CPU (percent of a core) and RSS (bytes) samples in rolling 1m/15m/1h
// windows: what an instance keeps of its own samples and an app of their
// sums. The rings are made at the first sample.

#include <memory>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/metrics/metrics.hpp"
#include "actors/metrics/window_ring.hpp"

namespace troupe::apps {

class usage_windows {
public:
  using time_point = metrics::window_ring::clock::time_point;

  void add(time_point now, double cpu_percent, double rss_bytes) {
    if (!cpu_) {
      cpu_ = std::make_unique<metrics::window_ring>(now);
      rss_ = std::make_unique<metrics::window_ring>(now);
    }
    cpu_->add(now, cpu_percent);
    rss_->add(now, rss_bytes);
  }

  /// Fills `cpu` and `rss` with the windows as of `now` (left empty before
  /// the first sample).
  void summarize(time_point now, std::vector<metric_window_stats>& cpu,
                 std::vector<metric_window_stats>& rss) const {
    if (!cpu_)
      return;
    cpu = window_summary(*cpu_, now, metrics::kind::gauge);
    rss = window_summary(*rss_, now, metrics::kind::gauge);
  }

private:
  std::unique_ptr<metrics::window_ring> cpu_;
  std::unique_ptr<metrics::window_ring> rss_;
};

} // namespace troupe::apps
