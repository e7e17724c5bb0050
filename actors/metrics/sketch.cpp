#include "actors/metrics/sketch.hpp"

#include <algorithm>
#include <cfloat>
#include <limits>
#include <stdexcept>
#include <utility>

#include "runtime/ground/byte_codec.hpp"

namespace troupe::metrics {
namespace {

constexpr uint8_t encoding_version = 1;
constexpr double min_relative_accuracy = 1e-6;

bool valid_accuracy(double a) {
  return a >= min_relative_accuracy && a < 1;
}

} // namespace

// -- store --------------------------------------------------------------------

sketch::store::store(const store& other) : offset_(other.offset_), length_(other.length_) {
  if (length_ > 0) {
    counts_ = std::make_unique<uint64_t[]>(length_);
    std::copy_n(other.counts_.get(), length_, counts_.get());
  }
}

sketch::store::store(store&& other) noexcept
    : counts_(std::move(other.counts_)), offset_(std::exchange(other.offset_, 0)),
      length_(std::exchange(other.length_, 0)) {}

sketch::store& sketch::store::operator=(const store& other) {
  if (this != &other)
    *this = store{other};
  return *this;
}

sketch::store& sketch::store::operator=(store&& other) noexcept {
  counts_ = std::move(other.counts_);
  offset_ = std::exchange(other.offset_, 0);
  length_ = std::exchange(other.length_, 0);
  return *this;
}

void sketch::store::clear() noexcept {
  counts_.reset();
  offset_ = 0;
  length_ = 0;
}

uint64_t sketch::store::total() const noexcept {
  uint64_t sum = 0;
  for (uint32_t i = 0; i < length_; ++i)
    sum += counts_[i];
  return sum;
}

bool sketch::store::nonzero_range(int32_t& lo, int32_t& hi) const noexcept {
  uint32_t first = 0;
  while (first < length_ && counts_[first] == 0)
    ++first;
  if (first == length_)
    return false;
  uint32_t last = length_ - 1;
  while (counts_[last] == 0)
    --last;
  lo = static_cast<int32_t>(offset_ + first);
  hi = static_cast<int32_t>(offset_ + last);
  return true;
}

uint64_t sketch::store::make_room(int32_t key, uint32_t max_bins) {
  // A full store whose top bin is in use cannot move down: a lower key joins
  // the collapsed lowest bin. Checked first, as after a collapse it is common.
  if (key < offset_ && length_ == max_bins && counts_[length_ - 1] != 0)
    return 0;
  fit(key, key, max_bins);
  return key < offset_ ? 0 : static_cast<uint64_t>(int64_t{key} - offset_);
}

void sketch::store::fit(int32_t lo, int32_t hi, uint32_t max_bins) {
  int64_t new_lo = lo;
  int64_t new_hi = hi;
  int32_t data_lo = 0;
  int32_t data_hi = 0;
  bool has_data = nonzero_range(data_lo, data_hi);
  if (has_data) {
    new_lo = std::min<int64_t>(new_lo, data_lo);
    new_hi = std::max<int64_t>(new_hi, data_hi);
  }
  int64_t span = new_hi - new_lo + 1;
  if (span > max_bins) {
    // Collapsing lowest: keep the top max_bins keys.
    relocate(static_cast<int32_t>(new_hi - max_bins + 1), max_bins);
    return;
  }
  // Slack toward the side that grew, so a spreading distribution
  // reallocates O(log span) times, not once per new key.
  int64_t slack = std::max<int64_t>(16, span / 8);
  auto length = static_cast<uint32_t>(std::min<int64_t>(max_bins, span + slack));
  int64_t offset = new_lo;
  if (!has_data)
    offset = new_lo - (length - span) / 2;
  else if (lo < data_lo)
    offset = new_hi - length + 1;
  relocate(static_cast<int32_t>(offset), length);
}

void sketch::store::relocate(int32_t offset, uint32_t length) {
  if (offset == offset_ && length == length_)
    return;
  auto fresh = std::make_unique<uint64_t[]>(length);
  for (uint32_t i = 0; i < length_; ++i) {
    if (counts_[i] == 0)
      continue;
    int64_t j = int64_t{offset_} + i - offset;
    fresh[std::max<int64_t>(j, 0)] += counts_[i];
  }
  counts_ = std::move(fresh);
  offset_ = offset;
  length_ = length;
}

void sketch::store::merge(const store& other, uint32_t max_bins) {
  int32_t lo = 0;
  int32_t hi = 0;
  if (!other.nonzero_range(lo, hi))
    return;
  if (lo < offset_ || int64_t{hi} >= int64_t{offset_} + length_)
    fit(lo, hi, max_bins);
  for (int64_t k = lo; k <= hi; ++k) {
    uint64_t c = other.counts_[k - other.offset_];
    if (c != 0)
      counts_[std::max<int64_t>(k - offset_, 0)] += c;
  }
}

// Layout: varint number of bins (0: empty); then the zigzag varint key of the
// first bin and one varint count per bin, from the lowest to the highest
// non-zero bin.
void sketch::store::encode(std::string& out) const {
  int32_t lo = 0;
  int32_t hi = 0;
  if (!nonzero_range(lo, hi)) {
    codec::put_varint(out, 0);
    return;
  }
  codec::put_varint(out, static_cast<uint64_t>(int64_t{hi} - lo + 1));
  codec::put_svarint(out, lo);
  for (int64_t k = lo; k <= hi; ++k)
    codec::put_varint(out, counts_[k - offset_]);
}

bool sketch::store::decode(std::string_view& in, int32_t min_key, int32_t max_key,
                           uint32_t max_bins) {
  clear();
  uint64_t bins = 0;
  if (!codec::get_varint(in, bins))
    return false;
  if (bins == 0)
    return true;
  // Each count takes at least a byte: no allocation beyond the input's size.
  if (bins > max_bins || bins > in.size())
    return false;
  int64_t first = 0;
  if (!codec::get_svarint(in, first))
    return false;
  if (first < min_key || first > max_key || first + static_cast<int64_t>(bins) - 1 > max_key)
    return false;
  auto counts = std::make_unique<uint64_t[]>(bins);
  uint64_t sum = 0;
  for (uint64_t i = 0; i < bins; ++i)
    if (!codec::get_varint(in, counts[i]) || __builtin_add_overflow(sum, counts[i], &sum))
      return false;
  counts_ = std::move(counts);
  offset_ = static_cast<int32_t>(first);
  length_ = static_cast<uint32_t>(bins);
  return true;
}

// -- sketch -------------------------------------------------------------------

sketch::sketch(double relative_accuracy, uint32_t max_bins)
    : alpha_(relative_accuracy), multiplier_(0), max_bins_(max_bins) {
  if (!valid_accuracy(relative_accuracy))
    throw std::invalid_argument("sketch: relative_accuracy must be in [1e-6, 1)");
  if (max_bins == 0)
    throw std::invalid_argument("sketch: max_bins must be at least 1");
  // log2_approx grows at least 1 / ((1+s) * cubic_c) as fast as log2 itself
  // (the minimum of (1+s) * P'(s) over [0, 1) is cubic_c, at s = 0), so a
  // bucket 1/m wide in log2_approx spans at most log2(gamma) in log2 when
  // m = 1 / (cubic_c * ln(2) * log2(gamma)) = 1 / (cubic_c * ln(gamma)).
  double gamma_log = std::log1p(2 * relative_accuracy / (1 - relative_accuracy));
  multiplier_ = 1 / (cubic_c * gamma_log);
}

void sketch::merge(const sketch& other) {
  if (other.alpha_ != alpha_)
    throw std::invalid_argument("sketch: cannot merge sketches of different relative accuracy");
  if (&other == this) {
    sketch copy = other;
    merge(copy);
    return;
  }
  positive_.merge(other.positive_, max_bins_);
  negative_.merge(other.negative_, max_bins_);
  zero_count_ += other.zero_count_;
  count_ += other.count_;
}

sketch sketch::rebinned(double relative_accuracy) const {
  sketch out{relative_accuracy, max_bins_};
  negative_.find_if([&](int32_t k, uint64_t c) {
    out.add(-value(-k), c);
    return false;
  });
  positive_.find_if([&](int32_t k, uint64_t c) {
    out.add(value(k), c);
    return false;
  });
  out.zero_count_ += zero_count_;
  out.count_ += zero_count_;
  return out;
}

double sketch::value(int32_t k) const {
  // Inverse of log2_approx: the exponent, then Newton on the cubic (monotone
  // on [0, 1], started from the exact log2 answer).
  auto inverse = [](double y) {
    double exponent = std::floor(y);
    double t = y - exponent;
    double s = std::exp2(t) - 1;
    for (int i = 0; i < 6; ++i) {
      double p = ((cubic_a * s + cubic_b) * s + cubic_c) * s - t;
      double dp = (3 * cubic_a * s + 2 * cubic_b) * s + cubic_c;
      s -= p / dp;
    }
    return std::ldexp(1 + std::clamp(s, 0.0, 1.0), static_cast<int>(exponent));
  };
  // The top bucket's bound may exceed DBL_MAX; its values cannot.
  double lo = inverse((k - 1) / multiplier_);
  double hi = std::min(inverse(k / multiplier_), DBL_MAX);
  // The point at equal relative distance from both bounds, 2*lo*hi/(lo+hi),
  // written so that it cannot overflow.
  return 2 / (1 / lo + 1 / hi);
}

double sketch::quantile(double q) const {
  if (count_ == 0)
    return std::numeric_limits<double>::quiet_NaN();
  q = q > 0 ? std::min(q, 1.0) : 0.0; // NaN too becomes 0
  auto rank = static_cast<uint64_t>(q * static_cast<double>(count_ - 1));
  rank = std::min(rank, count_ - 1);
  double result = 0;
  auto find = [&](const store& s, double sign) {
    uint64_t seen = 0;
    s.find_if([&](int32_t k, uint64_t c) {
      seen += c;
      if (seen <= rank)
        return false;
      result = sign * value(static_cast<int32_t>(sign * k));
      return true;
    });
  };
  uint64_t negatives = negative_.total();
  if (rank < negatives) {
    find(negative_, -1);
    return result;
  }
  rank -= negatives;
  if (rank < zero_count_)
    return 0;
  rank -= zero_count_;
  find(positive_, 1);
  return result;
}

void sketch::clear() noexcept {
  positive_.clear();
  negative_.clear();
  count_ = 0;
  zero_count_ = 0;
}

size_t sketch::memory_bytes() const noexcept {
  return sizeof(*this) + positive_.heap_bytes() + negative_.heap_bytes();
}

// Layout (version 1): u8 version, f64 relative accuracy, u32 max_bins, varint
// zero count, then the negative and the positive store.
std::string sketch::encode() const {
  std::string out;
  codec::put_u8(out, encoding_version);
  codec::put_f64(out, alpha_);
  codec::put_u32(out, max_bins_);
  codec::put_varint(out, zero_count_);
  negative_.encode(out);
  positive_.encode(out);
  return out;
}

std::optional<sketch> sketch::decode(std::string_view bytes) {
  uint8_t version = 0;
  double alpha = 0;
  uint32_t max_bins = 0;
  if (!codec::get_u8(bytes, version) || version != encoding_version ||
      !codec::get_f64(bytes, alpha) || !valid_accuracy(alpha) || !codec::get_u32(bytes, max_bins) ||
      max_bins == 0)
    return std::nullopt;
  sketch s{alpha, max_bins};
  // Keys a value can have at this accuracy; anything else is forged.
  int32_t min_key = s.key(min_indexable);
  int32_t max_key = s.key(DBL_MAX);
  if (!codec::get_varint(bytes, s.zero_count_) ||
      !s.negative_.decode(bytes, -max_key, -min_key, max_bins) ||
      !s.positive_.decode(bytes, min_key, max_key, max_bins) || !bytes.empty())
    return std::nullopt;
  uint64_t count = s.zero_count_;
  if (__builtin_add_overflow(count, s.negative_.total(), &count) ||
      __builtin_add_overflow(count, s.positive_.total(), &count))
    return std::nullopt;
  s.count_ = count;
  return s;
}

} // namespace troupe::metrics
