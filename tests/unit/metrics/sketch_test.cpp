#define CAF_SUITE sketch
#include "support/dsl.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/metrics/sketch.hpp"
#include "actors/metrics/window_ring.hpp"
#include "runtime/ground/byte_codec.hpp"

using namespace troupe;
using namespace troupe::metrics;
using namespace std::chrono_literals;

namespace {

// CAF_CHECK_EQUAL compares doubles within 1e-5 relative; CAF_CHECK(a == b)
// is used where bit-exact equality is the point.

const std::vector<double> quantiles = {0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1};

/// The exact value at the sketch's rank convention: floor(q * (n - 1)).
double exact_quantile(std::vector<double> values, double q) {
  auto rank = static_cast<size_t>(q * static_cast<double>(values.size() - 1));
  std::nth_element(values.begin(), values.begin() + rank, values.end());
  return values[rank];
}

/// Relative error of `estimate`; exact zeros must be answered exactly.
double relative_error(double estimate, double exact) {
  if (exact == 0)
    return estimate == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::abs(estimate - exact) / std::abs(exact);
}

/// Tolerance for the floating-point rounding around bucket boundaries.
constexpr double epsilon = 1e-12;

/// Checks every quantile of `qs` against exact sorting.
void check_error_bound(const std::string& name, const std::vector<double>& values, double accuracy,
                       const std::vector<double>& qs = quantiles, uint32_t max_bins = 1u << 16) {
  sketch s{accuracy, max_bins};
  for (auto v : values)
    s.add(v);
  CAF_CHECK_EQUAL(s.count(), values.size());
  auto sorted = values;
  std::sort(sorted.begin(), sorted.end());
  for (auto q : qs) {
    double exact = sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
    double estimate = s.quantile(q);
    double error = relative_error(estimate, exact);
    if (error > accuracy + epsilon)
      CAF_FAIL(name << " a=" << accuracy << " q=" << q << ": exact " << exact << ", estimate "
                    << estimate << ", relative error " << error);
  }
}

template <class Distribution>
std::vector<double> draw(Distribution dist, size_t n, uint64_t seed = 42) {
  std::mt19937_64 rng{seed};
  std::vector<double> values(n);
  for (auto& v : values)
    v = dist(rng);
  return values;
}

/// x_m / U^(1/alpha): Pareto with scale 1 and shape 1.2 (infinite variance).
double pareto(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u{0, 1};
  return 1 / std::pow(1 - u(rng), 1 / 1.2);
}

/// A sketch of `values`.
sketch sketch_of(const std::vector<double>& values, double accuracy = 0.01,
                 uint32_t max_bins = 2048) {
  sketch s{accuracy, max_bins};
  for (auto v : values)
    s.add(v);
  return s;
}

/// Mixed signs, exact zeros and magnitudes over many decades.
std::vector<double> mixed_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::lognormal_distribution<double> magnitude{0, 2};
  std::vector<double> values(n);
  for (auto& v : values) {
    auto pick = rng() % 10;
    v = pick == 0 ? 0 : (pick < 4 ? -1 : 1) * magnitude(rng);
  }
  return values;
}

using time_point = window_ring::clock::time_point;

/// A synthetic steady_clock origin: the ring only sees offsets from it.
const time_point t0 = time_point{} + 1000h;

} // namespace

// -- sketch: error bound ------------------------------------------------------

CAF_TEST(uniform values are within the relative error at every quantile) {
  auto values = draw(std::uniform_real_distribution<double>{0.001, 1000}, 100'000);
  for (auto a : {0.01, 0.001, 0.05})
    check_error_bound("uniform", values, a);
}

CAF_TEST(exponential values are within the relative error at every quantile) {
  auto values = draw(std::exponential_distribution<double>{3.5}, 100'000);
  for (auto a : {0.01, 0.001})
    check_error_bound("exponential", values, a);
}

CAF_TEST(bimodal values are within the relative error at every quantile) {
  std::mt19937_64 rng{7};
  std::normal_distribution<double> fast{0.002, 0.0003};
  std::normal_distribution<double> slow{1.5, 0.2};
  std::vector<double> values(100'000);
  for (auto& v : values)
    v = std::abs(rng() % 5 == 0 ? slow(rng) : fast(rng));
  for (auto a : {0.01, 0.001})
    check_error_bound("bimodal", values, a);
}

CAF_TEST(heavy tailed values are within the relative error at every quantile) {
  auto pareto_values = draw(pareto, 100'000, 11);
  auto lognormal_values = draw(std::lognormal_distribution<double>{-6, 3}, 100'000, 12);
  for (auto a : {0.01, 0.001}) {
    check_error_bound("pareto", pareto_values, a);
    check_error_bound("lognormal", lognormal_values, a);
  }
}

CAF_TEST(negative values and zeros are within the relative error at every quantile) {
  check_error_bound("mixed", mixed_values(100'000, 3), 0.01);
  check_error_bound("mixed", mixed_values(100'000, 4), 0.001);
  auto negatives = draw(std::lognormal_distribution<double>{0, 2}, 50'000, 5);
  for (auto& v : negatives)
    v = -v;
  check_error_bound("negative", negatives, 0.01);
  check_error_bound("zeros", std::vector<double>(1000, 0.0), 0.01);
}

CAF_TEST(the error bound holds between every pair of bucket boundaries) {
  // Dense log-spaced values cross many buckets and powers of two, where the
  // cubic approximation of log2 is furthest from exact.
  std::vector<double> values;
  for (double v = 1e-8; v < 1e15; v *= 1.0007)
    values.push_back(v);
  std::vector<double> qs;
  for (int i = 0; i <= 2000; ++i)
    qs.push_back(i / 2000.0);
  for (auto a : {0.01, 0.02, 0.1})
    check_error_bound("log spaced", values, a, qs);
}

// -- sketch: conventions ------------------------------------------------------

CAF_TEST(quantiles use the lower rank floor of q times count minus one) {
  sketch s;
  for (double v : {4.0, 1.0, 3.0, 2.0})
    s.add(v);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(0), 1), 0.01);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(0.33), 1), 0.01); // rank 0.99 -> 0
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(0.5), 2), 0.01);  // rank 1.5 -> 1
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(0.67), 3), 0.01); // rank 2.01 -> 2
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(1), 4), 0.01);
  CAF_CHECK_EQUAL(s.quantile(-3), s.quantile(0));
  CAF_CHECK_EQUAL(s.quantile(7), s.quantile(1));
  CAF_CHECK_EQUAL(s.quantile(std::numeric_limits<double>::quiet_NaN()), s.quantile(0));
}

CAF_TEST(an empty sketch answers NaN and counts nothing) {
  sketch s;
  CAF_CHECK(s.empty());
  CAF_CHECK_EQUAL(s.count(), 0u);
  CAF_CHECK(std::isnan(s.quantile(0.5)));
  CAF_CHECK_EQUAL(s.memory_bytes(), sizeof(sketch));
}

CAF_TEST(NaN and infinities are ignored and tiny magnitudes count as zero) {
  sketch s;
  s.add(std::numeric_limits<double>::quiet_NaN());
  s.add(std::numeric_limits<double>::infinity());
  s.add(-std::numeric_limits<double>::infinity());
  s.add(5, 0);
  CAF_CHECK(s.empty());
  s.add(5e-10);
  s.add(-5e-10);
  s.add(0.0);
  CAF_CHECK_EQUAL(s.count(), 3u);
  CAF_CHECK_EQUAL(s.quantile(0), 0.0);
  CAF_CHECK_EQUAL(s.quantile(1), 0.0);
  s.add(std::numeric_limits<double>::max());
  s.add(-std::numeric_limits<double>::max());
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(1), std::numeric_limits<double>::max()), 0.01);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(0), -std::numeric_limits<double>::max()), 0.01);
}

CAF_TEST(adding a value n times equals adding it n times over) {
  sketch once;
  sketch repeated;
  for (double v : {0.5, -2.0, 0.0, 1e6}) {
    once.add(v, 1000);
    for (int i = 0; i < 1000; ++i)
      repeated.add(v);
  }
  CAF_CHECK_EQUAL(once.count(), 4000u);
  CAF_CHECK_EQUAL(once.encode(), repeated.encode());
}

CAF_TEST(invalid parameters are rejected) {
  CAF_CHECK_NOT_EQUAL(sketch(0.05, 1).relative_accuracy(), 0); // the smallest valid store
  for (double a : {0.0, -0.01, 1.0, 2.0, 1e-7, std::numeric_limits<double>::quiet_NaN()}) {
    try {
      sketch s{a};
      CAF_FAIL("accuracy " << a << " accepted");
    } catch (const std::invalid_argument&) {
    }
  }
  try {
    sketch s{0.01, 0};
    CAF_FAIL("max_bins 0 accepted");
  } catch (const std::invalid_argument&) {
  }
}

CAF_TEST(clear forgets the values and releases the bins) {
  auto s = sketch_of(mixed_values(1000, 1));
  CAF_CHECK_GREATER(s.memory_bytes(), sizeof(sketch));
  s.clear();
  CAF_CHECK(s.empty());
  CAF_CHECK(std::isnan(s.quantile(0.5)));
  CAF_CHECK_EQUAL(s.memory_bytes(), sizeof(sketch));
  s.add(3);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(0.5), 3), 0.01);
}

// -- sketch: merge --------------------------------------------------------------

CAF_TEST(merging two sketches equals the sketch of the union) {
  auto left = mixed_values(20'000, 21);
  auto right = draw(std::lognormal_distribution<double>{3, 1}, 30'000, 22);
  auto merged = sketch_of(left);
  merged.merge(sketch_of(right));
  auto all = left;
  all.insert(all.end(), right.begin(), right.end());
  auto expected = sketch_of(all);
  CAF_CHECK_EQUAL(merged.count(), all.size());
  CAF_CHECK_EQUAL(merged.encode(), expected.encode());
  for (auto q : quantiles) {
    CAF_CHECK(merged.quantile(q) == expected.quantile(q));
    CAF_CHECK_LESS_OR_EQUAL(relative_error(merged.quantile(q), exact_quantile(all, q)),
                            0.01 + epsilon);
  }
}

CAF_TEST(merging into an empty sketch copies and merging with itself doubles) {
  auto values = mixed_values(5000, 31);
  auto source = sketch_of(values);
  sketch target;
  target.merge(source);
  CAF_CHECK_EQUAL(target.encode(), source.encode());
  target.merge(sketch{});
  CAF_CHECK_EQUAL(target.encode(), source.encode());
  target.merge(target);
  auto twice = values;
  twice.insert(twice.end(), values.begin(), values.end());
  CAF_CHECK_EQUAL(target.encode(), sketch_of(twice).encode());
}

CAF_TEST(merging sketches of different accuracy throws and changes nothing) {
  auto s = sketch_of({1, 2, 3});
  auto before = s.encode();
  try {
    s.merge(sketch_of({4}, 0.02));
    CAF_FAIL("merge accepted another accuracy");
  } catch (const std::invalid_argument&) {
  }
  CAF_CHECK_EQUAL(s.encode(), before);
}

CAF_TEST(rebinned keeps counts and stays within both accuracies) {
  auto values = draw(std::lognormal_distribution<double>{0, 2}, 20000, 17);
  for (auto& v : values)
    if (static_cast<size_t>(&v - values.data()) % 3 == 0)
      v = -v;
  values.push_back(0);
  for (auto [from, to] : {std::pair{0.02, 0.01}, std::pair{0.01, 0.05}}) {
    auto source = sketch_of(values, from);
    auto target = source.rebinned(to);
    CAF_CHECK_EQUAL(target.relative_accuracy(), to);
    CAF_CHECK_EQUAL(target.count(), source.count());
    auto sorted = values;
    std::sort(sorted.begin(), sorted.end());
    for (double q : {0.0, 0.1, 0.33, 0.5, 0.9, 0.99, 1.0}) {
      auto exact = sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
      auto estimate = target.quantile(q);
      auto error = exact == 0 ? std::abs(estimate) : std::abs(estimate - exact) / std::abs(exact);
      if (error > from + to + from * to + 1e-9)
        CAF_FAIL(from << "->" << to << " q=" << q << ": exact " << exact << ", estimate "
                      << estimate);
    }
    // Merging the re-binned sketch into one of the target accuracy works.
    auto other = sketch_of({1, 2, 3}, to);
    other.merge(target);
    CAF_CHECK_EQUAL(other.count(), source.count() + 3);
  }
}

// -- sketch: collapsing ---------------------------------------------------------

CAF_TEST(collapsing keeps the count and the upper quantiles and bounds memory) {
  constexpr uint32_t max_bins = 256;
  const size_t bound = sizeof(sketch) + 2 * max_bins * sizeof(uint64_t);
  std::mt19937_64 rng{41};
  std::uniform_real_distribution<double> exponent{-6, 12};
  std::vector<double> positives(200'000);
  for (auto& v : positives)
    v = std::pow(10, exponent(rng));
  std::vector<double> negatives(positives.size());
  std::transform(positives.begin(), positives.end(), negatives.begin(),
                 [](double v) { return -v; });
  // 18 decades need ~2,000 bins at 1 %; 256 keep the top ~2.2 decades exact,
  // which holds the 88 % highest values of each sign.
  std::vector<double> upper = {0.9, 0.95, 0.99, 0.999, 1};
  for (const auto* values : {&positives, &negatives}) {
    auto s = sketch_of(*values, 0.01, max_bins);
    CAF_CHECK_EQUAL(s.count(), values->size());
    CAF_CHECK_LESS_OR_EQUAL(s.memory_bytes(), bound);
    for (auto q : upper)
      CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(q), exact_quantile(*values, q)),
                              0.01 + epsilon);
    // Collapsed values are answered as the lowest kept bin: too high, never too low.
    CAF_CHECK_GREATER_OR_EQUAL(s.quantile(0), exact_quantile(*values, 0));
  }
  auto both = sketch_of(positives, 0.01, max_bins);
  both.merge(sketch_of(negatives, 0.01, max_bins));
  CAF_CHECK_EQUAL(both.count(), 2 * positives.size());
  CAF_CHECK_LESS_OR_EQUAL(both.memory_bytes(), bound);
  auto round_trip = sketch::decode(both.encode());
  CAF_REQUIRE(round_trip);
  CAF_CHECK_EQUAL(round_trip->encode(), both.encode());
}

CAF_TEST(a store holds at most max_bins bins however values arrive) {
  for (uint32_t max_bins : {1u, 2u, 17u, 64u}) {
    sketch s{0.01, max_bins};
    // Rising, then falling, then alternating ends.
    for (double v = 1e-6; v < 1e12; v *= 1.1)
      s.add(v);
    for (double v = 1e12; v > 1e-6; v /= 1.3)
      s.add(v);
    for (int i = 0; i < 100; ++i)
      s.add(i % 2 == 0 ? 1e-7 * (i + 1) : 1e11 * (i + 1));
    CAF_CHECK_LESS_OR_EQUAL(s.memory_bytes(), sizeof(sketch) + max_bins * sizeof(uint64_t));
    CAF_CHECK_LESS_OR_EQUAL(relative_error(s.quantile(1), 1e11 * 100), 0.01 + epsilon);
  }
}

// -- sketch: encoding -------------------------------------------------------------

CAF_TEST(encode and decode round trip) {
  for (const auto& s : {sketch{}, sketch_of(mixed_values(10'000, 51)),
                        sketch_of({0, 0, 0}, 0.05, 7), sketch_of({-1e300, 1e-300, 1e300}, 0.001)}) {
    auto decoded = sketch::decode(s.encode());
    CAF_REQUIRE(decoded);
    CAF_CHECK_EQUAL(decoded->count(), s.count());
    CAF_CHECK_EQUAL(decoded->relative_accuracy(), s.relative_accuracy());
    CAF_CHECK_EQUAL(decoded->max_bins(), s.max_bins());
    CAF_CHECK_EQUAL(decoded->encode(), s.encode());
    for (auto q : quantiles)
      CAF_CHECK(decoded->quantile(q) == s.quantile(q) ||
                (std::isnan(decoded->quantile(q)) && std::isnan(s.quantile(q))));
  }
}

CAF_TEST(the encoding is compact) {
  // 10,000 latencies over 4 decades: a few hundred bins of 1 to 3 bytes.
  auto s = sketch_of(draw(std::lognormal_distribution<double>{-5, 1}, 10'000, 52));
  CAF_CHECK_LESS(s.encode().size(), 1500u);
  CAF_CHECK_EQUAL(sketch{}.encode().size(), 16u); // version, accuracy, max_bins, 3 varints
}

CAF_TEST(decode rejects every truncation of a valid encoding) {
  auto bytes = sketch_of(mixed_values(2000, 53)).encode();
  for (size_t n = 0; n < bytes.size(); ++n)
    if (sketch::decode(std::string_view{bytes}.substr(0, n)))
      CAF_FAIL("a prefix of " << n << " of " << bytes.size() << " bytes decoded");
  CAF_CHECK(!sketch::decode(bytes + '\0'));
}

CAF_TEST(decode rejects malformed fields) {
  auto header = [](uint8_t version, double accuracy, uint32_t max_bins) {
    std::string out;
    codec::put_u8(out, version);
    codec::put_f64(out, accuracy);
    codec::put_u32(out, max_bins);
    return out;
  };
  auto store = [](int64_t first, std::vector<uint64_t> counts) {
    std::string out;
    codec::put_varint(out, counts.size());
    codec::put_svarint(out, first);
    for (auto c : counts)
      codec::put_varint(out, c);
    return out;
  };
  const std::string empty_store(1, '\0');
  const std::string ok = header(1, 0.01, 2048) + '\0' + empty_store + store(10, {1, 2});
  CAF_REQUIRE(sketch::decode(ok));
  CAF_CHECK_EQUAL(sketch::decode(ok)->count(), 3u);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"empty", ""},
      {"version 0", header(0, 0.01, 2048) + '\0' + empty_store + empty_store},
      {"version 2", header(2, 0.01, 2048) + '\0' + empty_store + empty_store},
      {"accuracy 0", header(1, 0, 2048) + '\0' + empty_store + empty_store},
      {"accuracy 1", header(1, 1, 2048) + '\0' + empty_store + empty_store},
      {"accuracy NaN", header(1, std::numeric_limits<double>::quiet_NaN(), 2048) + '\0' +
                           empty_store + empty_store},
      {"max_bins 0", header(1, 0.01, 0) + '\0' + empty_store + empty_store},
      {"more bins than max_bins", header(1, 0.01, 2) + '\0' + empty_store + store(10, {1, 2, 3})},
      {"key beyond any double", header(1, 0.01, 2048) + '\0' + empty_store + store(40'000, {1})},
      {"key below min_indexable", header(1, 0.01, 2048) + '\0' + empty_store + store(-2'000, {1})},
      {"negative key below min_indexable",
       header(1, 0.01, 2048) + '\0' + store(2'000, {1}) + empty_store},
      {"count overflow", header(1, 0.01, 2048) + '\0' + empty_store + store(10, {~0ull, 1})},
      {"zero count overflow",
       [&] {
         std::string out = header(1, 0.01, 2048);
         codec::put_varint(out, ~0ull);
         return out + empty_store + store(10, {1});
       }()},
      {"overlong varint", header(1, 0.01, 2048) + std::string(11, '\xff') + '\x01'},
      {"missing store", header(1, 0.01, 2048) + '\0' + empty_store},
      {"trailing byte", ok + 'x'},
  };
  for (const auto& [name, bytes] : bad)
    if (sketch::decode(bytes))
      CAF_FAIL("decoded: " << name);
}

CAF_TEST(decode survives random garbage and corrupted encodings) {
  std::mt19937_64 rng{54};
  for (int i = 0; i < 2000; ++i) {
    std::string garbage(rng() % 64, '\0');
    for (auto& c : garbage)
      c = static_cast<char>(rng());
    CAF_CHECK(!sketch::decode(garbage));
  }
  // Flipped bytes may still decode (a count changed), but never crash and
  // never yield an inconsistent sketch.
  auto bytes = sketch_of(mixed_values(500, 55)).encode();
  for (int i = 0; i < 2000; ++i) {
    auto corrupt = bytes;
    corrupt[rng() % corrupt.size()] ^= static_cast<char>(1 + rng() % 255);
    if (auto s = sketch::decode(corrupt)) {
      CAF_CHECK_EQUAL(sketch::decode(s->encode())->encode(), s->encode());
      CAF_CHECK(s->empty() || !std::isnan(s->quantile(0.5)));
    }
  }
}

// -- aggregate ----------------------------------------------------------------------

CAF_TEST(an aggregate tracks count sum extremes and quantiles) {
  aggregate a;
  CAF_CHECK_EQUAL(a.count, 0u);
  CAF_CHECK(a.min == std::numeric_limits<double>::infinity());
  CAF_CHECK(a.max == -std::numeric_limits<double>::infinity());
  a.add(2);
  a.add(-1, 3);
  a.add(std::numeric_limits<double>::quiet_NaN());
  CAF_CHECK_EQUAL(a.count, 4u);
  CAF_CHECK_EQUAL(a.sum, -1.0);
  CAF_CHECK_EQUAL(a.min, -1.0);
  CAF_CHECK_EQUAL(a.max, 2.0);
  CAF_CHECK_EQUAL(a.values.count(), 4u);
  aggregate b;
  b.add(10);
  a.merge(b);
  CAF_CHECK_EQUAL(a.count, 5u);
  CAF_CHECK_EQUAL(a.sum, 9.0);
  CAF_CHECK_EQUAL(a.max, 10.0);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(a.values.quantile(1), 10), 0.01);
  a.clear();
  CAF_CHECK_EQUAL(a.count, 0u);
  CAF_CHECK_EQUAL(a.sum, 0.0);
  CAF_CHECK(a.min == std::numeric_limits<double>::infinity());
  CAF_CHECK(a.values.empty());
}

CAF_TEST(an aggregate round trips and rejects malformed input) {
  aggregate a{0.02, 100};
  for (auto v : mixed_values(3000, 61))
    a.add(v);
  auto bytes = a.encode();
  auto decoded = aggregate::decode(bytes);
  CAF_REQUIRE(decoded);
  CAF_CHECK_EQUAL(decoded->count, a.count);
  CAF_CHECK_EQUAL(decoded->sum, a.sum);
  CAF_CHECK_EQUAL(decoded->min, a.min);
  CAF_CHECK_EQUAL(decoded->max, a.max);
  CAF_CHECK_EQUAL(decoded->values.relative_accuracy(), 0.02);
  CAF_CHECK_EQUAL(decoded->encode(), bytes);
  auto empty = aggregate::decode(aggregate{}.encode());
  CAF_REQUIRE(empty);
  CAF_CHECK_EQUAL(empty->count, 0u);
  CAF_CHECK(empty->min == std::numeric_limits<double>::infinity());
  for (size_t n = 0; n < bytes.size(); ++n)
    if (aggregate::decode(std::string_view{bytes}.substr(0, n)))
      CAF_FAIL("a prefix of " << n << " bytes decoded");
  auto wrong_count = bytes;
  wrong_count[1] ^= 1; // the count's first varint byte no longer matches the sketch
  CAF_CHECK(!aggregate::decode(wrong_count));
  CAF_CHECK(!aggregate::decode(bytes + '\0'));
}

// -- window_ring ----------------------------------------------------------------------

CAF_TEST(window names) {
  CAF_CHECK_EQUAL(std::string{to_string(window::m1)}, "1m");
  CAF_CHECK_EQUAL(std::string{to_string(window::m15)}, "15m");
  CAF_CHECK_EQUAL(std::string{to_string(window::h1)}, "1h");
  CAF_CHECK_EQUAL(std::string{to_string(window::all)}, "all");
}

CAF_TEST(an empty window reports count zero and NaN) {
  window_ring ring{t0};
  for (auto w : {window::m1, window::m15, window::h1, window::all}) {
    auto s = ring.stats(t0 + 30s, w);
    CAF_CHECK(s.w == w);
    CAF_CHECK_EQUAL(s.count, 0u);
    CAF_CHECK_EQUAL(s.sum, 0.0);
    CAF_CHECK_EQUAL(s.rate, 0.0);
    CAF_CHECK_EQUAL(s.seconds, 30.0);
    for (auto x : {s.min, s.max, s.avg, s.p50, s.p95, s.p99})
      CAF_CHECK(std::isnan(x));
    CAF_CHECK(std::isnan(ring.quantile(t0 + 30s, w, 0.5)));
  }
  auto at_start = ring.stats(t0, window::m1);
  CAF_CHECK_EQUAL(at_start.seconds, 0.0);
  CAF_CHECK_EQUAL(at_start.rate, 0.0);
  CAF_CHECK_EQUAL(ring.memory_bytes(), sizeof(window_ring));
}

CAF_TEST(values leave 1m after 60 s 15m after 15 min and 1h after an hour) {
  window_ring ring{t0};
  ring.add(t0, 42);
  auto count = [&](auto offset, window w) { return ring.stats(t0 + offset, w).count; };
  CAF_CHECK_EQUAL(count(59s, window::m1), 1u);
  CAF_CHECK_EQUAL(count(60s, window::m1), 0u);
  CAF_CHECK_EQUAL(count(60s, window::m15), 1u);
  CAF_CHECK_EQUAL(count(60s, window::h1), 1u);
  CAF_CHECK_EQUAL(count(899s, window::m15), 1u);
  CAF_CHECK_EQUAL(count(900s, window::m15), 0u);
  CAF_CHECK_EQUAL(count(900s, window::h1), 1u);
  CAF_CHECK_EQUAL(count(3599s, window::h1), 1u);
  CAF_CHECK_EQUAL(count(3600s, window::h1), 0u);
  CAF_CHECK_EQUAL(count(3600s, window::all), 1u);
  CAF_CHECK_EQUAL(count(1000h, window::all), 1u);
  auto lifetime = ring.stats(t0 + 3600s, window::all);
  CAF_CHECK_EQUAL(lifetime.min, 42.0);
  CAF_CHECK_EQUAL(lifetime.max, 42.0);
  CAF_CHECK_EQUAL(ring.lifetime().count, 1u);
}

CAF_TEST(a window holds the current bucket and the n minus 1 before it) {
  window_ring ring{t0};
  ring.add(t0 + 5s, 1);  // 1m epoch 0
  ring.add(t0 + 15s, 2); // 1m epoch 1
  // At 65 s the 1m window is epochs 1 to 6: the first value has left.
  auto s = ring.stats(t0 + 65s, window::m1);
  CAF_CHECK_EQUAL(s.count, 1u);
  CAF_CHECK_EQUAL(s.min, 2.0);
  CAF_CHECK_EQUAL(s.seconds, 55.0);
  CAF_CHECK_EQUAL(ring.stats(t0 + 69999ms, window::m1).count, 1u);
  CAF_CHECK_EQUAL(ring.stats(t0 + 70s, window::m1).count, 0u);
  // A later add to the slot of epoch 0 resets it before counting.
  ring.add(t0 + 60s, 3);
  s = ring.stats(t0 + 60s, window::m1);
  CAF_CHECK_EQUAL(s.count, 2u);
  CAF_CHECK_EQUAL(s.sum, 5.0);
}

CAF_TEST(rate and seconds early on and once the windows have filled) {
  window_ring ring{t0};
  // One value per second.
  for (int i = 0; i < 30; ++i)
    ring.add(t0 + std::chrono::seconds{i}, i);
  for (auto w : {window::m1, window::m15, window::h1, window::all}) {
    auto s = ring.stats(t0 + 30s, w);
    CAF_CHECK_EQUAL(s.seconds, 30.0);
    CAF_CHECK_EQUAL(s.count, 30u);
    CAF_CHECK_EQUAL(s.rate, 1.0);
    CAF_CHECK_EQUAL(s.sum, 435.0);
    CAF_CHECK_EQUAL(s.avg, 14.5);
    CAF_CHECK_EQUAL(s.min, 0.0);
    CAF_CHECK_EQUAL(s.max, 29.0);
  }
  for (int i = 30; i < 7200; ++i)
    ring.add(t0 + std::chrono::seconds{i}, i);
  // At 2 h each window spans its oldest live bucket's start to now, and
  // counts exactly the values in that span: the rate stays 1/s.
  struct expected {
    window w;
    double seconds;
  };
  for (auto [w, seconds] : {expected{window::m1, 50}, expected{window::m15, 840},
                            expected{window::h1, 3300}, expected{window::all, 7200}}) {
    auto s = ring.stats(t0 + 7200s, w);
    CAF_CHECK_EQUAL(s.seconds, seconds);
    CAF_CHECK_EQUAL(s.count, static_cast<uint64_t>(seconds));
    CAF_CHECK_EQUAL(s.rate, 1.0);
    CAF_CHECK_EQUAL(s.max, 7199.0);
    CAF_CHECK_EQUAL(s.min, 7200 - seconds);
  }
  // Mid-bucket: 1m spans 5 full buckets and half of the current one.
  auto s = ring.stats(t0 + 7205s, window::m1);
  CAF_CHECK_EQUAL(s.seconds, 55.0);
  CAF_CHECK_EQUAL(s.count, 50u); // nothing was added after 7199 s
}

CAF_TEST(windows report their own quantiles) {
  window_ring ring{t0};
  for (int i = 0; i < 100; ++i)
    ring.add(t0 + std::chrono::milliseconds{i * 100}, 1.0); // within the first 10 s
  ring.add(t0 + 70s, 100.0, 10);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(ring.quantile(t0 + 70s, window::m1, 0.5), 100), 0.01);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(ring.quantile(t0 + 70s, window::h1, 0.5), 1), 0.01);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(ring.quantile(t0 + 70s, window::h1, 0.95), 100), 0.01);
  auto s = ring.stats(t0 + 70s, window::m15);
  CAF_CHECK_EQUAL(s.count, 110u);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.p50, 1), 0.01);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.p95, 100), 0.01);
  CAF_CHECK_LESS_OR_EQUAL(relative_error(s.p99, 100), 0.01);
  CAF_CHECK_EQUAL(ring.merged(t0 + 70s, window::all).encode(), ring.lifetime().encode());
  CAF_CHECK_EQUAL(ring.merged(t0 + 70s, window::h1).encode(), ring.lifetime().encode());
  CAF_CHECK_EQUAL(ring.merged(t0 + 70s, window::m1).count, 10u);
}

CAF_TEST(a gap longer than a window leaves only the new values in it) {
  window_ring ring{t0};
  ring.add(t0 + 1s, 5);
  ring.add(t0 + 2h + 1s, 7);
  for (auto w : {window::m1, window::m15, window::h1}) {
    auto s = ring.stats(t0 + 2h + 1s, w);
    CAF_CHECK_EQUAL(s.count, 1u);
    CAF_CHECK_EQUAL(s.min, 7.0);
  }
  auto all = ring.stats(t0 + 2h + 1s, window::all);
  CAF_CHECK_EQUAL(all.count, 2u);
  CAF_CHECK_EQUAL(all.min, 5.0);
  CAF_CHECK_EQUAL(all.max, 7.0);
  // A gap of exactly a multiple of each tier's span lands in the same slots.
  ring.add(t0 + 4h + 1s, 9);
  CAF_CHECK_EQUAL(ring.stats(t0 + 4h + 1s, window::h1).count, 1u);
  CAF_CHECK_EQUAL(ring.stats(t0 + 4h + 1s, window::m1).max, 9.0);
}

CAF_TEST(time going backwards counts as the latest time seen) {
  window_ring ring{t0};
  ring.add(t0 + 100s, 1);
  ring.add(t0 + 30s, 2); // before the latest: recorded at 100 s
  ring.add(t0 - 1h, 3);  // before start: also at 100 s
  auto at_100 = ring.stats(t0 + 100s, window::m1);
  CAF_CHECK_EQUAL(at_100.count, 3u);
  CAF_CHECK_EQUAL(at_100.seconds, 50.0); // epochs 5 to 10, from 50 s
  auto earlier = ring.stats(t0 + 30s, window::m1);
  CAF_CHECK_EQUAL(earlier.count, at_100.count);
  CAF_CHECK_EQUAL(earlier.seconds, at_100.seconds);
  // All three leave together, with the 100 s bucket.
  CAF_CHECK_EQUAL(ring.stats(t0 + 159s, window::m1).count, 3u);
  CAF_CHECK_EQUAL(ring.stats(t0 + 160s, window::m1).count, 0u);
  CAF_CHECK_EQUAL(ring.stats(t0 + 160s, window::m15).count, 3u);
  // A ring queried before its start reports from its start.
  window_ring fresh{t0};
  CAF_CHECK_EQUAL(fresh.stats(t0 - 10s, window::all).seconds, 0.0);
  fresh.add(t0 - 10s, 4);
  CAF_CHECK_EQUAL(fresh.stats(t0, window::m1).count, 1u);
  CAF_CHECK_EQUAL(fresh.stats(t0 + 59s, window::m1).count, 1u);
  CAF_CHECK_EQUAL(fresh.stats(t0 + 60s, window::m1).count, 0u);
}

CAF_TEST(merging a delta counts it in every window) {
  window_ring ring{t0};
  aggregate delta;
  delta.add(3, 4);
  delta.add(8);
  ring.merge(t0 + 5s, delta);
  ring.add(t0 + 6s, 1);
  for (auto w : {window::m1, window::m15, window::h1, window::all}) {
    auto s = ring.stats(t0 + 6s, w);
    CAF_CHECK_EQUAL(s.count, 6u);
    CAF_CHECK_EQUAL(s.sum, 21.0);
    CAF_CHECK_EQUAL(s.min, 1.0);
    CAF_CHECK_EQUAL(s.max, 8.0);
  }
  // A delta made with another accuracy (a producer configured differently)
  // is re-binned, not refused: counts, sums and extremes stay exact.
  aggregate coarse{0.05};
  coarse.add(100, 2);
  ring.merge(t0 + 7s, coarse);
  CAF_CHECK_EQUAL(ring.lifetime().values.relative_accuracy(), 0.01);
  auto s = ring.stats(t0 + 7s, window::m1);
  CAF_CHECK_EQUAL(s.count, 8u);
  CAF_CHECK_EQUAL(s.sum, 221.0);
  CAF_CHECK_EQUAL(s.max, 100.0);
  // Quantiles of re-binned values: within a1 + a2 + a1 * a2 of the exact.
  window_ring other{t0};
  aggregate spread{0.05};
  auto values = draw(std::lognormal_distribution<double>{0, 2}, 5000, 23);
  for (auto v : values)
    spread.add(v);
  other.merge(t0 + 1s, spread);
  std::sort(values.begin(), values.end());
  for (double q : {0.0, 0.25, 0.5, 0.9, 0.99, 1.0}) {
    auto exact = values[static_cast<size_t>(q * static_cast<double>(values.size() - 1))];
    auto error = std::abs(other.quantile(t0 + 1s, window::m1, q) - exact) / exact;
    if (error > 0.05 + 0.01 + 0.05 * 0.01 + 1e-9)
      CAF_FAIL("q=" << q << ": error " << error);
  }
}

CAF_TEST(expire releases stale buckets without changing what windows report) {
  window_ring ring{t0, 0.01, 2048};
  auto values = draw(std::lognormal_distribution<double>{-4, 1}, 6000, 71);
  for (size_t i = 0; i < values.size(); ++i)
    ring.add(t0 + std::chrono::milliseconds{i * 100}, values[i]); // 10 minutes
  auto busy = ring.memory_bytes();
  auto lifetime_bytes = ring.lifetime().memory_bytes();
  CAF_CHECK_GREATER(busy, sizeof(window_ring) + lifetime_bytes);
  // After 20 minutes the 1m and 15m windows are empty; 1h still holds all.
  auto m15 = ring.stats(t0 + 20min, window::m15);
  auto h1 = ring.stats(t0 + 20min, window::h1);
  ring.expire(t0 + 20min);
  CAF_CHECK_LESS(ring.memory_bytes(), busy);
  CAF_CHECK_EQUAL(ring.stats(t0 + 20min, window::m15).count, m15.count);
  CAF_CHECK(ring.stats(t0 + 20min, window::h1).p99 == h1.p99);
  CAF_CHECK_EQUAL(ring.stats(t0 + 20min, window::h1).count, 6000u);
  // Once all are stale, only the ring and its lifetime remain.
  ring.expire(t0 + 2h);
  CAF_CHECK_EQUAL(ring.memory_bytes(),
                  sizeof(window_ring) - sizeof(aggregate) + ring.lifetime().memory_bytes());
  CAF_CHECK_EQUAL(ring.stats(t0 + 2h, window::h1).count, 0u);
  CAF_CHECK_EQUAL(ring.stats(t0 + 2h, window::all).count, 6000u);
  ring.add(t0 + 2h, 1);
  CAF_CHECK_EQUAL(ring.stats(t0 + 2h, window::m1).count, 1u);
  CAF_CHECK_EQUAL(ring.stats(t0 + 2h, window::all).count, 6001u);
}

CAF_TEST(memory stays within the documented bound) {
  constexpr uint32_t max_bins = 64;
  window_ring ring{t0, 0.01, max_bins};
  std::mt19937_64 rng{81};
  std::uniform_real_distribution<double> exponent{-6, 12};
  for (int i = 0; i < 100'000; ++i) {
    double v = std::pow(10, exponent(rng));
    ring.add(t0 + std::chrono::milliseconds{i * 50}, i % 2 == 0 ? v : -v);
  }
  // 33 buckets and the lifetime: two stores of max_bins each.
  size_t bound = sizeof(window_ring) + 33 * (sizeof(aggregate) + 8) + 34 * 2 * max_bins * 8;
  CAF_CHECK_LESS_OR_EQUAL(ring.memory_bytes(), bound);
  CAF_CHECK_EQUAL(ring.lifetime().count, 100'000u);
}
