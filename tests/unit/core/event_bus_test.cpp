#define CAF_SUITE event_bus
#include "support/dsl.hpp"

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/core/store.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;

namespace {

struct recorder_state {
  static inline const char* name = "recorder";
  std::vector<event> seen;
};

event_subscriber_actor::behavior_type
recorder(event_subscriber_actor::stateful_pointer<recorder_state> self) {
  return {[self](const event& ev) { self->state.seen.push_back(ev); }};
}

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);
  event_bus_actor bus = sys.spawn(event_bus, std::string{"node-a"});

  fixture() { enroll(sys, names::store, st); }

  ~fixture() override {
    withdraw(sys, names::store);
    caf::anon_send_exit(bus, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    run();
  }

  std::vector<event>& seen(const event_subscriber_actor& r) {
    return deref<event_subscriber_actor::stateful_base<recorder_state>>(r).state.seen;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(event_bus_tests, fixture)

CAF_TEST(events are persisted then delivered in sequence order) {
  auto r = sys.spawn(recorder);
  caf::anon_send(bus, subscribe_atom::value, r);
  run();
  auto h1 = self->request(bus, caf::infinite, publish_atom::value, make_event("node.started"));
  auto h2 = self->request(bus, caf::infinite, publish_atom::value,
                          make_event("actor.restarted", R"({"actor":"store"})"));
  run();
  h1.receive([](uint64_t seq) { CAF_CHECK_EQUAL(seq, 1u); },
             [](caf::error& err) { CAF_FAIL(to_string(err)); });
  h2.receive([](uint64_t seq) { CAF_CHECK_EQUAL(seq, 2u); },
             [](caf::error& err) { CAF_FAIL(to_string(err)); });
  auto& got = seen(r);
  CAF_REQUIRE_EQUAL(got.size(), 2u);
  CAF_CHECK_EQUAL(got[0].seq, 1u);
  CAF_CHECK_EQUAL(got[0].type, "node.started");
  CAF_CHECK_EQUAL(got[0].node, "node-a");
  CAF_CHECK_EQUAL(got[1].seq, 2u);
  auto stored = persistence::read_events(*env, 0, 10);
  CAF_REQUIRE_EQUAL(stored.size(), 2u);
  CAF_CHECK_EQUAL(stored[1].type, "actor.restarted");
  CAF_CHECK_EQUAL(stored[1].data, R"({"actor":"store"})");
  CAF_CHECK_EQUAL(persistence::read_events(*env, 1, 10).size(), 1u);
  CAF_CHECK_EQUAL(persistence::read_events(*env, 0, 1).size(), 1u);
  CAF_CHECK(persistence::read_events(*env, UINT64_MAX, 10).empty()); // no seq after the largest
  caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
}

CAF_TEST(nothing is announced when the store is unavailable) {
  auto r = sys.spawn(recorder);
  caf::anon_send(bus, subscribe_atom::value, r);
  withdraw(sys, names::store);
  auto h = self->request(bus, caf::infinite, publish_atom::value, make_event("x"));
  run();
  h.receive(
      [](uint64_t) { CAF_FAIL("published without a store"); },
      [](caf::error& err) { CAF_CHECK_EQUAL(err.code(), static_cast<uint8_t>(ec::unavailable)); });
  CAF_CHECK(seen(r).empty());
  caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
}

CAF_TEST(terminated subscribers are dropped) {
  auto r = sys.spawn(recorder);
  caf::anon_send(bus, subscribe_atom::value, r);
  run();
  caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
  run();
  CAF_CHECK(deref<event_bus_actor::stateful_base<event_bus_state>>(bus).state.subscribers.empty());
}

CAF_TEST(events render as the api shows them) {
  event e;
  e.seq = 7;
  e.ts_ns = 1'700'000'000'123'000'000;
  e.type = "node.started";
  e.node = "n";
  e.data = R"({"pid":1})";
  CAF_CHECK_EQUAL(
      to_json(e),
      R"({"data":{"pid":1},"node":"n","seq":7,"ts":"2023-11-14T22:13:20.123Z","type":"node.started"})");
  auto back = persistence::decode_stored(7, persistence::encode_stored(e));
  CAF_CHECK_EQUAL(back.type, e.type);
  CAF_CHECK_EQUAL(back.ts_ns, e.ts_ns);
  CAF_CHECK_EQUAL(back.data, e.data);
}

CAF_TEST_FIXTURE_SCOPE_END()
