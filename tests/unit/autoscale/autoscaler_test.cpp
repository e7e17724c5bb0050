#define CAF_SUITE autoscaler
#include "support/dsl.hpp"

// The autoscaler actor on the deterministic coordinator: stand-ins of the
// app manager, the traffic actor, the metrics registry and the job
// controller serve scripted values through the registry names, the app
// manager stand-in records (and applies) every autoscale_record, and each
// evaluation is one tick of the actor clock (or an activation).
//
// The autoscaler's observations carry now_ns() (the wall clock, no test
// hook): the request rate is the counter's growth over the wall time between
// two evaluations (microseconds here), so any growth is far above target and
// no growth is exactly 0 rps; and windows, cooldowns and the once-a-minute
// hold reports are wall-clock spans the tests never reach. The tests are
// built so that only the order and count of evaluations matter; where a
// streak must be sustained (a scale-out or -in at all), the parsed policy's
// windowSeconds is set to 0 (the parser's minimum is 1 s).

#include <memory>
#include <string>
#include <vector>

#include "actors/apps/app_spec.hpp"
#include "actors/autoscale/autoscaler.hpp"
#include "actors/core/names.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// What the stand-ins answer (the test changes it between evaluations) and
/// what they were asked and told.
struct script {
  /// The app manager's view of the app; a change it is sent is applied here.
  app_status status;
  std::vector<autoscale_record> records;
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

app_manager_actor::behavior_type fake_apps(app_manager_actor::stateful_pointer<fake_apps_state>,
                                           script_ptr s) {
  return {
      [](register_atom, const std::string&) { return uint32_t{1}; },
      [](up_atom, const std::string&) { return ok_atom::value; },
      [](down_atom, const std::string&) { return ok_atom::value; },
      [](scale_atom, const std::string&, int32_t, const std::string&) { return ok_atom::value; },
      [s](scale_atom, autoscale_record& r) {
        // As the app manager: a change applies to the replicas it started
        // from; a hold is recorded only.
        if (r.to != r.from && r.from == s->status.desired) {
          s->status.desired = r.to;
          s->status.ready = r.to;
        }
        s->records.push_back(std::move(r));
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

/// A record as the tests compare it: "rule metric from->to (proposal) window";
/// a proposal from a request rate depends on the wall clock: "(rate)".
std::string show(const autoscale_record& r) {
  auto proposal =
      r.metric == "rps" && r.observed > 0 ? std::string{"rate"} : std::to_string(r.proposal);
  return r.rule + " " + r.metric + " " + std::to_string(r.from) + "->" + std::to_string(r.to) +
         " (" + proposal + ") " + r.window;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct fixture : test::deterministic_fixture {
  script_ptr s = std::make_shared<script>();
  app_manager_actor apps = sys.spawn(fake_apps, s);
  traffic_actor traffic = sys.spawn(fake_traffic, s);
  metrics_actor metrics = sys.spawn(fake_metrics, s);
  job_controller_actor jobs = sys.spawn(fake_jobs, s);
  autoscaler_actor scaler;
  caf::timespan interval = 5s;

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
    scaler = sys.spawn(autoscaler, std::string{"web"}, policy, b);
    // Its first message: it initializes and schedules the first tick.
    consume_messages();
  }

  /// The next tick: one evaluation, carried to its end. (The timeouts of
  /// the last evaluation's answered requests fire too, ignored.)
  void next_tick() {
    auto asked = s->status_asked;
    advance_time(interval);
    consume_messages();
    CAF_REQUIRE_EQUAL(s->status_asked, asked + 1);
  }

  autoscaler_state& state() {
    return deref<autoscaler_actor::stateful_base<autoscaler_state>>(scaler).state;
  }

  std::vector<std::string> shown() const {
    std::vector<std::string> out;
    for (auto& r : s->records)
      out.push_back(show(r));
    return out;
  }
};

using lines = std::vector<std::string>;

} // namespace

CAF_TEST_FIXTURE_SCOPE(autoscaler_tests, fixture)

CAF_TEST(a request ramp scales out once and the next evaluations see the new count) {
  auto spec = spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 1
    policy:
      cooldownSeconds: 3600
      evaluationSeconds: 5
      http: {targetRPSPerReplica: 10, windowSeconds: 1}
      behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
)");
  // Any streak counts at once (see the top of the file).
  spec.scaling.policy.http->window_seconds = 0;
  start(spec);
  s->requests = 5000;
  s->other_requests = 100;
  // The first evaluation has no rate yet (a missing sample): nothing.
  next_tick();
  CAF_CHECK_EQUAL(state().evaluations, 1u);
  CAF_CHECK_EQUAL(s->metrics_asked, 1);
  CAF_CHECK(s->records.empty());
  // The ramp: 1000 more requests per evaluation, microseconds apart — far
  // above 10 rps per replica. HPA's default scaleUp policies (100 % or 4
  // pods per 15 s, the larger) allow 1 -> 5.
  s->requests += 1000;
  s->other_requests += 1000;
  next_tick();
  CAF_CHECK_EQUAL(shown(), (lines{"scale_out rps 1->5 (rate) 0s"}));
  CAF_CHECK_EQUAL(s->status.desired, 5);
  // Still rising: the next evaluation starts from 5, and the same policies
  // (4 pods added within 15 s) hold it; reported once.
  for (int i = 0; i < 2; ++i) {
    s->requests += 1000;
    s->other_requests += 1000;
    next_tick();
  }
  // The app's counter stops, the other app's does not: 0 rps, a scale-in
  // to minReplicas wanted, held by the cooldown since the change.
  for (int i = 0; i < 2; ++i) {
    s->other_requests += 1000;
    next_tick();
  }
  CAF_CHECK_EQUAL(shown(), (lines{"scale_out rps 1->5 (rate) 0s", "rate_policy rps 5->5 (rate) 0s",
                                  "cooldown rps 5->5 (0) 3600s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 3u);
  auto& out = s->records[0];
  CAF_CHECK_EQUAL(out.app, "web");
  CAF_CHECK_GREATER(out.proposal, 5);
  CAF_CHECK_GREATER(out.observed, 10 * 5);
  CAF_CHECK_EQUAL(out.target, 10);
  CAF_CHECK(starts_with(out.reason, "rps "));
  CAF_CHECK(ends_with(out.reason, "% of target per replica 10 over 1 replicas; scaleUp policies "
                                  "(selectPolicy Max) allow 5 now"));
  auto& held = s->records[1];
  CAF_CHECK_GREATER(held.proposal, 5);
  CAF_CHECK_EQUAL(held.reason, "scaleUp policies (selectPolicy Max) allow 5 now");
  auto& cooling = s->records[2];
  CAF_CHECK_EQUAL(cooling.observed, 0);
  CAF_CHECK_EQUAL(cooling.target, 10);
  CAF_CHECK(starts_with(cooling.reason, "the last change was "));
  CAF_CHECK(ends_with(cooling.reason, "s ago, cooldownSeconds is 3600"));
  CAF_CHECK_EQUAL(s->status.desired, 5);
  CAF_CHECK_EQUAL(state().evaluations, 6u);
  CAF_CHECK_EQUAL(state().last_rule, "cooldown");
  CAF_CHECK_EQUAL(s->status_asked, 6);
  CAF_CHECK_EQUAL(s->usage_asked, 6);
  CAF_CHECK_EQUAL(s->traffic_asked, 6);
}

CAF_TEST(a spike shorter than windowSeconds changes nothing) {
  start(spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      http: {targetRPSPerReplica: 10, windowSeconds: 600}
)"));
  s->requests = 100;
  next_tick();
  // Two evaluations of a spike, then the counter stays.
  for (int i = 0; i < 2; ++i) {
    s->requests += 1000;
    next_tick();
  }
  for (int i = 0; i < 5; ++i)
    next_tick();
  // Above 80 % from the second evaluation on, but not for 600 s: one
  // hysteresis hold (the same hold, and the one below 30 % that follows,
  // are not reported again within a minute).
  CAF_CHECK_EQUAL(shown(), (lines{"hysteresis rps 2->2 (rate) 600s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 1u);
  auto& held = s->records[0];
  CAF_CHECK_GREATER(held.proposal, 2);
  CAF_CHECK_EQUAL(held.reason, "rps above 80% of target for less than 600s");
  CAF_CHECK_EQUAL(s->status.desired, 2);
  CAF_CHECK_EQUAL(state().evaluations, 8u);
  CAF_CHECK_EQUAL(state().last_rule, "hysteresis");
}

CAF_TEST(an activation at zero evaluates at once and scales out to one) {
  start(spec_with(R"(    minReplicas: 0
    maxReplicas: 3
    replicas: 0
    policy:
      http: {targetRPSPerReplica: 10}
)"));
  s->traffic.pending = 2;
  auto before = sched.clock().current_time;
  caf::anon_send(scaler, activate_atom::value);
  consume_messages();
  // No time passed and the first tick is still due: the activation evaluated.
  CAF_CHECK(sched.clock().current_time == before);
  CAF_CHECK(sched.clock().has_pending_timeout());
  CAF_CHECK_EQUAL(state().activations, 1u);
  CAF_CHECK_EQUAL(state().evaluations, 1u);
  CAF_CHECK_EQUAL(shown(), (lines{"scale_out pending_requests 0->1 (1) 20s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 1u);
  auto& out = s->records[0];
  CAF_CHECK_EQUAL(out.observed, 2);
  CAF_CHECK_EQUAL(out.reason, "2 requests held by the proxy at zero replicas: activation");
  CAF_CHECK_EQUAL(s->status.desired, 1);
}

CAF_TEST(queued jobs above target propose the engine replicas held by hysteresis) {
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
  next_tick();
  next_tick();
  // 12 over 2 replicas: 6 each, 120 % of 5 — ceil(2 × 1.2) = 3, beyond the
  // tolerance, but not yet 20 s above 80 %.
  CAF_CHECK_EQUAL(s->counted, (lines{"kind=batch", "kind=batch"}));
  CAF_CHECK_EQUAL(shown(), (lines{"hysteresis queue_jobs 2->2 (3) 20s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 1u);
  CAF_CHECK_EQUAL(s->records[0].observed, 12);
  CAF_CHECK_EQUAL(s->records[0].target, 5);
  CAF_CHECK_EQUAL(s->records[0].reason, "queue_jobs above 80% of target for less than 20s");
  CAF_CHECK_EQUAL(s->status.desired, 2);
}

CAF_TEST(queued jobs scale out and a missing queue sample blocks the scale in) {
  auto spec = spec_with(R"(    minReplicas: 1
    maxReplicas: 10
    replicas: 2
    policy:
      cooldownSeconds: 0
      http: {targetRPSPerReplica: 10, windowSeconds: 1}
      queue:
        jobs: {label: kind=batch, targetPerReplica: 5}
)");
  spec.scaling.policy.http->window_seconds = 0;
  start(spec);
  enroll(sys, names::jobs, jobs);
  s->queued = 12;
  s->requests = 50;
  // The first evaluation has no rate (it may scale out on the queue, never
  // in): ceil(2 × 12 / 2 / 5) = 3.
  next_tick();
  CAF_CHECK_EQUAL(shown(), (lines{"scale_out queue_jobs 2->3 (3) 0s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 1u);
  CAF_CHECK_EQUAL(s->records[0].observed, 12);
  CAF_CHECK_EQUAL(s->records[0].target, 5);
  CAF_CHECK_EQUAL(s->records[0].reason, "queue_jobs 12 is 120% of target per replica 5 over 2 "
                                        "replicas");
  CAF_CHECK_EQUAL(s->status.desired, 3);
  // No job controller any more: no queue sample. The counter stays: 0 rps
  // wants minReplicas, but a scale-in waits for every metric.
  withdraw(sys, names::jobs);
  next_tick();
  next_tick();
  CAF_CHECK_EQUAL(s->counted, (lines{"kind=batch"}));
  CAF_CHECK_EQUAL(shown(),
                  (lines{"scale_out queue_jobs 2->3 (3) 0s", "missing_samples rps 3->3 (0) 0s"}));
  CAF_REQUIRE_EQUAL(s->records.size(), 2u);
  CAF_CHECK_EQUAL(s->records[1].reason,
                  "no sample of queue_jobs: a scale-in waits for every metric");
  CAF_CHECK_EQUAL(s->status.desired, 3);
  CAF_CHECK_EQUAL(state().evaluations, 3u);
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
  caf::anon_send(scaler, activate_atom::value);
  consume_messages();
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
  caf::anon_send(scaler, activate_atom::value);
  consume_messages();
  CAF_CHECK_EQUAL(shown(), (lines{"scale_out pending_requests 0->1 (1) 20s"}));
  CAF_CHECK_EQUAL(state().evaluations, 1u);
}

CAF_TEST_FIXTURE_SCOPE_END()
