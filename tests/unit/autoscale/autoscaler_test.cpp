#define CAF_SUITE autoscaler
#include "support/dsl.hpp"

// The autoscaler actor on the deterministic coordinator: stand-ins of the
// app manager, the traffic actor, the metrics registry and the job
// controller serve scripted values through the registry names, the app
// manager stand-in records (and applies, at once) every autoscale_record,
// and each evaluation is one tick of the actor clock (or an activation).
//
// The autoscaler times its observations with the actor clock — here the
// test coordinator's, which moves only with advance_time — so request rates
// are exact (250 requests over a 5 s tick are 50 rps), and windowSeconds,
// cooldowns and the once-a-minute hold reports are spans the tests step
// through. A record is shown with the actor time (seconds since the
// autoscaler started) at which the app manager received it; the record
// itself carries the wall clock. Only the proxy's last request is
// wall-clock time: the autoscaler turns it into an age on the actor clock.

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "actors/apps/app_spec.hpp"
#include "actors/autoscale/autoscaler.hpp"
#include "actors/core/names.hpp"
#include "runtime/ground/clock.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

int64_t ns_of(caf::actor_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

/// What the stand-ins answer (the test changes it between evaluations) and
/// what they were asked and told.
struct script {
  /// The app manager's view of the app; a change it is sent is applied here.
  app_status status;
  std::vector<autoscale_record> records;
  /// The actor clock when each record arrived.
  std::vector<int64_t> records_at;
  int status_asked = 0;
  int usage_asked = 0;
  /// The traffic actor's view of the app.
  app_traffic traffic;
  int traffic_asked = 0;
  /// The app's apps.requests total (over two series, by status), and
  /// another app's (which must not count).
  double requests = 0;
  double other_requests = 0;
  int metrics_asked = 0;
  /// The job controller's count of queued jobs, and the labels it was asked.
  uint64_t queued = 0;
  std::vector<std::string> counted;
};

using script_ptr = std::shared_ptr<script>;

struct fake_apps_state {
  static inline const char* name = "fake_apps";
};

app_manager_actor::behavior_type
fake_apps(app_manager_actor::stateful_pointer<fake_apps_state> self, script_ptr s) {
  return {
      [](register_atom, const std::string&) { return uint32_t{1}; },
      [](up_atom, const std::string&) { return ok_atom::value; },
      [](down_atom, const std::string&) { return ok_atom::value; },
      [](scale_atom, const std::string&, int32_t, const std::string&) { return ok_atom::value; },
      [self, s](scale_atom, autoscale_record& r) {
        // As the app manager: a change applies to the replicas it started
        // from; a hold is recorded only.
        if (r.to != r.from && r.from == s->status.desired) {
          s->status.desired = r.to;
          s->status.ready = r.to;
        }
        s->records.push_back(std::move(r));
        s->records_at.push_back(ns_of(self->clock().now()));
        return ok_atom::value;
      },
      [](policy_atom, const std::string&, const std::string&) { return ok_atom::value; },
      [](caf::delete_atom, const std::string&) { return ok_atom::value; },
      [](get_atom) { return app_statuses{}; },
      [s](get_atom, const std::string& app) {
        ++s->status_asked;
        auto x = s->status;
        x.name = app;
        return x;
      },
      [s](usage_atom, const std::string& app) {
        ++s->usage_asked;
        app_usage u;
        u.name = app;
        return u;
      },
      [](place_atom, const std::string&, uint32_t) { return std::vector<std::string>{}; },
      [](recovered_atom) {},
      [](ejected_atom, const std::string&, const std::string&) {},
      [](activate_atom, const std::string&) {},
      [](shutdown_atom) { return ok_atom::value; },
      [](status_atom) { return component_status{}; },
  };
}

struct fake_traffic_state {
  static inline const char* name = "fake_traffic";
};

traffic_actor::behavior_type fake_traffic(traffic_actor::stateful_pointer<fake_traffic_state>,
                                          script_ptr s) {
  return {
      [](app_endpoints&) {},
      [](in_flight_atom, const std::string&, const std::string&) { return uint32_t{0}; },
      [s](get_atom, const std::string& app) {
        ++s->traffic_asked;
        auto t = s->traffic;
        t.app = app;
        return t;
      },
      [](ejected_atom, const std::string&, const std::string&) {},
      [](activate_atom, const std::string&) {},
      [](tick_atom) {},
      [](status_atom) { return component_status{}; },
  };
}

metric_snapshot series(std::string family, std::vector<std::string> labels, double value) {
  metric_snapshot x;
  x.family = std::move(family);
  x.labels = std::move(labels);
  x.value = value;
  return x;
}

struct fake_metrics_state {
  static inline const char* name = "fake_metrics";
};

metrics_actor::behavior_type fake_metrics(metrics_actor::stateful_pointer<fake_metrics_state>,
                                          script_ptr s) {
  return {
      [](metric_deltas&) {},
      [](activity_atom) {},
      [](tick_atom) {},
      [](proxied_atom, const std::string&, metric_snapshots&) {},
      [s](get_atom) {
        ++s->metrics_asked;
        metric_snapshots xs;
        // The app's counter by status (summed), another app's, and one
        // without labels: only the first two count.
        xs.push_back(series("apps.requests", {"web", "200"}, s->requests * 0.75));
        xs.push_back(series("apps.requests", {"other", "200"}, s->other_requests));
        xs.push_back(series("apps.requests", {}, s->other_requests));
        xs.push_back(series("apps.requests", {"web", "503"}, s->requests * 0.25));
        // A latency window without observations: no p95 sample.
        auto d = series("apps.request.duration", {"web"}, 0);
        metric_window_stats w;
        w.window = "1m";
        d.windows.push_back(w);
        xs.push_back(std::move(d));
        return xs;
      },
      [](prometheus_atom) { return std::string{}; },
      [](monitoring_atom) { return std::string{}; },
      [](shutdown_atom) { return ok_atom::value; },
  };
}

struct fake_jobs_state {
  static inline const char* name = "fake_jobs";
};

job_controller_actor::behavior_type
fake_jobs(job_controller_actor::stateful_pointer<fake_jobs_state>, script_ptr s) {
  return {
      [](submit_atom, const std::string&) { return std::string{}; },
      [](cancel_atom, const std::string&) { return std::string{}; },
      [](subscribe_atom, const std::string&, const job_subscriber_actor&) { return uint64_t{0}; },
      [](started_atom, const std::string&) {},
      [](done_atom, const std::string&, const std::string&, bool,
         const std::vector<job_subscriber_actor>&) {},
      [](requeue_atom, const std::string&) {},
      [](sweep_atom) {},
      [](sweep_atom, const std::string&) {},
      [s](count_atom, const std::string& label) {
        s->counted.push_back(label);
        return s->queued;
      },
      [](shutdown_atom) { return ok_atom::value; },
      [](status_atom) { return component_status{}; },
  };
}

/// An app spec "web" with this `spec.scaling` block (YAML, indented by four).
app_spec spec_with(const std::string& scaling) {
  return parse_app_spec_yaml("metadata:\n  name: web\nspec:\n  command: [srv]\n  scaling:\n" +
                             scaling);
}

/// Seconds as the tests write them: 5, 10.3.
std::string seconds_of(int64_t ns) {
  std::ostringstream out;
  out << static_cast<double>(ns) / 1e9;
  return out.str();
}

/// A record as the tests compare it, at the actor time `t` it arrived:
/// "t=T rule metric from->to (proposal) observed/target window".
std::string show(const autoscale_record& r, int64_t t) {
  std::ostringstream out;
  out.precision(4);
  out << "t=" << seconds_of(t) << " " << r.rule << " " << r.metric << " " << r.from << "->" << r.to
      << " (" << r.proposal << ") " << r.observed << "/" << r.target << " " << r.window;
  return out.str();
}

struct fixture : test::deterministic_fixture {
  script_ptr s = std::make_shared<script>();
  app_manager_actor apps = sys.spawn(fake_apps, s);
  traffic_actor traffic = sys.spawn(fake_traffic, s);
  metrics_actor metrics = sys.spawn(fake_metrics, s);
  job_controller_actor jobs = sys.spawn(fake_jobs, s);
  autoscaler_actor scaler;
  caf::timespan interval = 5s;
  /// The actor clock when the autoscaler started, and the wall clock
  /// before the test.
  int64_t start_ns = 0;
  int64_t wall_before = now_ns();

  fixture() {
    s->status.state = "up";
    // The job controller only where a test enrolls it.
    enroll(sys, names::apps, apps);
    enroll(sys, names::traffic, traffic);
    enroll(sys, names::metrics, metrics);
    run();
  }

  ~fixture() override {
    // The autoscaler first: run() would follow its tick chain forever.
    if (scaler)
      caf::anon_send_exit(scaler, caf::exit_reason::user_shutdown);
    withdraw(sys, names::apps);
    withdraw(sys, names::traffic);
    withdraw(sys, names::metrics);
    withdraw(sys, names::jobs);
    caf::anon_send_exit(apps, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(traffic, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(metrics, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(jobs, caf::exit_reason::user_shutdown);
    run();
  }

  /// Starts the autoscaler with the spec's policy and bounds (as the app
  /// manager does), the app at its `replicas`, all ready.
  void start(const app_spec& spec) {
    autoscale::bounds b;
    b.min_replicas = spec.scaling.min_replicas;
    b.max_replicas = spec.scaling.max_replicas;
    b.cpu_millis = spec.resources.cpu_millis;
    b.memory_bytes = spec.resources.memory_bytes;
    start(spec.scaling.policy, b, spec.scaling.replicas);
  }

  void start(const app_scaling_policy& policy, const autoscale::bounds& b, int replicas) {
    s->status.desired = replicas;
    s->status.ready = replicas;
    interval = std::chrono::seconds(policy.evaluation_seconds);
    start_ns = ns_of(sched.clock().now());
    scaler = sys.spawn(autoscaler, std::string{"web"}, policy, b);
    // Its first message: it initializes and schedules the first tick.
    consume_messages();
  }

  /// Actor time since the autoscaler started.
  caf::timespan elapsed() { return caf::timespan{ns_of(sched.clock().now()) - start_ns}; }

  /// Moves the actor clock on by `dt` and lets everything run that is due.
  void advance(caf::timespan dt) {
    advance_time(dt);
    consume_messages();
  }

  /// The next tick: one evaluation, carried to its end. (The timeouts of
  /// the last evaluation's answered requests fire too, ignored.)
  void next_tick() {
    auto asked = s->status_asked;
    advance(interval);
    CAF_REQUIRE_EQUAL(s->status_asked, asked + 1);
  }

  /// Ticks until the actor time is `t` (a multiple of the interval).
  void ticks_until(caf::timespan t) {
    while (elapsed() < t)
      next_tick();
    CAF_REQUIRE(elapsed() == t);
  }

  /// An activation from the proxy, carried to its end with no time passing.
  void activate() {
    caf::anon_send(scaler, activate_atom::value);
    consume_messages();
  }

  autoscaler_state& state() {
    return deref<autoscaler_actor::stateful_base<autoscaler_state>>(scaler).state;
  }

  /// The records so far, shown; each carries the wall clock of its making.
  std::vector<std::string> shown() const {
    std::vector<std::string> out;
    auto wall_after = now_ns();
    for (size_t i = 0; i < s->records.size(); ++i) {
      auto& r = s->records[i];
      CAF_CHECK_EQUAL(r.app, "web");
      CAF_CHECK(r.ts_ns >= wall_before && r.ts_ns <= wall_after);
      out.push_back(show(r, s->records_at[i] - start_ns));
    }
    return out;
  }
};

using lines = std::vector<std::string>;

} // namespace

CAF_TEST_FIXTURE_SCOPE(autoscaler_tests, fixture)

CAF_TEST(a request ramp scales out within the rate policy and the cooldown and back in) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 1
    policy:
      cooldownSeconds: 30
      evaluationSeconds: 5
      http: {targetRPSPerReplica: 10, windowSeconds: 10}
      behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
)"));
  // Each tick adds `n` requests to the app's counter (n / 5 rps) and 1000
  // to another app's, which never counts.
  auto tick_with = [this](double n) {
    s->requests += n;
    s->other_requests += 1000;
    next_tick();
  };
  s->requests = 5000;
  // t=5: the first evaluation has no rate yet (a missing sample): nothing.
  tick_with(0);
  CAF_CHECK_EQUAL(state().evaluations, 1u);
  CAF_CHECK_EQUAL(s->metrics_asked, 1);
  CAF_CHECK(s->records.empty());
  // t=10: 250 requests over 5 s, 50 rps on one replica: 5 wanted, above 80 %
  // of target only since now (windowSeconds 10).
  tick_with(250);
  CAF_CHECK_EQUAL(shown(), (lines{"t=10 hysteresis rps 1->1 (5) 50/10 10s"}));
  // t=15: 60 rps, still within the window (the same hold: not reported).
  tick_with(300);
  CAF_CHECK_EQUAL(s->records.size(), 1u);
  // t=20: 80 rps for 10 s: 8 wanted; HPA's scaleUp policies (100 % or 4
  // pods per 15 s, the larger) allow 5.
  tick_with(400);
  CAF_CHECK_EQUAL(s->status.desired, 5);
  // t=25, 30: 100 rps over 5 replicas: 10 wanted, but 4 pods were added
  // within 15 s. t=35..45: the rate policy would allow 10, the cooldown (30 s
  // since t=20) holds. t=50: the cooldown is over.
  for (int i = 0; i < 6; ++i)
    tick_with(500);
  CAF_CHECK_EQUAL(s->status.desired, 10);
  // t=55: the app's counter stops: 0 rps, below 30 % since now. t=65: for
  // 10 s, but the last change was 15 s ago. t=80: the cooldown is over;
  // minReplicas bounds the scale-in.
  for (int i = 0; i < 6; ++i)
    tick_with(0);
  CAF_CHECK_EQUAL(elapsed(), 80s);
  CAF_CHECK_EQUAL(
      shown(),
      (lines{"t=10 hysteresis rps 1->1 (5) 50/10 10s", "t=20 scale_out rps 1->5 (8) 80/10 10s",
             "t=25 rate_policy rps 5->5 (10) 100/10 10s", "t=35 cooldown rps 5->5 (10) 100/10 30s",
             "t=50 scale_out rps 5->10 (10) 100/10 10s", "t=55 hysteresis rps 10->10 (0) 0/10 10s",
             "t=65 cooldown rps 10->10 (0) 0/10 30s", "t=80 scale_in rps 10->1 (0) 0/10 10s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 8u);
  auto& r = s->records;
  CAF_CHECK_EQUAL(r[0].reason, "rps above 80% of target for less than 10s");
  CAF_CHECK_EQUAL(r[1].reason, "rps 80 is 800% of target per replica 10 over 1 replicas; "
                               "scaleUp policies (selectPolicy Max) allow 5 now");
  CAF_CHECK_EQUAL(r[2].reason, "scaleUp policies (selectPolicy Max) allow 5 now");
  CAF_CHECK_EQUAL(r[3].reason, "the last change was 15s ago, cooldownSeconds is 30");
  CAF_CHECK_EQUAL(r[4].reason, "rps 100 is 200% of target per replica 10 over 5 replicas");
  CAF_CHECK_EQUAL(r[5].reason, "rps below 30% of target for less than 10s");
  CAF_CHECK_EQUAL(r[6].reason, "the last change was 15s ago, cooldownSeconds is 30");
  CAF_CHECK_EQUAL(r[7].reason, "spec.scaling.minReplicas is 1");
  CAF_CHECK_EQUAL(s->status.desired, 1);
  CAF_CHECK_EQUAL(state().evaluations, 16u);
  CAF_CHECK_EQUAL(state().last_rule, "scale_in");
  CAF_CHECK_EQUAL(s->status_asked, 16);
  CAF_CHECK_EQUAL(s->usage_asked, 16);
  CAF_CHECK_EQUAL(s->traffic_asked, 16);
  CAF_CHECK_EQUAL(s->metrics_asked, 16);
}

CAF_TEST(a spike shorter than windowSeconds changes nothing and a longer one scales out) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      http: {targetRPSPerReplica: 10, windowSeconds: 30}
)"));
  s->requests = 100;
  next_tick();
  // t=10, 15: 200 rps on two replicas (20 wanted), for 10 s of 30.
  for (int i = 0; i < 2; ++i) {
    s->requests += 1000;
    next_tick();
  }
  // Then 14 rps until t=120: 70 % of target, two replicas are right (and
  // below the 80 % that keeps the streak).
  while (elapsed() < 120s) {
    s->requests += 70;
    next_tick();
  }
  CAF_CHECK_EQUAL(shown(), (lines{"t=10 hysteresis rps 2->2 (20) 200/10 30s"}));
  CAF_CHECK_EQUAL(s->status.desired, 2);
  CAF_CHECK_EQUAL(state().evaluations, 24u);
  // The same load for 30 s (t=125..155): held, then the rate policies
  // allow 2 -> 6 (100 % or 4 pods per 15 s).
  for (int i = 0; i < 7; ++i) {
    s->requests += 1000;
    next_tick();
  }
  CAF_CHECK_EQUAL(shown(), (lines{"t=10 hysteresis rps 2->2 (20) 200/10 30s",
                                  "t=125 hysteresis rps 2->2 (20) 200/10 30s",
                                  "t=155 scale_out rps 2->6 (20) 200/10 30s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 3u);
  CAF_CHECK_EQUAL(s->records[0].reason, "rps above 80% of target for less than 30s");
  CAF_CHECK_EQUAL(s->records[2].reason, "rps 200 is 1000% of target per replica 10 over 2 "
                                        "replicas; scaleUp policies (selectPolicy Max) allow "
                                        "6 now");
  CAF_CHECK_EQUAL(s->status.desired, 6);
}

CAF_TEST(a hold is reported again only after a minute) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      http: {targetRPSPerReplica: 10, windowSeconds: 600}
)"));
  s->requests = 100;
  next_tick();
  // 200 rps from t=10 on, never for 600 s: held every evaluation, reported
  // at t=10, then at t=70 (60 s later), not at t=65.
  auto until = [this](caf::timespan t) {
    while (elapsed() < t) {
      s->requests += 1000;
      next_tick();
    }
  };
  until(65s);
  CAF_CHECK_EQUAL(shown(), (lines{"t=10 hysteresis rps 2->2 (20) 200/10 600s"}));
  until(70s);
  CAF_CHECK_EQUAL(shown(), (lines{"t=10 hysteresis rps 2->2 (20) 200/10 600s",
                                  "t=70 hysteresis rps 2->2 (20) 200/10 600s"}));
  until(125s);
  CAF_CHECK_EQUAL(s->records.size(), 2u);
  until(130s);
  CAF_CHECK_EQUAL(s->records.size(), 3u);
  CAF_CHECK_EQUAL(state().evaluations, 26u);
  CAF_CHECK_EQUAL(s->status.desired, 2);
}

CAF_TEST(an activation right after a tick reports no rate and keeps the baseline) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      http: {targetRPSPerReplica: 10, windowSeconds: 600}
)"));
  s->requests = 100;
  next_tick();
  CAF_CHECK_EQUAL(state().last_total, 100);
  CAF_CHECK_EQUAL(state().last_at_ns, start_ns + 5'000'000'000);
  // 300 ms later, 50 more requests and an activation: 50 / 0.3 s would be
  // 167 rps (8 times the target over two replicas: a hold on record). It is
  // no sample at all, and the baseline stays the tick's.
  advance(300ms);
  s->requests = 150;
  activate();
  CAF_CHECK_EQUAL(state().activations, 1u);
  CAF_CHECK_EQUAL(state().evaluations, 2u);
  CAF_CHECK_EQUAL(s->metrics_asked, 2);
  CAF_CHECK(s->records.empty());
  CAF_CHECK_EQUAL(state().last_total, 100);
  CAF_CHECK_EQUAL(state().last_at_ns, start_ns + 5'000'000'000);
  // The next tick (t=10) measures over the whole 5 s since t=5: 200
  // requests, 40 rps (not 150 over 4.7 s, 32 rps).
  s->requests = 300;
  advance(4700ms);
  CAF_CHECK_EQUAL(elapsed(), 10s);
  CAF_CHECK_EQUAL(s->status_asked, 3);
  CAF_CHECK_EQUAL(shown(), (lines{"t=10 hysteresis rps 2->2 (4) 40/10 600s"}));
  CAF_CHECK_EQUAL(state().last_total, 300);
  CAF_CHECK_EQUAL(state().evaluations, 3u);
}

CAF_TEST(a counter that went down is a missing sample and a new baseline) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      http: {targetRPSPerReplica: 10, windowSeconds: 600}
)"));
  s->requests = 1000;
  next_tick();
  // t=10: the registry started over (200 < 1000): no rate, 200 the base.
  s->requests = 200;
  next_tick();
  CAF_CHECK(s->records.empty());
  CAF_CHECK_EQUAL(state().last_total, 200);
  CAF_CHECK_EQUAL(state().last_at_ns, start_ns + 10'000'000'000);
  // t=15: 200 more over 5 s: 40 rps on two replicas, 4 wanted.
  s->requests = 400;
  next_tick();
  CAF_CHECK_EQUAL(shown(), (lines{"t=15 hysteresis rps 2->2 (4) 40/10 600s"}));
}

CAF_TEST(an activation at zero evaluates at once and scales out to one) {
  start(spec_with(R"(    minReplicas: 0
    maxReplicas: 3
    replicas: 0
    policy:
      http: {targetRPSPerReplica: 10}
)"));
  s->traffic.pending = 2;
  activate();
  // No time passed and the first tick is still due: the activation evaluated.
  CAF_CHECK_EQUAL(elapsed(), 0s);
  CAF_CHECK(sched.clock().has_pending_timeout());
  CAF_CHECK_EQUAL(state().activations, 1u);
  CAF_CHECK_EQUAL(state().evaluations, 1u);
  CAF_CHECK_EQUAL(shown(), (lines{"t=0 scale_out pending_requests 0->1 (1) 2/0 20s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 1u);
  CAF_CHECK_EQUAL(s->records[0].reason,
                  "2 requests held by the proxy at zero replicas: activation");
  CAF_CHECK_EQUAL(s->status.desired, 1);
}

CAF_TEST(a tick and an activation together at zero scale out once) {
  start(spec_with(R"(    minReplicas: 0
    maxReplicas: 3
    replicas: 0
    policy:
      http: {targetRPSPerReplica: 10}
)"));
  s->traffic.pending = 2;
  // The tick is due (t=5) and the proxy's activation arrives with it: the
  // tick evaluates, the activation waits for it and evaluates after the
  // record was sent — so it reads the replicas the first one left.
  advance_time(interval);
  caf::anon_send(scaler, activate_atom::value);
  consume_messages();
  CAF_CHECK_EQUAL(elapsed(), 5s);
  CAF_CHECK_EQUAL(state().activations, 1u);
  CAF_CHECK_EQUAL(state().evaluations, 2u);
  CAF_CHECK_EQUAL(s->status_asked, 2);
  CAF_CHECK_EQUAL(state().expected, 1);
  CAF_CHECK_EQUAL(shown(), (lines{"t=5 scale_out pending_requests 0->1 (1) 2/0 20s"}));
  CAF_CHECK_EQUAL(s->status.desired, 1);
  // At the next tick (t=10) requests are still held, and the one replica
  // serves 10 rps, on target: nothing more.
  s->requests += 50;
  next_tick();
  CAF_CHECK_EQUAL(shown(), (lines{"t=5 scale_out pending_requests 0->1 (1) 2/0 20s"}));
  CAF_CHECK_EQUAL(state().evaluations, 3u);
}

CAF_TEST(a scale by someone else makes the next change wait for the cooldown) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      cooldownSeconds: 30
      http: {targetRPSPerReplica: 10, windowSeconds: 10}
)"));
  s->requests = 100;
  next_tick();
  // t=10: 14 rps on two replicas, 70 % of target: nothing.
  s->requests += 70;
  next_tick();
  CAF_CHECK(s->records.empty());
  CAF_CHECK_EQUAL(state().expected, 2);
  // Between evaluations the API's /scale sets 4; then the load rises to
  // 80 rps: 20 per replica, 8 wanted.
  s->status.desired = 4;
  s->status.ready = 4;
  // t=15: the change is seen (and counted at t=15); above 80 % since now.
  // t=25: for 10 s, but the change was 10 s ago (cooldown 30 s). t=45: over.
  while (elapsed() < 45s) {
    s->requests += 400;
    next_tick();
  }
  CAF_CHECK_EQUAL(shown(), (lines{"t=15 hysteresis rps 4->4 (8) 80/10 10s",
                                  "t=25 cooldown rps 4->4 (8) 80/10 30s",
                                  "t=45 scale_out rps 4->8 (8) 80/10 10s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 3u);
  CAF_CHECK_EQUAL(s->records[1].reason, "the last change was 10s ago, cooldownSeconds is 30");
  CAF_CHECK_EQUAL(s->status.desired, 8);
  CAF_CHECK_EQUAL(state().expected, 8);
}

CAF_TEST(idleness is the age of the proxy last request on the actor clock) {
  start(spec_with(R"(    minReplicas: 0
    maxReplicas: 3
    replicas: 1
    policy:
      idleSeconds: 60
      connections: {targetPerReplica: 10}
)"));
  // 10 connections on one replica: on target, no change wanted.
  s->traffic.active_connections = 10;
  // No request since the proxy started: idleness counts from the
  // autoscaler's start, 60 s at t=60 — but at t=60 the proxy tells of a
  // request 30 s ago (wall clock), at t=65 of one 59 s ago: not idle.
  ticks_until(55s);
  s->traffic.last_request_ns = now_ns() - 30'000'000'000;
  next_tick();
  s->traffic.last_request_ns = now_ns() - 59'000'000'000;
  next_tick();
  CAF_CHECK(s->records.empty());
  // t=70: a request 61 s ago.
  s->traffic.last_request_ns = now_ns() - 61'000'000'000;
  next_tick();
  CAF_REQUIRE_EQUAL(s->records.size(), 1u);
  auto& r = s->records[0];
  CAF_CHECK_EQUAL(s->records_at[0] - start_ns, 70'000'000'000);
  CAF_CHECK_EQUAL(r.rule, "scale_in");
  CAF_CHECK_EQUAL(r.metric, "idle");
  CAF_CHECK_EQUAL(r.from, 1);
  CAF_CHECK_EQUAL(r.to, 0);
  CAF_CHECK_EQUAL(r.window, "60s");
  CAF_CHECK_EQUAL(r.target, 60);
  // 61 s and the microseconds the evaluation took.
  CAF_CHECK(r.observed >= 61 && r.observed < 62);
  CAF_CHECK_EQUAL(r.reason, "no request for 60s (idleSeconds)");
  CAF_CHECK_EQUAL(s->status.desired, 0);
}

CAF_TEST(queued jobs above target are held by hysteresis then scale out) {
  // No http block: the seed's hysteresis defaults (80 %, 20 s) apply.
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      queue:
        jobs: {label: kind=batch, targetPerReplica: 5}
)"));
  enroll(sys, names::jobs, jobs);
  s->queued = 12;
  // 12 over 2 replicas: 6 each, 120 % of 5 — ceil(2 × 1.2) = 3, beyond the
  // tolerance, above 80 % from t=5, for 20 s at t=25. On 3 replicas 12
  // jobs are 80 %: ceil(3 × 0.8) = 3, no further change.
  ticks_until(40s);
  CAF_CHECK_EQUAL(s->counted, lines(8, "kind=batch"));
  CAF_CHECK_EQUAL(shown(), (lines{"t=5 hysteresis queue_jobs 2->2 (3) 12/5 20s",
                                  "t=25 scale_out queue_jobs 2->3 (3) 12/5 20s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 2u);
  CAF_CHECK_EQUAL(s->records[0].reason, "queue_jobs above 80% of target for less than 20s");
  CAF_CHECK_EQUAL(s->records[1].reason,
                  "queue_jobs 12 is 120% of target per replica 5 over 2 replicas");
  CAF_CHECK_EQUAL(s->status.desired, 3);
}

CAF_TEST(queued jobs scale out and a missing queue sample blocks the scale in) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      cooldownSeconds: 0
      http: {targetRPSPerReplica: 10, windowSeconds: 5}
      behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
      queue:
        jobs: {label: kind=batch, targetPerReplica: 5}
)"));
  enroll(sys, names::jobs, jobs);
  s->queued = 12;
  s->requests = 50;
  // t=5: no rate yet; 12 jobs want 3, above 80 % since now. t=10: for 5 s;
  // the counter stays (0 rps wants fewer, but only since now).
  ticks_until(10s);
  CAF_CHECK_EQUAL(s->status.desired, 3);
  // t=15, 20: no job controller: no queue sample, and the 0 rps (below 30 %
  // for 5 s) want minReplicas: a scale-in waits for every metric.
  withdraw(sys, names::jobs);
  ticks_until(20s);
  CAF_CHECK_EQUAL(s->status.desired, 3);
  // t=25: the queue is back, empty: below 30 % since now. t=30: for 5 s.
  enroll(sys, names::jobs, jobs);
  s->queued = 0;
  ticks_until(30s);
  CAF_CHECK_EQUAL(s->counted, lines(4, "kind=batch"));
  CAF_CHECK_EQUAL(shown(), (lines{"t=5 hysteresis queue_jobs 2->2 (3) 12/5 5s",
                                  "t=10 scale_out queue_jobs 2->3 (3) 12/5 5s",
                                  "t=15 missing_samples rps 3->3 (0) 0/10 5s",
                                  "t=25 hysteresis queue_jobs 3->3 (0) 0/5 5s",
                                  "t=30 scale_in rps 3->1 (0) 0/10 5s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 5u);
  CAF_CHECK_EQUAL(s->records[1].reason,
                  "queue_jobs 12 is 120% of target per replica 5 over 2 replicas");
  CAF_CHECK_EQUAL(s->records[2].reason,
                  "no sample of queue_jobs: a scale-in waits for every metric");
  CAF_CHECK_EQUAL(s->records[4].reason, "spec.scaling.minReplicas is 1");
  CAF_CHECK_EQUAL(s->status.desired, 1);
  CAF_CHECK_EQUAL(state().evaluations, 6u);
}

CAF_TEST(an app that is down is not evaluated) {
  start(spec_with(R"(    minReplicas: 0
    maxReplicas: 3
    replicas: 0
    policy:
      http: {targetRPSPerReplica: 10}
)"));
  s->status.state = "down";
  s->traffic.pending = 2;
  next_tick();
  activate();
  // Asked for its status each time, nothing else, nothing recorded.
  CAF_CHECK_EQUAL(s->status_asked, 2);
  CAF_CHECK_EQUAL(s->usage_asked, 0);
  CAF_CHECK_EQUAL(s->traffic_asked, 0);
  CAF_CHECK_EQUAL(s->metrics_asked, 0);
  CAF_CHECK(s->records.empty());
  CAF_CHECK_EQUAL(state().evaluations, 0u);
  CAF_CHECK_EQUAL(state().activations, 1u);
  // Up again: the same activation scales out.
  s->status.state = "up";
  activate();
  CAF_CHECK_EQUAL(shown(), (lines{"t=5 scale_out pending_requests 0->1 (1) 2/0 20s"}));
  CAF_CHECK_EQUAL(state().evaluations, 1u);
}

CAF_TEST_FIXTURE_SCOPE_END()
