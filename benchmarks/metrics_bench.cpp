// Driver for benchmarks/metrics.sh: the windowed-percentile data structures
// on synthetic data, in one run.
//   (a) sketch inserts of lognormal latencies, ns per insert;
//   (b) a window_ring fed one hour of samples at synthetic timestamps: the 1h
//       p99 query (median of several) against std::nth_element over a copy
//       of the same samples, and the sketch's relative error to the exact p99;
//   (c) memory_bytes of an idle series, a busy one, and the busy one after
//       it went quiet for two hours (expire()).
// Prints one line of key=value pairs.
//
//   metrics_bench [INSERTS [SAMPLES_PER_SECOND]]   (defaults 10000000, 1000)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "actors/metrics/sketch.hpp"
#include "actors/metrics/window_ring.hpp"

using namespace troupe::metrics;
using steady = std::chrono::steady_clock;

namespace {

double seconds_since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

double median(std::vector<double> xs) {
  std::nth_element(xs.begin(), xs.begin() + xs.size() / 2, xs.end());
  return xs[xs.size() / 2];
}

/// Latencies in seconds: median 2 ms, 99th percentile ~20 ms.
std::vector<double> latencies(size_t n, uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::lognormal_distribution<double> dist{std::log(0.002), 1.0};
  std::vector<double> values(n);
  for (auto& v : values)
    v = dist(rng);
  return values;
}

} // namespace

int main(int argc, char** argv) {
  size_t inserts = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 10'000'000;
  size_t per_second = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000;
  if (inserts == 0 || per_second == 0) {
    std::fprintf(stderr, "usage: %s [INSERTS [SAMPLES_PER_SECOND]]\n", argv[0]);
    return 2;
  }

  // (a) Inserts; the best of three passes, each into a fresh sketch.
  auto values = latencies(inserts, 1);
  double insert_ns = 1e300;
  double sink = 0;
  for (int pass = 0; pass < 3; ++pass) {
    sketch s;
    auto start = steady::now();
    for (auto v : values)
      s.add(v);
    insert_ns = std::min(insert_ns, seconds_since(start) * 1e9 / static_cast<double>(inserts));
    sink += s.quantile(0.99) + static_cast<double>(s.count());
  }
  std::vector<double>().swap(values);

  // (b) One hour at per_second samples a second.
  const size_t samples = per_second * 3600;
  auto hour = latencies(samples, 2);
  const auto t0 = window_ring::clock::time_point{} + std::chrono::hours{1000};
  const auto step = std::chrono::nanoseconds{1'000'000'000 / per_second};
  window_ring ring{t0};
  const size_t idle_bytes = ring.memory_bytes();
  auto feed_start = steady::now();
  for (size_t i = 0; i < samples; ++i)
    ring.add(t0 + step * static_cast<int64_t>(i), hour[i]);
  double ring_add_ns = seconds_since(feed_start) * 1e9 / static_cast<double>(samples);
  // At the last sample's time the 1h window holds every sample.
  const auto now = t0 + step * static_cast<int64_t>(samples - 1);

  std::vector<double> query_us;
  double p99_sketch = 0;
  for (int i = 0; i < 31; ++i) {
    auto start = steady::now();
    p99_sketch = ring.quantile(now, window::h1, 0.99);
    query_us.push_back(seconds_since(start) * 1e6);
  }
  auto stats_start = steady::now();
  auto h1 = ring.stats(now, window::h1);
  double stats_us = seconds_since(stats_start) * 1e6;

  std::vector<double> peer_ms;
  double p99_exact = 0;
  const auto rank = static_cast<size_t>(0.99 * static_cast<double>(samples - 1));
  for (int i = 0; i < 5; ++i) {
    auto start = steady::now();
    std::vector<double> copy = hour;
    std::nth_element(copy.begin(), copy.begin() + rank, copy.end());
    p99_exact = copy[rank];
    peer_ms.push_back(seconds_since(start) * 1e3);
  }
  double query = median(query_us);
  double peer = median(peer_ms);
  double error_pct = std::abs(p99_sketch - p99_exact) / p99_exact * 100;

  // (c) Memory.
  const size_t busy_bytes = ring.memory_bytes();
  ring.expire(now + std::chrono::hours{2});
  const size_t quiet_bytes = ring.memory_bytes();

  std::printf("inserts=%zu insert_ns=%.2f samples=%zu ring_add_ns=%.2f h1_count=%llu "
              "p99_query_us=%.1f stats_us=%.1f nth_element_ms=%.2f speedup=%.0f "
              "p99_exact_ms=%.4f p99_sketch_ms=%.4f p99_error_pct=%.3f idle_bytes=%zu "
              "busy_bytes=%zu quiet_bytes=%zu\n",
              inserts, insert_ns, samples, ring_add_ns, static_cast<unsigned long long>(h1.count),
              query, stats_us, peer, peer * 1e3 / query, p99_exact * 1e3, p99_sketch * 1e3,
              error_pct, idle_bytes, busy_bytes, quiet_bytes);
  return sink == 0 ? 1 : 0;
}
