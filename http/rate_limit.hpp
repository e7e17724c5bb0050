#pragma once

// Token buckets per key (a token's name, a client address) for mutating
// routes. The table is bounded: past `max_keys` an arbitrary bucket is
// forgotten, so a client with many addresses costs memory of at most that
// many buckets.

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace troupe::http {

class rate_limiter {
public:
  using clock = std::chrono::steady_clock;

  /// `rate` tokens per second refill a bucket of `burst` tokens.
  rate_limiter(double rate, double burst, size_t max_keys = 10'000);

  /// Takes a token from `key`'s bucket: nullopt if one was there, else the
  /// seconds until the next one (for Retry-After).
  std::optional<double> acquire(std::string_view key, clock::time_point now);

  /// Buckets held.
  size_t size() const;

private:
  struct bucket {
    double tokens;
    clock::time_point updated;
  };

  double rate_;
  double burst_;
  size_t max_keys_;
  mutable std::mutex mtx_;
  std::unordered_map<std::string, bucket> buckets_;
};

} // namespace troupe::http
