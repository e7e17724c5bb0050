#include "actors/metrics/window_ring.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <stdexcept>

#include "runtime/ground/byte_codec.hpp"

namespace troupe::metrics {
namespace {

using namespace std::chrono_literals;

constexpr uint8_t aggregate_encoding_version = 1;

/// A tier of the ring: `size` buckets of `width`, stored from `first` on.
struct tier {
  std::chrono::seconds width;
  int64_t size;
  size_t first;
};

// Indexed by window (m1, m15, h1).
constexpr tier tiers[] = {{10s, 6, 0}, {60s, 15, 6}, {300s, 12, 21}};
static_assert(tiers[1].width % tiers[0].width == 0s && tiers[2].width % tiers[0].width == 0s,
              "window_ring::add caches the current buckets until the first tier rotates");
constexpr size_t bucket_count = 33;

const tier& tier_of(window w) {
  return tiers[static_cast<size_t>(w)];
}

double to_seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

} // namespace

const char* to_string(window w) {
  switch (w) {
  case window::m1:
    return "1m";
  case window::m15:
    return "15m";
  case window::h1:
    return "1h";
  case window::all:
    return "all";
  }
  return "?";
}

// -- aggregate ----------------------------------------------------------------

aggregate::aggregate(double relative_accuracy, uint32_t max_bins)
    : values(relative_accuracy, max_bins) {}

void aggregate::add(double v, uint64_t n) {
  if (n == 0 || !std::isfinite(v))
    return;
  count += n;
  sum += v * static_cast<double>(n);
  min = std::min(min, v);
  max = std::max(max, v);
  values.add(v, n);
}

void aggregate::merge(const aggregate& other) {
  values.merge(other.values); // first: it is what may throw
  count += other.count;
  sum += other.sum;
  min = std::min(min, other.min);
  max = std::max(max, other.max);
}

void aggregate::clear() {
  count = 0;
  sum = 0;
  min = std::numeric_limits<double>::infinity();
  max = -std::numeric_limits<double>::infinity();
  values.clear();
}

size_t aggregate::memory_bytes() const noexcept {
  return sizeof(*this) - sizeof(values) + values.memory_bytes();
}

std::string aggregate::encode() const {
  std::string out;
  codec::put_u8(out, aggregate_encoding_version);
  codec::put_varint(out, count);
  codec::put_f64(out, sum);
  codec::put_f64(out, min);
  codec::put_f64(out, max);
  out += values.encode();
  return out;
}

std::optional<aggregate> aggregate::decode(std::string_view bytes) {
  uint8_t version = 0;
  uint64_t count = 0;
  double sum = 0;
  double min = 0;
  double max = 0;
  if (!codec::get_u8(bytes, version) || version != aggregate_encoding_version ||
      !codec::get_varint(bytes, count) || !codec::get_f64(bytes, sum) ||
      !codec::get_f64(bytes, min) || !codec::get_f64(bytes, max))
    return std::nullopt;
  auto values = sketch::decode(bytes);
  // The sketch counts what the aggregate counts; extremes exist iff values do.
  if (!values || values->count() != count || std::isnan(sum))
    return std::nullopt;
  if (count > 0 && !(std::isfinite(min) && std::isfinite(max) && min <= max))
    return std::nullopt;
  aggregate result{values->relative_accuracy(), values->max_bins()};
  result.count = count;
  result.sum = sum;
  if (count > 0) {
    result.min = min;
    result.max = max;
  }
  result.values = std::move(*values);
  return result;
}

// -- window_ring --------------------------------------------------------------

window_ring::window_ring(clock::time_point start, double relative_accuracy, uint32_t max_bins)
    : start_(start), latest_(start), current_until_(start), lifetime_(relative_accuracy, max_bins) {
}

window_ring::clock::duration window_ring::elapsed(clock::time_point now) const {
  return std::max(now, latest_) - start_;
}

template <class F> void window_ring::for_each_current(clock::time_point now, F f) {
  latest_ = std::max(now, latest_);
  if (latest_ >= current_until_) {
    if (buckets_.empty())
      buckets_.assign(bucket_count, bucket{-1, aggregate{lifetime_.values.relative_accuracy(),
                                                         lifetime_.values.max_bins()}});
    auto since_start = latest_ - start_;
    for (size_t i = 0; i < std::size(tiers); ++i) {
      const auto& t = tiers[i];
      int64_t epoch = since_start / t.width;
      auto slot = static_cast<size_t>(epoch % t.size);
      auto& b = buckets_[t.first + slot];
      if (b.epoch != epoch) {
        b.data.clear();
        b.epoch = epoch;
      }
      current_[i] = static_cast<uint8_t>(slot);
    }
    current_until_ = start_ + (since_start / tiers[0].width + 1) * tiers[0].width;
  }
  for (size_t i = 0; i < std::size(tiers); ++i)
    f(buckets_[tiers[i].first + current_[i]].data);
}

template <class F>
void window_ring::for_each_live(window w, clock::duration since_start, F f) const {
  if (buckets_.empty())
    return;
  const auto& t = tier_of(w);
  int64_t epoch = since_start / t.width;
  for (int64_t e = std::max<int64_t>(0, epoch - t.size + 1); e <= epoch; ++e) {
    const auto& b = buckets_[t.first + static_cast<size_t>(e % t.size)];
    if (b.epoch == e)
      f(b.data);
  }
}

void window_ring::add(clock::time_point now, double v, uint64_t n) {
  if (n == 0 || !std::isfinite(v))
    return;
  for_each_current(now, [&](aggregate& a) { a.add(v, n); });
  lifetime_.add(v, n);
}

void window_ring::merge(clock::time_point now, const aggregate& delta) {
  auto alpha = lifetime_.values.relative_accuracy();
  if (delta.values.relative_accuracy() != alpha) {
    // A producer with another accuracy: re-bin its counts rather than fail.
    aggregate converted = delta;
    converted.values = delta.values.rebinned(alpha);
    merge(now, converted);
    return;
  }
  for_each_current(now, [&](aggregate& a) { a.merge(delta); });
  lifetime_.merge(delta);
}

aggregate window_ring::merged(clock::time_point now, window w) const {
  if (w == window::all)
    return lifetime_;
  aggregate result{lifetime_.values.relative_accuracy(), lifetime_.values.max_bins()};
  for_each_live(w, elapsed(now), [&](const aggregate& a) { result.merge(a); });
  return result;
}

window_stats window_ring::stats(clock::time_point now, window w) const {
  window_stats s;
  s.w = w;
  auto since_start = elapsed(now);
  auto summarize = [&](const aggregate& a) {
    s.count = a.count;
    s.sum = a.sum;
    s.rate = s.seconds > 0 ? static_cast<double>(a.count) / s.seconds : 0;
    if (a.count == 0)
      return;
    s.min = a.min;
    s.max = a.max;
    s.avg = a.sum / static_cast<double>(a.count);
    s.p50 = a.values.quantile(0.5);
    s.p95 = a.values.quantile(0.95);
    s.p99 = a.values.quantile(0.99);
  };
  if (w == window::all) {
    s.seconds = to_seconds(since_start);
    summarize(lifetime_);
    return s;
  }
  const auto& t = tier_of(w);
  int64_t oldest = std::max<int64_t>(0, since_start / t.width - t.size + 1);
  s.seconds = to_seconds(since_start - oldest * t.width);
  summarize(merged(now, w));
  return s;
}

double window_ring::quantile(clock::time_point now, window w, double q) const {
  if (w == window::all)
    return lifetime_.values.quantile(q);
  return merged(now, w).values.quantile(q);
}

void window_ring::expire(clock::time_point now) {
  latest_ = std::max(now, latest_);
  if (buckets_.empty())
    return;
  auto since_start = latest_ - start_;
  bool any_live = false;
  for (const auto& t : tiers) {
    int64_t epoch = since_start / t.width;
    for (size_t i = 0; i < static_cast<size_t>(t.size); ++i) {
      auto& b = buckets_[t.first + i];
      if (b.epoch >= 0 && b.epoch > epoch - t.size) {
        any_live = true;
        continue;
      }
      b.data.clear();
      b.epoch = -1;
    }
  }
  if (!any_live) {
    std::vector<bucket>().swap(buckets_);
    current_until_ = start_; // the next add allocates and picks the buckets again
  }
}

size_t window_ring::memory_bytes() const {
  auto heap = [](const aggregate& a) { return a.memory_bytes() - sizeof(aggregate); };
  size_t total = sizeof(*this) + buckets_.capacity() * sizeof(bucket) + heap(lifetime_);
  for (const auto& b : buckets_)
    total += heap(b.data);
  return total;
}

} // namespace troupe::metrics
