#include "actors/apps/backoff.hpp"

#include <algorithm>

namespace troupe {

void restart_backoff::started(time_point t) {
  started_ = t;
  running_ = true;
}

restart_backoff::duration restart_backoff::exited(time_point t) {
  if (running_ && t - started_ >= policy_.reset_after)
    streak_ = 0;
  running_ = false;
  auto delay = next_delay();
  ++streak_;
  return delay;
}

restart_backoff::duration restart_backoff::next_delay() const {
  // Doubling stops at the cap, so the shift never overflows.
  auto delay = policy_.initial;
  for (uint32_t i = 0; i < streak_ && delay < policy_.max; ++i)
    delay *= 2;
  return std::min(delay, policy_.max);
}

} // namespace troupe
