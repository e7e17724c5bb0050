#pragma once

// Restart backoff of an app instance: 1 s, doubled per exit that came soon
// after its start, capped at 5 min; a run of 10 min starts over. Pure: the
// caller passes the time points (the instance actor its clock's now, tests
// the deterministic coordinator's).

#include <chrono>
#include <cstdint>

namespace troupe {

struct restart_backoff_policy {
  std::chrono::milliseconds initial{1'000};
  std::chrono::milliseconds max{300'000};
  /// A run at least this long resets the delay to `initial`.
  std::chrono::milliseconds reset_after{600'000};
};

/// One instance's backoff state.
class restart_backoff {
public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;
  using duration = std::chrono::milliseconds;

  explicit restart_backoff(restart_backoff_policy policy = {}) : policy_(policy) {}

  /// The process started at `t`.
  void started(time_point t);

  /// The process exited at `t`: the delay before the next start. A run that
  /// lasted `reset_after` counts as the first failure again.
  duration exited(time_point t);

  /// The delay the next exit() would answer after a short run.
  duration next_delay() const;

  /// Exits in a row that came before `reset_after` (the current streak).
  uint32_t streak() const { return streak_; }

  const restart_backoff_policy& policy() const { return policy_; }

private:
  restart_backoff_policy policy_;
  time_point started_{};
  bool running_ = false;
  uint32_t streak_ = 0;
};

} // namespace troupe
