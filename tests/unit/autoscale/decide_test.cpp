#define CAF_SUITE decide
#include "support/dsl.hpp"

// The autoscaler's decisions on synthetic metric streams: every evaluation
// (each 5 s) fed in order, the replicas applied as decided, and the exact
// sequence of recorded decisions asserted.

#include <cmath>
#include <functional>
#include <sstream>

#include "actors/autoscale/decide.hpp"

using namespace troupe;
using namespace troupe::autoscale;

namespace {

constexpr int64_t s = 1'000'000'000;

/// HPA's default behavior (as the spec reader fills it), target 50 rps per
/// replica, the seed's thresholds 80/30 over 20 s, cooldown 30 s.
app_scaling_policy rps_policy() {
  app_scaling_policy p;
  p.mode = "auto";
  p.http = app_scaling_policy::http_metric{};
  p.http->target_rps_per_replica = 50;
  p.scale_up.stabilization_window_seconds = 0;
  p.scale_up.policies = {{"Percent", 100, 15}, {"Pods", 4, 15}};
  p.scale_down.stabilization_window_seconds = 300;
  p.scale_down.policies = {{"Percent", 100, 15}};
  return p;
}

/// One recorded decision, as the tests compare it: "t rule from->to (proposal)".
std::string show(const decision& d) {
  std::ostringstream out;
  out << d.ts_ns / s << " " << d.rule << " " << d.from << "->" << d.to << " (" << d.proposal << ")";
  return out.str();
}

/// Feeds evaluations every 5 s from `from` to `to` (inclusive); `fill` sets
/// the metrics of each. Replicas follow the decisions; ready equals current
/// unless `fill` says otherwise.
struct run {
  engine e;
  int current;
  std::vector<std::string> log;
  std::vector<decision> decisions;

  run(app_scaling_policy p, bounds b, int start) : e(std::move(p), b, 0), current(start) {}

  void feed(int from, int to, const std::function<void(observation&)>& fill) {
    for (int t = from; t <= to; t += 5) {
      observation o;
      o.at_ns = t * s;
      o.current = current;
      o.ready = current;
      fill(o);
      if (auto d = e.evaluate(o)) {
        log.push_back(show(*d));
        decisions.push_back(*d);
        CAF_CHECK(!d->reason.empty());
        if (d->changed())
          current = d->to;
      }
    }
  }
};

bounds up_to(int max, int min = 1) {
  bounds b;
  b.min_replicas = min;
  b.max_replicas = max;
  return b;
}

/// A queue.redis policy: `target` per replica, woken above `activation`;
/// minReplicas 0 (`up_to(max, 0)`), and idleSeconds where a test sets it.
app_scaling_policy redis_policy(double target, int64_t activation) {
  app_scaling_policy p = rps_policy();
  p.http.reset();
  p.queue_redis =
      app_scaling_policy::redis_queue{"redis://127.0.0.1:6379", "jobs", target, activation};
  return p;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

using lines = std::vector<std::string>;

} // namespace

CAF_TEST(a load step scales out once it has lasted windowSeconds) {
  run r{rps_policy(), up_to(10), 1};
  // 100 rps on one replica: twice the target.
  r.feed(0, 60, [](observation& o) { o.rps = 100; });
  CAF_CHECK_EQUAL(r.log, (lines{"0 hysteresis 1->1 (2)", "20 scale_out 1->2 (2)"}));
  CAF_CHECK_EQUAL(r.current, 2);
}

CAF_TEST(a ramp scales out step by step within the rate policy) {
  run r{rps_policy(), up_to(20), 1};
  // From 50 rps up by 50 each evaluation to 1000.
  r.feed(0, 95, [](observation& o) { o.rps = 50.0 + 50.0 * static_cast<double>(o.at_ns / s / 5); });
  // 50 rps on one replica is already above 80 % of the target: the streak
  // starts at t=0, but t=0 itself asked for no more than 1 replica, so the
  // window (20 s) asks for more throughout only from t=25: 300 rps want 6,
  // the rate policy allows 4 pods or 100 % per 15 s, the larger: 5. Until the
  // window holds only proposals above 5 it is held (hysteresis), then by the
  // cooldown until t=55 (12 wanted, 10 allowed), and so on; at t=90 the load
  // is within tolerance of 18 replicas. Each hold reported once.
  CAF_CHECK_EQUAL(
      r.log, (lines{"5 hysteresis 1->1 (2)", "25 scale_out 1->5 (6)", "30 hysteresis 5->5 (7)",
                    "45 cooldown 5->5 (10)", "55 scale_out 5->10 (12)", "60 hysteresis 10->10 (13)",
                    "70 cooldown 10->10 (15)", "85 scale_out 10->18 (18)",
                    "90 tolerance 18->18 (19)", "95 hysteresis 18->18 (20)"}));
}

CAF_TEST(a spike shorter than windowSeconds changes nothing) {
  run r{rps_policy(), up_to(10), 2};
  r.feed(0, 10, [](observation& o) { o.rps = 300; });
  r.feed(15, 120, [](observation& o) { o.rps = 60; });
  CAF_CHECK_EQUAL(r.log, (lines{"0 hysteresis 2->2 (6)"}));
  CAF_CHECK_EQUAL(r.current, 2);
}

CAF_TEST(a spike on a load that sits at its target changes nothing) {
  run r{rps_policy(), up_to(10), 2};
  // 100 rps on two replicas is the target: above 80 % all along, so only
  // the window's proposals (2, then one of 6) keep the spike from acting.
  r.feed(0, 30, [](observation& o) { o.rps = 100; });
  r.feed(35, 35, [](observation& o) { o.rps = 300; });
  r.feed(40, 120, [](observation& o) { o.rps = 100; });
  CAF_CHECK_EQUAL(r.log, (lines{"35 hysteresis 2->2 (6)"}));
  CAF_CHECK_EQUAL(r.current, 2);
}

CAF_TEST(an oscillation around the threshold does not flap) {
  run r{rps_policy(), up_to(10), 2};
  // 130 and 70 rps in turn on two replicas: 1.3 and 0.7 of the target.
  r.feed(0, 115, [](observation& o) { o.rps = (o.at_ns / s / 5) % 2 == 0 ? 130 : 70; });
  // Never 20 s above 80 %, never below 30 %: held, reported once a minute.
  CAF_CHECK_EQUAL(r.log, (lines{"0 hysteresis 2->2 (3)", "60 hysteresis 2->2 (3)"}));
  CAF_CHECK_EQUAL(r.current, 2);
}

CAF_TEST(within tolerance nothing changes) {
  run r{rps_policy(), up_to(10), 4};
  // 4 replicas at 1.05 of the target would be ceil(4.2) = 5.
  r.feed(0, 30, [](observation& o) { o.rps = 210; });
  CAF_CHECK_EQUAL(r.log, (lines{"0 tolerance 4->4 (5)"}));
}

CAF_TEST(a step down scales in once after stabilization and rate limited) {
  auto p = rps_policy();
  p.scale_down.policies = {{"Pods", 1, 15}};
  run r{p, up_to(10), 4};
  r.feed(0, 295, [](observation& o) { o.rps = 200; });
  CAF_CHECK(r.log.empty());
  // 20 rps on 4: 10 % of target. Below 30 % for 20 s from t=320; the
  // recommendations of 4 until t=315 hold it for 300 s; then one pod per
  // 15 s, 30 s apart (cooldown).
  r.feed(300, 700, [](observation& o) { o.rps = 20; });
  CAF_CHECK_EQUAL(
      r.log,
      (lines{"300 hysteresis 4->4 (1)", "320 stabilization 4->4 (1)", "380 stabilization 4->4 (1)",
             "440 stabilization 4->4 (1)", "500 stabilization 4->4 (1)",
             "560 stabilization 4->4 (1)", "620 scale_in 4->3 (1)", "625 rate_policy 3->3 (1)",
             "635 cooldown 3->3 (1)", "650 scale_in 3->2 (1)", "655 rate_policy 2->2 (1)",
             "665 cooldown 2->2 (1)", "680 scale_in 2->1 (1)"}));
  CAF_CHECK_EQUAL(r.current, 1);
}

CAF_TEST(min and max replicas bound every decision) {
  auto p = rps_policy();
  p.scale_down.stabilization_window_seconds = 0;
  run high{p, up_to(3), 3};
  high.feed(0, 30, [](observation& o) { o.rps = 1000; });
  CAF_CHECK_EQUAL(high.log, (lines{"0 hysteresis 3->3 (20)", "20 max_replicas 3->3 (20)"}));
  run low{p, up_to(10, 2), 2};
  low.feed(0, 30, [](observation& o) { o.rps = 0; });
  CAF_CHECK_EQUAL(low.log, (lines{"0 hysteresis 2->2 (0)", "20 min_replicas 2->2 (0)"}));
}

CAF_TEST(a missing sample never causes a scale in) {
  auto p = rps_policy();
  p.scale_down.stabilization_window_seconds = 0;
  p.connections_target_per_replica = 10;
  run r{p, up_to(10), 4};
  // Little traffic, but no connection count every fourth evaluation (t=15,
  // 35, 55): the connections' streak restarts each time, and a scale-in
  // waits for every metric. Each hold reported once a minute.
  r.feed(0, 60, [](observation& o) {
    o.rps = 10;
    if ((o.at_ns / s / 5) % 4 != 3)
      o.connections = 1;
  });
  CAF_CHECK_EQUAL(r.log, (lines{"0 hysteresis 4->4 (1)", "35 missing_samples 4->4 (1)",
                                "60 hysteresis 4->4 (1)"}));
  CAF_CHECK_EQUAL(r.current, 4);
}

CAF_TEST(instances not yet ready count as no load) {
  run r{rps_policy(), up_to(10), 4};
  // 200 rps served by 2 ready of 4: 100 per ready one, but 50 per replica.
  r.feed(0, 60, [](observation& o) {
    o.rps = 200;
    o.ready = 2;
  });
  CAF_CHECK(r.log.empty());
  CAF_CHECK_EQUAL(r.current, 4);
}

CAF_TEST(latency above maxP95LatencyMs adds a replica) {
  auto p = rps_policy();
  p.http->max_p95_latency_ms = 200;
  run r{p, up_to(10), 2};
  r.feed(0, 40, [](observation& o) {
    o.rps = 100; // on target
    o.p95_ms = 350;
  });
  // Still slow after it: one more, once the cooldown allows.
  CAF_CHECK_EQUAL(
      r.log, (lines{"0 hysteresis 2->2 (3)", "20 scale_out 2->3 (3)", "25 cooldown 3->3 (4)"}));
}

CAF_TEST(an idle app goes to zero and a request brings it back at once) {
  auto p = rps_policy();
  p.idle_seconds = 60;
  run r{p, up_to(5, 0), 1};
  r.feed(0, 60, [](observation& o) {
    o.rps = 0;
    o.last_request_ns = 0;
  });
  CAF_REQUIRE_EQUAL(r.current, 0);
  CAF_CHECK_EQUAL(r.log.back(), "60 scale_in 1->0 (0)");
  // A request at zero: activation, no hysteresis, no cooldown.
  r.feed(65, 65, [](observation& o) {
    o.rps = 2;
    o.last_request_ns = 65 * s;
  });
  CAF_CHECK_EQUAL(r.log.back(), "65 scale_out 0->1 (1)");
  CAF_CHECK_EQUAL(r.current, 1);
}

CAF_TEST(cpu utilization is measured against resources cpu) {
  app_scaling_policy p = rps_policy();
  p.http.reset();
  p.cpu_target_utilization_pct = 50;
  bounds b = up_to(10);
  b.cpu_millis = 500; // half a core each: the target is 25 % of a core per replica
  run r{p, b, 2};
  // 2 replicas burning 100 % of a core in all: 2 × the target.
  r.feed(0, 20, [](observation& o) { o.cpu_percent = 100; });
  CAF_CHECK_EQUAL(r.log, (lines{"0 hysteresis 2->2 (4)", "20 scale_out 2->4 (4)"}));
}

CAF_TEST(a redis queue at zero wakes the app only above activationLength) {
  run r{redis_policy(10, 5), up_to(10, 0), 0};
  // At most activationLength waiting: it stays at zero, nothing recorded.
  r.feed(0, 10, [](observation& o) { o.queue_redis = 3; });
  r.feed(15, 25, [](observation& o) { o.queue_redis = 5; });
  CAF_CHECK(r.log.empty());
  CAF_CHECK_EQUAL(r.current, 0);
  // 23 waiting: ceil(23 / 10) = 3 at once (no hysteresis, no rate policy).
  // On 3 replicas that is 77 % of target: ceil(3 × 0.77) = 3, it stays.
  r.feed(30, 60, [](observation& o) { o.queue_redis = 23; });
  CAF_CHECK_EQUAL(r.log, (lines{"30 scale_out 0->3 (3)"}));
  CAF_REQUIRE_EQUAL(r.decisions.size(), 1u);
  auto& d = r.decisions[0];
  CAF_CHECK_EQUAL(d.metric, "queue_redis");
  CAF_CHECK_EQUAL(d.observed, 23);
  CAF_CHECK_EQUAL(d.target, 10);
  CAF_CHECK_EQUAL(d.reason, "queue_redis 23 at zero replicas: activation");
  CAF_CHECK(contains(d.reason, "activation"));
  CAF_CHECK_EQUAL(r.current, 3);
}

CAF_TEST(a redis queue wakes the app up to maxReplicas and any length without activationLength) {
  // 1000 waiting want 100: maxReplicas bounds the activation.
  run big{redis_policy(10, 5), up_to(4, 0), 0};
  big.feed(0, 0, [](observation& o) { o.queue_redis = 1000; });
  CAF_CHECK_EQUAL(big.log, (lines{"0 scale_out 0->4 (100)"}));
  CAF_REQUIRE_EQUAL(big.decisions.size(), 1u);
  CAF_CHECK_EQUAL(big.decisions[0].reason, "spec.scaling.maxReplicas is 4");
  // activationLength 0: one waiting wakes one.
  run one{redis_policy(10, 0), up_to(4, 0), 0};
  one.feed(0, 5, [](observation& o) { o.queue_redis = 0; });
  one.feed(10, 10, [](observation& o) { o.queue_redis = 1; });
  CAF_CHECK_EQUAL(one.log, (lines{"10 scale_out 0->1 (1)"}));
}

CAF_TEST(requests held by the proxy at zero wake one replica) {
  run r{rps_policy(), up_to(5, 0), 0};
  // No rate yet, nothing held: nothing.
  r.feed(0, 5, [](observation&) {});
  CAF_CHECK(r.log.empty());
  r.feed(10, 10, [](observation& o) { o.pending = 3; });
  CAF_CHECK_EQUAL(r.log, (lines{"10 scale_out 0->1 (1)"}));
  CAF_REQUIRE_EQUAL(r.decisions.size(), 1u);
  auto& d = r.decisions[0];
  CAF_CHECK_EQUAL(d.metric, "pending_requests");
  CAF_CHECK_EQUAL(d.observed, 3);
  CAF_CHECK_EQUAL(d.proposal, 1);
  CAF_CHECK_EQUAL(d.reason, "3 requests held by the proxy at zero replicas: activation");
  // Still held on one replica (it is not ready yet): no more than one.
  r.feed(15, 30, [](observation& o) {
    o.pending = 3;
    o.ready = 0;
  });
  CAF_CHECK_EQUAL(r.log.size(), 1u);
  CAF_CHECK_EQUAL(r.current, 1);
}

CAF_TEST(an app whose queue is above activationLength is not idle) {
  auto p = redis_policy(10, 5);
  p.idle_seconds = 60;
  // 8 waiting (above 5) on one replica: 80 % of target, one is right; no
  // request ever, but the app is busy with its queue.
  run busy{p, up_to(5, 0), 1};
  busy.feed(0, 180, [](observation& o) { o.queue_redis = 8; });
  CAF_CHECK(busy.log.empty());
  CAF_CHECK_EQUAL(busy.current, 1);
  // At activationLength (5 waiting, 50 %: one is right) it is idle at t=60;
  // at zero the 5 do not wake it.
  run waiting{p, up_to(5, 0), 1};
  waiting.feed(0, 120, [](observation& o) { o.queue_redis = 5; });
  CAF_CHECK_EQUAL(waiting.log, (lines{"60 scale_in 1->0 (0)"}));
  CAF_CHECK_EQUAL(waiting.current, 0);
  // An empty queue wants fewer (held by hysteresis, then by the 300 s
  // stabilization); idle at t=60 it goes to zero.
  run empty{p, up_to(5, 0), 1};
  empty.feed(0, 120, [](observation& o) { o.queue_redis = 0; });
  CAF_CHECK_EQUAL(empty.log, (lines{"0 hysteresis 1->1 (0)", "20 stabilization 1->1 (0)",
                                    "60 scale_in 1->0 (0)"}));
  CAF_REQUIRE_EQUAL(empty.decisions.size(), 3u);
  auto& d = empty.decisions[2];
  CAF_CHECK_EQUAL(d.metric, "idle");
  CAF_CHECK_EQUAL(d.observed, 60);
  CAF_CHECK_EQUAL(d.target, 60);
  CAF_CHECK_EQUAL(d.window, "60s");
  CAF_CHECK_EQUAL(d.reason, "no request for 60s (idleSeconds)");
  CAF_CHECK_EQUAL(empty.current, 0);
}

CAF_TEST(an app whose queue cannot be read is not idle) {
  auto p = redis_policy(10, 5);
  p.idle_seconds = 60;
  // Redis away: no sample, so no idle scale-in (it might hold work).
  run unknown{p, up_to(5, 0), 1};
  unknown.feed(0, 180, [](observation&) {});
  CAF_CHECK(unknown.log.empty());
  CAF_CHECK_EQUAL(unknown.current, 1);
  // A non-finite sample counts as missing too.
  run nan{p, up_to(5, 0), 1};
  nan.feed(0, 180, [](observation& o) { o.queue_redis = std::nan(""); });
  CAF_CHECK(nan.log.empty());
  CAF_CHECK_EQUAL(nan.current, 1);
}
