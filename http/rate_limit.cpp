#include "http/rate_limit.hpp"

#include <algorithm>

namespace troupe::http {

rate_limiter::rate_limiter(double rate, double burst, size_t max_keys)
    : rate_(rate), burst_(std::max(1.0, burst)), max_keys_(std::max<size_t>(1, max_keys)) {}

std::optional<double> rate_limiter::acquire(std::string_view key, clock::time_point now) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = buckets_.find(std::string{key});
  if (i == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      // Prefer forgetting a bucket that has refilled (it holds no state worth
      // keeping); else any: memory stays bounded.
      auto victim = std::find_if(buckets_.begin(), buckets_.end(), [&](auto& kv) {
        auto age = std::chrono::duration<double>(now - kv.second.updated).count();
        return kv.second.tokens + age * rate_ >= burst_;
      });
      buckets_.erase(victim != buckets_.end() ? victim : buckets_.begin());
    }
    i = buckets_.emplace(std::string{key}, bucket{burst_, now}).first;
  }
  auto& b = i->second;
  auto elapsed = std::chrono::duration<double>(now - b.updated).count();
  if (elapsed > 0) {
    b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
    b.updated = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return std::nullopt;
  }
  return (1.0 - b.tokens) / rate_;
}

size_t rate_limiter::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return buckets_.size();
}

} // namespace troupe::http
