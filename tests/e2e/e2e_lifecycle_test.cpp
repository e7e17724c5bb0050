#define CAF_SUITE e2e_lifecycle

#include "support/dsl.hpp"

#include "support/e2e.hpp"

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <signal.h>

using namespace troupe::e2e;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()

namespace {

const environment fault_injection{{"TROUPE_DEBUG__FAULT_INJECTION", "true"}};

/// Starts a daemon with extra environment variables.
daemon_options with_env(environment env) {
  daemon_options opts;
  opts.env = std::move(env);
  return opts;
}

/// Starts a daemon on an existing data directory.
daemon_options on_data_dir(const std::string& path) {
  daemon_options opts;
  opts.data_dir = path;
  return opts;
}

/// An SSE stream from the first stored event on, so nothing published after
/// the daemon started can slip past it.
sse_stream replay_all(uint16_t port) {
  return open_sse(port, "/events", {{"Last-Event-ID", "0"}});
}

/// Skips events until an `actor.restarted` for `actor` arrives.
std::optional<sse_event> next_restart_of(sse_stream& stream, const std::string& actor,
                                         duration timeout = 20s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<duration>(deadline - std::chrono::steady_clock::now());
    auto ev = stream.next_of_type("actor.restarted", std::max(left, 0ms));
    if (!ev || json_field(ev->json(), "/data/actor") == actor)
      return ev;
  }
}

/// Checks the framing of an event: `id:` is the seq, `data:` repeats the type.
void check_event_framing(const sse_event& ev) {
  auto data = ev.json();
  CAF_CHECK(data.is_object());
  CAF_CHECK_EQUAL(json_field(data, "/type"), ev.type);
  CAF_CHECK_EQUAL(json_field(data, "/seq"), ev.id);
}

} // namespace

CAF_TEST(a TERM signal announces shutting down on SSE and exits 0) {
  e2e::daemon node;
  auto replay = replay_all(node.port());
  CAF_REQUIRE_EQUAL(replay.status(), 200);
  CAF_CHECK(contains(replay.header("Content-Type").value_or(""), "text/event-stream"));
  CAF_CHECK_EQUAL(replay.header("X-Accel-Buffering").value_or("<none>"), "no");
  CAF_CHECK(replay.chunked());
  auto started = replay.next_of_type("node.started", 10s);
  CAF_REQUIRE(started.has_value());
  check_event_framing(*started);
  // A stream without Last-Event-ID only sees what happens from now on.
  auto live = open_sse(node.port(), "/events");
  CAF_REQUIRE_EQUAL(live.status(), 200);
  node.terminate();
  auto stopping = replay.next_of_type("node.shutting_down", 20s);
  CAF_REQUIRE(stopping.has_value());
  check_event_framing(*stopping);
  auto first_live = live.next(20s);
  CAF_REQUIRE(first_live.has_value());
  CAF_CHECK_EQUAL(first_live->type, "node.shutting_down");
  // Then both streams end, rather than hang or reset.
  for (auto* stream : {&replay, &live}) {
    while (stream->next(20s)) {
      // drain whatever follows the announcement
    }
    CAF_CHECK(stream->ended());
    CAF_CHECK_EQUAL(stream->error(), "");
  }
  auto status = node.wait_exit(20s);
  CAF_REQUIRE(status.has_value());
  CAF_CHECK_EQUAL(status->to_string(), "exit code 0");
}

CAF_TEST(a crashed store is restarted and announced) {
  e2e::daemon node{with_env(fault_injection)};
  auto events = replay_all(node.port());
  CAF_REQUIRE_EQUAL(events.status(), 200);
  CAF_REQUIRE(events.next_of_type("node.started", 10s).has_value());
  auto crash = request(node.port(), "POST", "/debug/crash/store");
  CAF_CHECK_EQUAL(crash.status, 202);
  auto restarted = next_restart_of(events, "store");
  CAF_REQUIRE(restarted.has_value());
  check_event_framing(*restarted);
  auto data = restarted->json()["data"];
  CAF_CHECK(data["restarts"].is_number_integer() && data["restarts"].get<int64_t>() >= 1);
  CAF_CHECK(data.contains("reason"));
  auto line =
      node.wait_for_line(std::regex{"restart.*store|store.*restart", std::regex::icase}, 10s);
  CAF_CHECK(line.has_value());
  CAF_CHECK_EQUAL(get(node.port(), "/healthz").status, 200);
  auto ready = get(node.port(), "/readyz");
  CAF_CHECK_EQUAL(ready.status, 200);
  CAF_CHECK_EQUAL(json_field(ready, "/status"), "ready");
  // The stored history has it too.
  auto stored = get(node.port(), "/events").json();
  CAF_CHECK_EQUAL(events_of_type(stored, "actor.restarted").size(), 1u);
}

CAF_TEST(a crashed event bus is restarted and new streams see it) {
  e2e::daemon node{with_env(fault_injection)};
  auto crash = request(node.port(), "POST", "/debug/crash/event_bus");
  CAF_CHECK_EQUAL(crash.status, 202);
  // "restarted", not "restarting": the new bus must be up before we subscribe.
  auto line = node.wait_for_line(
      std::regex{"event_bus.*restarted|restarted.*event_bus", std::regex::icase}, 20s);
  CAF_REQUIRE(line.has_value());
  // Replay covers the event whether it was published before or after this
  // stream subscribed.
  auto events = replay_all(node.port());
  CAF_REQUIRE_EQUAL(events.status(), 200);
  auto restarted = next_restart_of(events, "event_bus");
  CAF_REQUIRE(restarted.has_value());
  check_event_framing(*restarted);
  CAF_CHECK_EQUAL(get(node.port(), "/healthz").status, 200);
  CAF_CHECK_EQUAL(get(node.port(), "/readyz").status, 200);
}

CAF_TEST(a stream open across an event bus crash is not left hanging) {
  e2e::daemon node{with_env(fault_injection)};
  auto events = replay_all(node.port());
  CAF_REQUIRE_EQUAL(events.status(), 200);
  CAF_REQUIRE(events.next_of_type("node.started", 10s).has_value());
  CAF_CHECK_EQUAL(request(node.port(), "POST", "/debug/crash/event_bus").status, 202);
  // Either the stream carries on and shows the restart, or it ends so that
  // the client reconnects with Last-Event-ID; silence is the failure.
  auto restarted = next_restart_of(events, "event_bus", 10s);
  CAF_CHECK(restarted.has_value() || events.ended());
  if (!restarted && !events.ended())
    CAF_MESSAGE("the stream stayed open but silent for 10 s after the crash");
}

CAF_TEST(the crash route does not exist without fault injection) {
  e2e::daemon node;
  auto crash = request(node.port(), "POST", "/debug/crash/store");
  CAF_CHECK_EQUAL(crash.status, 404);
  CAF_CHECK_EQUAL(json_field(crash, "/error/code"), "not_found");
  CAF_CHECK(node.running());
}

CAF_TEST(exceeding the restart intensity stops the node with an error) {
  auto env = fault_injection;
  env.emplace_back("TROUPE_SUPERVISOR__MAX_RESTARTS", "1");
  e2e::daemon node{with_env(env)};
  auto events = replay_all(node.port());
  CAF_REQUIRE_EQUAL(events.status(), 200);
  CAF_CHECK_EQUAL(request(node.port(), "POST", "/debug/crash/store").status, 202);
  // Crash the restarted store, not the dying one.
  CAF_REQUIRE(next_restart_of(events, "store").has_value());
  auto second = request(node.port(), "POST", "/debug/crash/store");
  // The node may go down before it answers.
  CAF_CHECK(second.status == 202 || second.status == 0);
  auto status = node.wait_exit(20s);
  CAF_REQUIRE(status.has_value());
  CAF_CHECK(status->exited_nonzero());
  CAF_CHECK_NOT_EQUAL(status->to_string(), "exit code 0");
  auto line = node.wait_for_line(std::regex{"restart intensity"}, 5s);
  CAF_CHECK(line.has_value());
  if (!line)
    CAF_MESSAGE("output:\n" << node.output_text());
}

CAF_TEST(events committed before kill - 9 survive a restart) {
  scratch_dir data{"troupe-e2e-data"};
  std::string first_seq;
  {
    e2e::daemon first{on_data_dir(data.path())};
    // Seen on the stream means committed: the store writes before announcing.
    auto started = wait_for_event(first.port(), "node.started");
    CAF_REQUIRE(started.has_value());
    first_seq = started->id;
    first.kill9();
    auto status = first.wait_exit(20s);
    CAF_REQUIRE(status.has_value());
    CAF_CHECK(status->signaled && status->value == SIGKILL);
  }
  e2e::daemon second{on_data_dir(data.path())};
  auto events = replay_all(second.port());
  CAF_REQUIRE_EQUAL(events.status(), 200);
  auto earlier = events.next_of_type("node.started", 10s);
  CAF_REQUIRE(earlier.has_value());
  CAF_CHECK_EQUAL(earlier->id, first_seq);
  CAF_REQUIRE(events.next_of_type("node.started", 20s).has_value());
  auto stored = get(second.port(), "/events").json();
  auto started = events_of_type(stored, "node.started");
  CAF_REQUIRE_GREATER_OR_EQUAL(started.size(), 2u);
  CAF_CHECK_EQUAL(json_field(started.front(), "/seq"), first_seq);
  for (size_t i = 1; i < started.size(); ++i)
    CAF_CHECK_LESS(started[i - 1].value("seq", int64_t{0}), started[i].value("seq", int64_t{0}));
}

namespace {

/// A directory for config files and a data dir that must never appear.
struct config_fixture {
  scratch_dir scratch{"troupe-e2e-config"};
  std::string data_dir = scratch.path() + "/data";

  std::vector<std::string> serve(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"serve",  "--listen",     "127.0.0.1:0", "--data-dir",
                                  data_dir, "--log-format", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  /// Exit code 2, the message on stderr, no listener, no data dir.
  void check_rejected(const run_result& res, const std::string& message) {
    CAF_CHECK_EQUAL(startup_refusal_problem(res, message, data_dir), "");
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(config_errors, config_fixture)

CAF_TEST(a malformed listen address is a config error) {
  auto res =
      run_troupe({"serve", "--listen", "nonsense", "--data-dir", data_dir, "--log-format", "json"});
  check_rejected(res, "config error: listen: ");
}

CAF_TEST(zero job concurrency is a config error) {
  auto res = run_troupe(serve(), {{"TROUPE_JOBS__CONCURRENCY", "0"}});
  check_rejected(res, "config error: jobs.concurrency: must be >= 1, got 0");
}

CAF_TEST(an unknown key in the config file is a config error) {
  auto path = scratch.path() + "/troupe.yaml";
  std::ofstream{path} << "bogus: 1\n";
  auto res = run_troupe(serve({"--config", path}));
  check_rejected(res, "config error: bogus: unknown key");
}

CAF_TEST(a non - numeric io_threads is a config error) {
  auto res = run_troupe(serve(), {{"TROUPE_HTTP__IO_THREADS", "abc"}});
  check_rejected(res, "config error: http.io_threads: ");
}

CAF_TEST_FIXTURE_SCOPE_END()
