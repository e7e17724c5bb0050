#pragma once

// A mergeable quantile sketch with a relative-error guarantee, after DDSketch
// (Masson, Rim, Lee: "DDSketch: a fast and fully-mergeable quantile sketch
// with relative-error guarantees", VLDB 2019).
//
// Values are counted in buckets of geometrically growing width: bucket i of
// the positive store holds the values v with (i-1)/m < f(v) <= i/m, where f is
// log2 approximated by a cubic between powers of two (DDSketch's "cubically
// interpolated mapping": no std::log per add). m is chosen so that each
// bucket spans at most a ratio gamma = (1+a)/(1-a) between its bounds lo and
// hi; a quantile answers the bucket's representative 2*lo*hi/(lo+hi) (for
// the exact log mapping that is 2*gamma^i/(gamma+1)), whose relative error to
// any value of the bucket is at most (gamma-1)/(gamma+1) = a.
//
// Negative values go to a second store keyed by -i(|v|) (so keys ascend with
// values); |v| < min_indexable counts as zero. Each store is a dense array
// from its lowest to its highest key (plus some slack to grow into). When a
// store would span more than max_bins keys, its lowest keys are folded into
// one bin (DDSketch's "collapsing lowest"): memory stays bounded, and only the
// lowest values of that store lose their guarantee.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::metrics {

/// A relative-error quantile sketch; see the file comment.
class sketch {
public:
  /// Values with a smaller magnitude are counted as zero.
  static constexpr double min_indexable = 1e-9;

  /// `relative_accuracy` in [1e-6, 1), `max_bins` >= 1 per store (negative and
  /// positive); throws std::invalid_argument otherwise.
  explicit sketch(double relative_accuracy = 0.01, uint32_t max_bins = 2048);

  /// Counts `value` `n` times; NaN and infinities are ignored.
  void add(double value, uint64_t n = 1);

  /// Adds the counts of `other`; throws std::invalid_argument if its relative
  /// accuracy differs. Keeps this sketch's max_bins.
  void merge(const sketch& other);

  /// A sketch of `relative_accuracy` holding this one's counts, each bin's
  /// count at its representative value: quantiles of the result are within
  /// about the sum of both accuracies. Used to merge sketches made with
  /// another accuracy (a producer configured differently) instead of failing.
  sketch rebinned(double relative_accuracy) const;

  /// The value at 0-based rank floor(q * (count - 1)) in ascending order (the
  /// lower quantile: q = 0 is the minimum, q = 1 the maximum, q = 0.5 of 4
  /// values the second), within relative error a as long as no bins were
  /// collapsed below it. q is clamped to [0, 1]; NaN when empty.
  double quantile(double q) const;

  /// Number of values counted.
  uint64_t count() const noexcept { return count_; }

  bool empty() const noexcept { return count_ == 0; }

  /// Forgets all values and releases the bins.
  void clear() noexcept;

  double relative_accuracy() const noexcept { return alpha_; }

  uint32_t max_bins() const noexcept { return max_bins_; }

  /// sizeof(*this) plus the bins it allocated.
  size_t memory_bytes() const noexcept;

  /// Compact binary form: version byte, little-endian fields, LEB128 counts.
  std::string encode() const;

  /// Parses `encode()` output; nullopt on malformed or truncated input.
  static std::optional<sketch> decode(std::string_view bytes);

private:
  /// Counts of the consecutive keys [offset, offset + length).
  class store {
  public:
    store() = default;
    store(const store& other);
    store(store&& other) noexcept;
    store& operator=(const store& other);
    store& operator=(store&& other) noexcept;
    ~store() = default;

    void add(int32_t key, uint64_t n, uint32_t max_bins) {
      auto i = static_cast<uint64_t>(int64_t{key} - offset_);
      if (i >= length_)
        i = make_room(key, max_bins);
      counts_[i] += n;
    }
    void merge(const store& other, uint32_t max_bins);
    void clear() noexcept;
    /// Sum of the counts.
    uint64_t total() const noexcept;
    /// Calls f(key, count) for each non-zero bin, keys ascending; stops at the
    /// first call that returns true.
    template <class F> void find_if(F f) const {
      for (uint32_t i = 0; i < length_; ++i)
        if (counts_[i] != 0 && f(static_cast<int32_t>(offset_ + i), counts_[i]))
          return;
    }
    size_t heap_bytes() const noexcept { return size_t{length_} * sizeof(uint64_t); }
    void encode(std::string& out) const;
    /// Reads what encode wrote; false on malformed input.
    bool decode(std::string_view& in, int32_t min_key, int32_t max_key, uint32_t max_bins);

  private:
    /// Makes `key` addressable, growing or collapsing; returns its index
    /// (0 when it falls below a collapsed store).
    uint64_t make_room(int32_t key, uint32_t max_bins);
    /// Grows or collapses so that the keys [lo, hi] can be added.
    void fit(int32_t lo, int32_t hi, uint32_t max_bins);
    /// Moves the counts to the window [offset, offset + length); counts below
    /// it are folded into its first bin.
    void relocate(int32_t offset, uint32_t length);
    /// Lowest and highest keys with a non-zero count; false if none.
    bool nonzero_range(int32_t& lo, int32_t& hi) const noexcept;

    std::unique_ptr<uint64_t[]> counts_;
    int32_t offset_ = 0;
    uint32_t length_ = 0;
  };

  /// Approximates log2(v) for a positive normal v: the exponent plus a cubic
  /// in the significand s - 1 that is exact at powers of two.
  static double log2_approx(double v) noexcept {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    auto exponent = static_cast<double>(static_cast<int64_t>(bits >> 52) - 1023);
    uint64_t significand_bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double s;
    std::memcpy(&s, &significand_bits, sizeof s);
    s -= 1;
    return ((cubic_a * s + cubic_b) * s + cubic_c) * s + exponent;
  }

  /// Bucket key of a value >= min_indexable: ceil(log2_approx(v) * m).
  int32_t key(double v) const noexcept {
    double x = log2_approx(v) * multiplier_;
    auto k = static_cast<int32_t>(x);
    return k + (static_cast<double>(k) < x);
  }

  /// Representative value of positive key `k`.
  double value(int32_t k) const;

  static constexpr double cubic_a = 6.0 / 35.0;
  static constexpr double cubic_b = -3.0 / 5.0;
  static constexpr double cubic_c = 10.0 / 7.0;

  double alpha_;
  double multiplier_;
  uint64_t count_ = 0;
  uint64_t zero_count_ = 0;
  store positive_;
  store negative_;
  uint32_t max_bins_;
};

inline void sketch::add(double value, uint64_t n) {
  if (n == 0 || !std::isfinite(value))
    return;
  if (value > min_indexable)
    positive_.add(key(value), n, max_bins_);
  else if (value < -min_indexable)
    negative_.add(-key(-value), n, max_bins_);
  else
    zero_count_ += n;
  count_ += n;
}

} // namespace troupe::metrics
