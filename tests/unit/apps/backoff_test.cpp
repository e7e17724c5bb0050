#define CAF_SUITE backoff
#include "support/dsl.hpp"

#include <chrono>

#include "actors/apps/backoff.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

using ms = std::chrono::milliseconds;

/// Starts at `t`, runs `run`, exits: the delay answered.
ms crash_after(restart_backoff& b, restart_backoff::time_point& t, ms run) {
  b.started(t);
  t += run;
  auto delay = b.exited(t);
  t += delay;
  return delay;
}

} // namespace

CAF_TEST(quick exits double the delay from 1 s up to 5 min) {
  restart_backoff b;
  restart_backoff::time_point t{};
  std::vector<long> delays;
  for (int i = 0; i < 11; ++i)
    delays.push_back(static_cast<long>(crash_after(b, t, 2s).count()));
  CAF_CHECK_EQUAL(delays, (std::vector<long>{1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000,
                                             256000, 300000, 300000}));
  CAF_CHECK_EQUAL(b.streak(), 11u);
}

CAF_TEST(ten minutes of running start over at 1 s) {
  restart_backoff b;
  restart_backoff::time_point t{};
  crash_after(b, t, 1s);
  crash_after(b, t, 1s);
  CAF_CHECK_EQUAL(b.next_delay().count(), 4000);
  // Just short of the reset: the streak goes on.
  CAF_CHECK_EQUAL(crash_after(b, t, 10min - 1ms).count(), 4000);
  CAF_CHECK_EQUAL(crash_after(b, t, 10min).count(), 1000);
  CAF_CHECK_EQUAL(b.streak(), 1u);
  CAF_CHECK_EQUAL(crash_after(b, t, 1s).count(), 2000);
}

CAF_TEST(the policy comes from the caller) {
  restart_backoff b{{100ms, 250ms, 1s}};
  restart_backoff::time_point t{};
  CAF_CHECK_EQUAL(crash_after(b, t, 0ms).count(), 100);
  CAF_CHECK_EQUAL(crash_after(b, t, 0ms).count(), 200);
  CAF_CHECK_EQUAL(crash_after(b, t, 0ms).count(), 250);
  CAF_CHECK_EQUAL(crash_after(b, t, 1s).count(), 100);
}
