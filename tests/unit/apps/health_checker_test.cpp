#define CAF_SUITE health_checker
#include "support/dsl.hpp"

#include <deque>
#include <mutex>

#include "actors/apps/health_checker.hpp"

using namespace troupe;
using namespace troupe::apps;
using namespace std::chrono_literals;

namespace {

/// Records probes; the test answers them (no I/O, no real time).
struct fake_prober : prober {
  struct call {
    probe_request req;
    std::function<void(probe_outcome)> done;
  };
  std::deque<call> calls;

  void probe(probe_request req, std::function<void(probe_outcome)> done) override {
    calls.push_back({std::move(req), std::move(done)});
  }

  /// Answers the oldest open probe.
  void answer(probe_verdict v, std::string error = {}) {
    CAF_REQUIRE(!calls.empty());
    auto c = std::move(calls.front());
    calls.pop_front();
    c.done({v, std::move(error)});
  }
};

/// Collects the transitions a checker reports.
struct owner_state {
  static inline const char* name = "owner";
  std::vector<health_transition> seen;
};

health_owner_actor::behavior_type owner(health_owner_actor::stateful_pointer<owner_state> self) {
  return {[self](health_transition& t) { self->state.seen.push_back(std::move(t)); }};
}

probe_spec spec(uint32_t failures = 3, uint32_t successes = 1) {
  probe_spec s;
  s.kind = probe_kind::http;
  s.path = "/healthz";
  s.port = 8080;
  s.initial_delay = 10s;
  s.interval = 5s;
  s.timeout = 2s;
  s.failure_threshold = failures;
  s.success_threshold = successes;
  return s;
}

struct fixture : test::deterministic_fixture {
  std::shared_ptr<fake_prober> probes = std::make_shared<fake_prober>();
  health_owner_actor own = sys.spawn(owner);
  health_checker_actor checker;

  ~fixture() override {
    caf::anon_send_exit(checker, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(own, caf::exit_reason::user_shutdown);
    run();
  }

  void start(probe_spec s, probe_role role = probe_role::readiness,
             std::chrono::milliseconds startup = 0ms) {
    health_checker_config cfg;
    cfg.instance = "web-1";
    cfg.role = role;
    cfg.request.spec = s;
    cfg.startup_interval = startup;
    checker = sys.spawn(health_checker, cfg, own, std::static_pointer_cast<prober>(probes));
    consume_messages();
  }

  std::vector<health_transition>& seen() {
    return deref<health_owner_actor::stateful_base<owner_state>>(own).state.seen;
  }

  health_checker_state& state() {
    return deref<health_checker_actor::stateful_base<health_checker_state>>(checker).state;
  }

  /// Lets the next probe come due and answers it.
  void probe_once(probe_verdict v, std::string error = {}) {
    advance_time(5s);
    consume_messages();
    probes->answer(v, std::move(error));
    consume_messages();
  }
};

} // namespace

CAF_TEST(tracker counts consecutive results against the thresholds) {
  health_tracker t(3, 2);
  using v = probe_verdict;
  CAF_CHECK(t.status() == health_status::unknown);
  CAF_CHECK(!t.record(v::healthy, 1, ""));
  CAF_CHECK(t.record(v::healthy, 2, "") == health_status::healthy);
  CAF_CHECK(!t.record(v::unhealthy, 3, "HTTP 503"));
  CAF_CHECK(!t.record(v::unhealthy, 4, "HTTP 503"));
  CAF_CHECK_EQUAL(t.consecutive_failures(), 2u);
  // A success in between starts the failure count again.
  CAF_CHECK(!t.record(v::healthy, 5, ""));
  CAF_CHECK_EQUAL(t.consecutive_failures(), 0u);
  CAF_CHECK(!t.record(v::unhealthy, 6, "timeout after 2s"));
  CAF_CHECK(!t.record(v::unhealthy, 7, "timeout after 2s"));
  CAF_CHECK(t.record(v::unhealthy, 8, "connection refused") == health_status::unhealthy);
  CAF_CHECK_EQUAL(t.last_error(), "connection refused");
  CAF_CHECK_EQUAL(t.last_check_ns(), 8);
  // Skipped probes count neither way and are not a check.
  CAF_CHECK(!t.record(v::skipped, 9, "prober overloaded"));
  CAF_CHECK_EQUAL(t.consecutive_failures(), 3u);
  CAF_CHECK_EQUAL(t.last_check_ns(), 8);
  CAF_CHECK(!t.record(v::healthy, 10, ""));
  CAF_CHECK(t.record(v::healthy, 11, "") == health_status::healthy);
  // The reason of the last failure stays visible after recovery.
  CAF_CHECK_EQUAL(t.last_error(), "connection refused");
}

CAF_TEST(a liveness probe fails from unknown without ever being healthy) {
  health_tracker t(2, 1);
  CAF_CHECK(!t.record(probe_verdict::unhealthy, 1, "x"));
  CAF_CHECK(t.record(probe_verdict::unhealthy, 2, "x") == health_status::unhealthy);
  CAF_CHECK_EQUAL(std::string{transition_event(probe_role::liveness, health_status::unhealthy)},
                  "live_failed");
  CAF_CHECK_EQUAL(std::string{transition_event(probe_role::readiness, health_status::unhealthy)},
                  "unready");
  CAF_CHECK_EQUAL(std::string{transition_event(probe_role::readiness, health_status::healthy)},
                  "ready");
}

CAF_TEST(probe specs are validated with the field named) {
  auto s = spec();
  CAF_CHECK_EQUAL(validate(s), "");
  s.failure_threshold = 0;
  CAF_CHECK_EQUAL(validate(s), "failureThreshold: must be >= 1");
  s = spec();
  s.path = "/x HTTP/1.1\r\nHost: evil";
  CAF_CHECK_EQUAL(validate(s), "path: must not contain whitespace");
  s = spec();
  s.interval = 0s;
  CAF_CHECK_EQUAL(validate(s), "intervalSeconds: must be > 0");
  s = spec();
  s.kind = probe_kind::exec;
  CAF_CHECK_EQUAL(validate(s), "command: must not be empty");
}

CAF_TEST_FIXTURE_SCOPE(health_checker_tests, fixture)

CAF_TEST(the first probe waits for the initial delay) {
  start(spec());
  advance_time(9s);
  consume_messages();
  CAF_CHECK(probes->calls.empty());
  advance_time(1s);
  consume_messages();
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  CAF_CHECK_EQUAL(probes->calls.front().req.spec.path, "/healthz");
}

CAF_TEST(ready after success_threshold successes and unready after failure_threshold failures) {
  start(spec(2, 2));
  advance_time(10s);
  consume_messages();
  probes->answer(probe_verdict::healthy);
  consume_messages();
  CAF_CHECK(seen().empty());
  probe_once(probe_verdict::healthy);
  CAF_REQUIRE_EQUAL(seen().size(), 1u);
  CAF_CHECK_EQUAL(seen()[0].event, "ready");
  CAF_CHECK_EQUAL(seen()[0].report.status, "healthy");
  CAF_CHECK_EQUAL(seen()[0].report.instance, "web-1");
  CAF_CHECK_EQUAL(seen()[0].report.probe, "readiness");
  probe_once(probe_verdict::unhealthy, "HTTP 503");
  CAF_CHECK_EQUAL(seen().size(), 1u);
  probe_once(probe_verdict::unhealthy, "HTTP 503");
  CAF_REQUIRE_EQUAL(seen().size(), 2u);
  CAF_CHECK_EQUAL(seen()[1].event, "unready");
  CAF_CHECK_EQUAL(seen()[1].report.last_error, "HTTP 503");
  CAF_CHECK_EQUAL(seen()[1].report.consecutive_failures, 2u);
  // Still failing: no repeated transition.
  probe_once(probe_verdict::unhealthy, "HTTP 503");
  CAF_CHECK_EQUAL(seen().size(), 2u);
}

CAF_TEST(liveness failures are reported as live_failed) {
  start(spec(1, 1), probe_role::liveness);
  advance_time(10s);
  consume_messages();
  probes->answer(probe_verdict::unhealthy, "connection refused");
  consume_messages();
  CAF_REQUIRE_EQUAL(seen().size(), 1u);
  CAF_CHECK_EQUAL(seen()[0].event, "live_failed");
  CAF_CHECK_EQUAL(seen()[0].report.probe, "liveness");
}

CAF_TEST(probes start every interval and never overlap) {
  start(spec());
  advance_time(10s);
  consume_messages();
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  // The probe hangs past its interval: the next one waits for it.
  advance_time(5s);
  consume_messages();
  CAF_CHECK_EQUAL(probes->calls.size(), 1u);
  CAF_CHECK(state().due);
  probes->answer(probe_verdict::unhealthy, "timeout after 2s");
  consume_messages();
  // The overdue probe starts as soon as the previous one answered.
  CAF_CHECK_EQUAL(probes->calls.size(), 1u);
  CAF_CHECK_EQUAL(state().seq, 2u);
  probes->answer(probe_verdict::healthy);
  consume_messages();
  // And the one after it comes an interval after its start.
  advance_time(4s);
  consume_messages();
  CAF_CHECK(probes->calls.empty());
  advance_time(1s);
  consume_messages();
  CAF_CHECK_EQUAL(probes->calls.size(), 1u);
}

CAF_TEST(a stale result is ignored) {
  start(spec(1, 1));
  advance_time(10s);
  consume_messages();
  caf::anon_send(checker, probe_result{99, false, false, "late"});
  consume_messages();
  CAF_CHECK(seen().empty());
  CAF_CHECK(state().in_flight);
}

CAF_TEST(skipped probes change nothing) {
  start(spec(1, 1));
  advance_time(10s);
  consume_messages();
  probes->answer(probe_verdict::skipped, "prober overloaded: 4096 probes waiting");
  consume_messages();
  CAF_CHECK(seen().empty());
  CAF_CHECK_EQUAL(state().report().last_check_ns, 0);
}

CAF_TEST(status answers with status failures last check and last error) {
  start(spec(3, 1));
  advance_time(10s);
  consume_messages();
  probes->answer(probe_verdict::unhealthy, "HTTP 500");
  consume_messages();
  auto got = request<health_report>(checker, get_atom::value);
  CAF_CHECK_EQUAL(got.status, "unknown");
  CAF_CHECK_EQUAL(got.consecutive_failures, 1u);
  CAF_CHECK_EQUAL(got.last_error, "HTTP 500");
  CAF_CHECK_NOT_EQUAL(got.last_check_ns, 0);
}

CAF_TEST(an invalid spec stops the checker with the field named) {
  auto s = spec();
  s.port = 0;
  health_checker_config cfg;
  cfg.instance = "web-1";
  cfg.request.spec = s;
  checker = sys.spawn(health_checker, cfg, own, std::static_pointer_cast<prober>(probes));
  self->monitor(checker);
  consume_messages();
  std::string reason = "no down message";
  self->receive([&](caf::down_msg& d) { reason = sys.render(d.reason); },
                caf::after(std::chrono::seconds(0)) >> [] {});
  CAF_CHECK(reason.find("port: must be between 1 and 65535") != std::string::npos);
  CAF_CHECK(probes->calls.empty());
}

CAF_TEST(start - up probing runs at its own interval until the first healthy result) {
  auto s = spec();
  s.initial_delay = 1s;
  start(s, probe_role::readiness, 100ms);
  advance_time(1s);
  consume_messages();
  // Probe 1 after the initial delay; refused (the process is not listening yet).
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  probes->answer(probe_verdict::unhealthy, "connection refused");
  consume_messages();
  // The next ones come 5, 10, 20, 40, 80, then every 100 ms (not after the
  // 5 s interval).
  for (auto gap : {5ms, 10ms, 20ms, 40ms, 80ms, 100ms, 100ms}) {
    advance_time(gap - 1ms);
    consume_messages();
    CAF_CHECK_EQUAL(probes->calls.size(), 0u);
    advance_time(1ms);
    consume_messages();
    CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
    probes->answer(probe_verdict::unhealthy, "connection refused");
    consume_messages();
  }
  advance_time(100ms);
  consume_messages();
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  probes->answer(probe_verdict::healthy);
  consume_messages();
  // Unready after failureThreshold refusals, ready now.
  CAF_REQUIRE_EQUAL(seen().size(), 2u);
  CAF_CHECK_EQUAL(seen().front().event, "unready");
  CAF_CHECK_EQUAL(seen().back().event, "ready");
  // Healthy once: back to the interval (the 100 ms tick already set fires
  // once more, then every 5 s).
  advance_time(100ms);
  consume_messages();
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  probes->answer(probe_verdict::healthy);
  consume_messages();
  advance_time(4900ms);
  consume_messages();
  CAF_CHECK_EQUAL(probes->calls.size(), 0u);
  advance_time(100ms);
  consume_messages();
  CAF_CHECK_EQUAL(probes->calls.size(), 1u);
}

CAF_TEST(an ejection by the proxy probes at once and keeps the schedule) {
  start(spec());
  advance_time(10s);
  consume_messages();
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  probes->answer(probe_verdict::healthy);
  consume_messages();
  // Connect failures at the proxy: one probe now, not on the next tick.
  anon_send(checker, ejected_atom::value);
  consume_messages();
  CAF_REQUIRE_EQUAL(probes->calls.size(), 1u);
  probes->answer(probe_verdict::unhealthy, "connection refused");
  consume_messages();
  CAF_CHECK_EQUAL(state().tracker->consecutive_failures(), 1u);
  // The schedule is the one it had: the next probe 5 s after the first.
  advance_time(5s);
  consume_messages();
  CAF_CHECK_EQUAL(probes->calls.size(), 1u);
  probes->answer(probe_verdict::unhealthy, "connection refused");
  consume_messages();
  CAF_CHECK_EQUAL(state().tracker->consecutive_failures(), 2u);
}

CAF_TEST_FIXTURE_SCOPE_END()
