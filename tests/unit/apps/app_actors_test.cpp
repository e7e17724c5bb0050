#define CAF_SUITE app_actors
#include "support/dsl.hpp"

#include <csignal>
#include <map>

#include "actors/apps/app.hpp"
#include "actors/apps/instance.hpp"
#include "actors/core/names.hpp"
#include "actors/core/store.hpp"
#include "persistence/apps.hpp"
#include "persistence/lmdb_env.hpp"
#include "support/temp_dir.hpp"

// The app and instance actors on the deterministic coordinator: stand-in
// instances drive the app's reconcile; a scripted launcher and a recorded
// signal function drive the real instance actor's restarts and drains.

using namespace troupe;
using namespace std::chrono_literals;

namespace {

const char* spec_json = R"({"apiVersion":"v1","kind":"App","metadata":{"name":"web"},
  "spec":{"type":"http","command":["/bin/true"],"ports":[{"containerPort":8080}],
  "scaling":{"minReplicas":1,"maxReplicas":5,"replicas":2},
  "termination":{"drainSeconds":5,"gracePeriodSeconds":3}}})";

/// What the stand-in instances were told.
struct stand_in_log {
  std::vector<std::string> spawned;
  std::vector<std::string> drained;
};

struct stand_in_state {
  static inline const char* name = "stand_in";
};

/// An instance that only records drains and leaves when drained.
instance_actor::behavior_type stand_in(instance_actor::stateful_pointer<stand_in_state> self,
                                       std::shared_ptr<stand_in_log> log, app_actor app,
                                       std::string id) {
  return {
      [](process::output&) {},
      [](exited_atom, int32_t, int32_t) {},
      [self, log, app, id](drain_atom) {
        log->drained.push_back(id);
        self->send(app, instance_change{id, "stopped", false});
        self->quit();
      },
      [](kill_atom, uint64_t) {},
      [](restart_atom, uint64_t) {},
      [](deferred_atom, uint64_t) {},
      [](tick_atom) {},
      [](health_transition&) {},
      [id](get_atom) {
        instance_status s;
        s.id = id;
        return s;
      },
      [](sample_atom) {},
      [](ejected_atom) {},
      [id](usage_atom) {
        instance_usage u;
        u.id = id;
        return u;
      },
      [self](shutdown_atom) {
        self->quit();
        return ok_atom::value;
      },
  };
}

/// What a stand-in proxy was told and answers.
struct traffic_log {
  std::vector<app_endpoints> told;
  uint32_t in_flight = 0;
  int asked = 0;
};

struct fake_traffic_state {
  static inline const char* name = "fake_traffic";
};

traffic_actor::behavior_type fake_traffic(traffic_actor::stateful_pointer<fake_traffic_state>,
                                          std::shared_ptr<traffic_log> log) {
  return {
      [log](app_endpoints& x) { log->told.push_back(std::move(x)); },
      [log](in_flight_atom, const std::string&, const std::string&) {
        ++log->asked;
        return log->in_flight;
      },
      [](get_atom, const std::string& app) {
        app_traffic t;
        t.app = app;
        return t;
      },
      [](ejected_atom, const std::string&, const std::string&) {},
      [](activate_atom, const std::string&) {},
      [](tick_atom) {},
      [](status_atom) { return component_status{}; },
  };
}

/// The instance ids of an endpoints message, with their ports.
std::map<std::string, uint16_t> ready_of(const app_endpoints& x) {
  std::map<std::string, uint16_t> out;
  for (auto& e : x.ready)
    out[e.instance] = e.port;
  return out;
}

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);
  std::shared_ptr<stand_in_log> log = std::make_shared<stand_in_log>();
  std::shared_ptr<apps_env> ctx = std::make_shared<apps_env>();
  /// Launches the instance actor asked for, and signals it sent.
  std::vector<instance_launch> launches;
  std::vector<std::function<void(instance_launched)>> pending;
  std::vector<std::pair<pid_t, int>> signals;

  fixture() {
    enroll(sys, names::store, st);
    ctx->env = env;
    ctx->node_name = "n1";
    ctx->ports = std::make_shared<shared_ports>(
        port_allocator{port_range{21000, 21099}, [](uint16_t) { return true; }});
    ctx->events = false;
    ctx->recover_orphans = false;
    // No periodic CPU/RSS sampling: run() would follow its timer forever.
    ctx->cfg.sample_interval = std::chrono::milliseconds(0);
    ctx->launcher = [this](instance_launch req, std::function<void(instance_launched)> done) {
      launches.push_back(std::move(req));
      pending.push_back(std::move(done));
    };
    ctx->signal = [this](pid_t pid, int sig) {
      signals.emplace_back(pid, sig);
      return true;
    };
    run();
  }

  ~fixture() override {
    withdraw(sys, names::store);
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    run();
  }

  void use_stand_ins() {
    ctx->spawn_instance = [log = log](caf::actor_system& sys, const app_actor& app,
                                      const app_target&, const std::string& id) {
      log->spawned.push_back(id);
      return sys.spawn(stand_in, log, app, id);
    };
  }

  /// Real instance actors, recorded as they are spawned.
  std::vector<instance_actor> real;
  void use_real_instances() {
    ctx->spawn_instance = [this](caf::actor_system& sys, const app_actor& app, const app_target& t,
                                 const std::string& id) {
      auto hdl = sys.spawn(instance, std::shared_ptr<const apps_env>{ctx}, app, t, id);
      real.push_back(hdl);
      return hdl;
    };
  }
  instance_actor last_instance() { return real.back(); }

  app_target target(uint32_t revision, int32_t replicas, bool up = true) {
    return app_target{"web", revision, spec_json, up, replicas, "test"};
  }

  /// Ends launch number `i` with the process `pid`.
  void launched(size_t i, pid_t pid) {
    instance_launched r;
    r.pid = pid;
    pending.at(i)(std::move(r));
    run();
  }

  persistence::instance_record stored(const std::string& id) {
    auto xs = persistence::list_instances(*env, "web");
    for (auto& x : xs)
      if (x.id == id)
        return x;
    CAF_FAIL("no record of " << id);
    return {};
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(app_actor_tests, fixture)

CAF_TEST(an app that is up starts its replicas and drains the excess on scale in) {
  use_stand_ins();
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 3));
  run();
  CAF_REQUIRE_EQUAL(log->spawned.size(), 3u);
  for (auto& id : log->spawned)
    anon_send(a, instance_change{id, "running", true});
  run();
  anon_send(a, target(1, 1));
  run();
  CAF_CHECK_EQUAL(log->drained.size(), 2u);
  CAF_CHECK_EQUAL(log->spawned.size(), 3u);
  anon_send_exit(a, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(a new revision replaces one instance at a time never below desired ready) {
  use_stand_ins();
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 2));
  run();
  auto old = log->spawned;
  CAF_REQUIRE_EQUAL(old.size(), 2u);
  for (auto& id : old)
    anon_send(a, instance_change{id, "running", true});
  anon_send(a, target(2, 2));
  run();
  // The surge: one new instance, nothing drained while it is not ready.
  CAF_REQUIRE_EQUAL(log->spawned.size(), 3u);
  CAF_CHECK(log->drained.empty());
  anon_send(a, instance_change{log->spawned[2], "running", true});
  run();
  CAF_CHECK_EQUAL(log->drained.size(), 1u);
  // The old one left: the next surge follows.
  CAF_REQUIRE_EQUAL(log->spawned.size(), 4u);
  anon_send(a, instance_change{log->spawned[3], "running", true});
  run();
  CAF_CHECK_EQUAL(log->drained.size(), 2u);
  CAF_CHECK(std::is_permutation(log->drained.begin(), log->drained.end(), old.begin()));
  CAF_CHECK_EQUAL(log->spawned.size(), 4u);
  anon_send_exit(a, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(an app that goes down drains every instance) {
  use_stand_ins();
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 2));
  run();
  anon_send(a, target(1, 2, false));
  run();
  CAF_CHECK_EQUAL(log->drained.size(), 2u);
  anon_send_exit(a, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(a crashed instance restarts after a backoff that grows) {
  use_real_instances();
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 1));
  run();
  CAF_REQUIRE_EQUAL(launches.size(), 1u);
  // A fresh actor kills what a predecessor of its id may have left.
  CAF_CHECK(!launches[0].reap_instance.empty());
  auto env_has = [&](const std::string& prefix) {
    for (auto& kv : launches[0].opts.env)
      if (kv.rfind(prefix, 0) == 0)
        return true;
    return false;
  };
  CAF_CHECK(env_has("TROUPE_INSTANCE=web-"));
  CAF_CHECK(env_has("PORT=21000"));
  launched(0, 4242);
  auto id = persistence::list_instances(*env, "web").at(0).id;
  CAF_CHECK_EQUAL(stored(id).state, "running");
  CAF_CHECK_EQUAL(stored(id).pgid, 4242);
  // The process is killed by a signal: backoff 1 s, then a new launch.
  for (int round = 0; round < 2; ++round) {
    // exited arrives from the process io thread in production.
    auto hdl = last_instance();
    anon_send(hdl, exited_atom::value, int32_t{-1}, int32_t{SIGKILL});
    // Messages only: run() would also fire the backoff timer.
    consume_messages();
    CAF_CHECK_EQUAL(stored(id).state, "backoff");
    CAF_CHECK_EQUAL(stored(id).restarts, static_cast<uint32_t>(round + 1));
    CAF_CHECK_EQUAL(launches.size(), static_cast<size_t>(round + 1));
    // The delay doubles: 1 s, then 2 s.
    advance_time(std::chrono::milliseconds(1000 * (1 << round) - 1));
    consume_messages();
    CAF_CHECK_EQUAL(launches.size(), static_cast<size_t>(round + 1));
    advance_time(1ms);
    run();
    CAF_REQUIRE_EQUAL(launches.size(), static_cast<size_t>(round + 2));
    CAF_CHECK(launches.back().reap_instance.empty());
    launched(launches.size() - 1, 5000 + round);
  }
  anon_send_exit(a, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(a drain stops the process with SIGTERM then SIGKILL after the grace) {
  use_real_instances();
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 1));
  run();
  launched(0, 4242);
  auto id = persistence::list_instances(*env, "web").at(0).id;
  anon_send(a, target(1, 1, false));
  // Messages only: run() would also fire the grace timer.
  consume_messages();
  // No proxy is registered: nothing is in flight, SIGTERM at once.
  CAF_REQUIRE_EQUAL(signals.size(), 1u);
  CAF_CHECK_EQUAL(signals[0].first, 4242);
  CAF_CHECK_EQUAL(signals[0].second, SIGTERM);
  CAF_CHECK_EQUAL(stored(id).state, "stopping");
  advance_time(2999ms);
  consume_messages();
  CAF_CHECK_EQUAL(signals.size(), 1u);
  advance_time(1ms);
  consume_messages();
  CAF_REQUIRE_EQUAL(signals.size(), 2u);
  CAF_CHECK_EQUAL(signals[1].second, SIGKILL);
  anon_send(last_instance(), exited_atom::value, int32_t{-1}, int32_t{SIGKILL});
  run();
  CAF_CHECK_EQUAL(stored(id).state, "stopped");
  // Gone, and no restart was asked for.
  CAF_CHECK_EQUAL(launches.size(), 1u);
  anon_send_exit(a, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(the proxy learns the ready instances that are not leaving) {
  use_stand_ins();
  auto tl = std::make_shared<traffic_log>();
  auto proxy = sys.spawn(fake_traffic, tl);
  enroll(sys, names::traffic, proxy);
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 2));
  run();
  CAF_REQUIRE_EQUAL(log->spawned.size(), 2u);
  auto first = log->spawned[0];
  auto second = log->spawned[1];
  anon_send(a, instance_change{first, "running", true, 21001});
  run();
  CAF_REQUIRE(!tl->told.empty());
  CAF_CHECK_EQUAL(tl->told.back().app, "web");
  CAF_CHECK(!tl->told.back().exposed);
  CAF_CHECK((ready_of(tl->told.back()) == std::map<std::string, uint16_t>{{first, 21001}}));
  anon_send(a, instance_change{second, "running", true, 21002});
  run();
  CAF_CHECK_EQUAL(ready_of(tl->told.back()).size(), 2u);
  // The same state again: nothing new to tell.
  auto told = tl->told.size();
  anon_send(a, instance_change{second, "running", true, 21002});
  run();
  CAF_CHECK_EQUAL(tl->told.size(), told);
  // Scale-in: the leaving instance is out of the ready set.
  anon_send(a, target(1, 1));
  run();
  CAF_REQUIRE_EQUAL(log->drained.size(), 1u);
  auto stays = log->drained[0] == first ? second : first;
  CAF_CHECK((ready_of(tl->told.back()) ==
             std::map<std::string, uint16_t>{{stays, stays == first ? 21001 : 21002}}));
  // Stopped for good: the proxy forgets the app.
  self->request(a, caf::infinite, shutdown_atom::value);
  run();
  CAF_CHECK(tl->told.back().deleted);
  withdraw(sys, names::traffic);
  anon_send_exit(proxy, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(a drain waits until the proxy has no request in flight) {
  use_real_instances();
  auto tl = std::make_shared<traffic_log>();
  tl->in_flight = 2;
  auto proxy = sys.spawn(fake_traffic, tl);
  enroll(sys, names::traffic, proxy);
  auto a = sys.spawn(app, std::shared_ptr<const apps_env>{ctx}, target(1, 1));
  run();
  launched(0, 4343);
  anon_send(a, target(1, 1, false));
  consume_messages();
  CAF_CHECK_EQUAL(tl->asked, 1);
  CAF_CHECK(signals.empty());
  // Asked again every 200 ms while requests are in flight.
  advance_time(200ms);
  consume_messages();
  CAF_CHECK_EQUAL(tl->asked, 2);
  CAF_CHECK(signals.empty());
  tl->in_flight = 0;
  advance_time(200ms);
  consume_messages();
  CAF_REQUIRE_EQUAL(signals.size(), 1u);
  CAF_CHECK_EQUAL(signals[0].second, SIGTERM);
  anon_send(last_instance(), exited_atom::value, int32_t{0}, int32_t{0});
  consume_messages();
  withdraw(sys, names::traffic);
  anon_send_exit(proxy, caf::exit_reason::user_shutdown);
  anon_send_exit(a, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST(restart policies decide on the exit) {
  CAF_CHECK(restarts_after("Always", 0, 0));
  CAF_CHECK(!restarts_after("OnFailure", 0, 0));
  CAF_CHECK(restarts_after("OnFailure", 1, 0));
  CAF_CHECK(restarts_after("OnFailure", -1, SIGKILL));
  CAF_CHECK(!restarts_after("Never", 1, 0));
}

CAF_TEST_FIXTURE_SCOPE_END()
