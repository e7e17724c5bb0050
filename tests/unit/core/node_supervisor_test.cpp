#define CAF_SUITE node_supervisor
#include "support/dsl.hpp"

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/core/node_supervisor.hpp"
#include "actors/core/status.hpp"
#include "actors/core/store.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

caf::behavior idle_child(caf::event_based_actor*) {
  return {[](int) {}};
}

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  supervisor_config cfg;
  node_supervisor_actor sup;
  std::shared_ptr<caf::error> exit_reason = std::make_shared<caf::error>();
  std::shared_ptr<bool> exited = std::make_shared<bool>(false);

  fixture() {
    cfg.max_restarts = 3;
    cfg.restart_window = 60s;
    cfg.backoff_initial = 100ms;
    cfg.backoff_max = 1s;
  }

  ~fixture() override {
    if (sup && !*exited)
      caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
    for (auto name : {"worker", "store", "event_bus"})
      if (auto h = sys.registry().get(caf::atom_from_string(std::string{name})))
        caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    run();
  }

  void start(std::vector<child_spec> specs) {
    sup = sys.spawn(node_supervisor, cfg, std::move(specs));
    auto reason = exit_reason;
    auto flag = exited;
    caf::actor_cast<caf::abstract_actor*>(sup)->attach_functor([reason, flag](const caf::error& e) {
      *reason = e;
      *flag = true;
    });
    consume_messages();
  }

  static child_spec worker() {
    return {"worker", [](caf::actor_system& s) { return s.spawn(idle_child); }};
  }

  caf::actor current(const char* name) {
    return caf::actor_cast<caf::actor>(
        sys.registry().get(caf::atom_from_string(std::string{name})));
  }

  void crash(const char* name) {
    auto h = current(name);
    CAF_REQUIRE(h != nullptr);
    caf::anon_send_exit(h, caf::exit_reason::kill);
    consume_messages();
  }

  node_supervisor_state& state() {
    return deref<node_supervisor_actor::stateful_base<node_supervisor_state>>(sup).state;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(node_supervisor_tests, fixture)

CAF_TEST(children start in order and are registered by name) {
  start({worker()});
  CAF_CHECK(current("worker") != nullptr);
  auto status = request<component_status>(sup, status_atom::value);
  CAF_CHECK(status.healthy);
  CAF_CHECK(status_json(status).dump().find(R"("name":"worker")") != std::string::npos);
}

CAF_TEST(a crashed child is restarted after its backoff) {
  start({worker()});
  auto first = current("worker");
  crash("worker");
  // Down, unregistered, waiting for the backoff.
  CAF_CHECK(current("worker") == nullptr);
  advance_time(99ms);
  consume_messages();
  CAF_CHECK(current("worker") == nullptr);
  advance_time(1ms);
  consume_messages();
  auto second = current("worker");
  CAF_REQUIRE(second != nullptr);
  CAF_CHECK(second != first);
  CAF_CHECK_EQUAL(state().children.at(0).restarts, 1u);
  CAF_CHECK(!*exited);
}

CAF_TEST(the backoff doubles with each recent restart up to the cap) {
  start({worker()});
  crash("worker");
  advance_time(100ms);
  consume_messages();
  crash("worker");
  advance_time(100ms);
  consume_messages();
  CAF_CHECK(current("worker") == nullptr); // second restart waits 200 ms
  advance_time(100ms);
  consume_messages();
  CAF_CHECK(current("worker") != nullptr);
  CAF_CHECK_EQUAL(state().children.at(0).last_backoff, 200ms);
}

CAF_TEST(restarts older than the window do not count towards intensity) {
  cfg.max_restarts = 1;
  start({worker()});
  crash("worker");
  advance_time(100ms);
  consume_messages();
  advance_time(61s);
  crash("worker");
  advance_time(1s);
  consume_messages();
  CAF_CHECK(!*exited);
  CAF_CHECK(current("worker") != nullptr);
}

CAF_TEST(too many restarts within the window escalate) {
  cfg.max_restarts = 2;
  start({worker(), {"event_bus", [](caf::actor_system& s) { return s.spawn(idle_child); }}});
  auto other = current("event_bus");
  for (int i = 0; i < 2; ++i) {
    crash("worker");
    advance_time(1s);
    consume_messages();
    CAF_REQUIRE(!*exited);
  }
  crash("worker");
  CAF_CHECK(*exited);
  CAF_CHECK_EQUAL(exit_reason->code(), static_cast<uint8_t>(ec::restart_intensity));
  CAF_CHECK_EQUAL(exit_reason->category(), caf::atom("troupe"));
  // Escalation takes the other children down too: nothing keeps running.
  CAF_CHECK(current("event_bus") == nullptr);
  run();
  CAF_CHECK(deref(other).getf(caf::abstract_actor::is_terminated_flag));
}

CAF_TEST(a restart is announced as an actor_restarted event) {
  auto e = env;
  start({make_child(names::store, [e](caf::actor_system& s) { return s.spawn(store, e); }),
         make_child(names::event_bus,
                    [](caf::actor_system& s) { return s.spawn(event_bus, std::string{"n1"}); })});
  crash("store");
  advance_time(100ms);
  consume_messages();
  auto events = persistence::read_events(*env, 0, 10);
  CAF_REQUIRE_EQUAL(events.size(), 1u);
  CAF_CHECK_EQUAL(events[0].type, "actor.restarted");
  CAF_CHECK(events[0].data.find(R"("actor":"store")") != std::string::npos);
  CAF_CHECK(events[0].data.find(R"("restarts":1)") != std::string::npos);
  CAF_CHECK_EQUAL(events[0].node, "n1");
}

CAF_TEST(shutdown stops children last started first and quits normally) {
  auto e = env;
  start({make_child(names::store, [e](caf::actor_system& s) { return s.spawn(store, e); }),
         worker()});
  auto st = current("store");
  auto w = current("worker");
  auto reply = self->request(sup, caf::infinite, shutdown_atom::value);
  run();
  bool ok = false;
  reply.receive([&](ok_atom) { ok = true; }, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(ok);
  CAF_CHECK(*exited);
  CAF_CHECK(!*exit_reason);
  CAF_CHECK(deref(st).getf(caf::abstract_actor::is_terminated_flag));
  CAF_CHECK(deref(w).getf(caf::abstract_actor::is_terminated_flag));
  CAF_CHECK(current("store") == nullptr);
}

CAF_TEST_FIXTURE_SCOPE_END()
