#define CAF_SUITE registry
#include "support/dsl.hpp"

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/core/node_supervisor.hpp"
#include "actors/core/store.hpp"
#include "persistence/lmdb_env.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;

namespace {

caf::behavior untyped_idle() {
  return {[](int) {}};
}

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  std::vector<caf::actor> spawned;

  ~fixture() override {
    withdraw(sys, names::store);
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    run();
  }

  store_actor spawn_store() {
    auto st = sys.spawn(store, env);
    spawned.push_back(caf::actor_cast<caf::actor>(st));
    return st;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(registry_tests, fixture)

CAF_TEST(a name nobody registered yields nothing) {
  CAF_CHECK(!lookup(sys, names::store).has_value());
}

CAF_TEST(a registered actor is found with the type its name declares) {
  auto st = spawn_store();
  enroll(sys, names::store, st);
  auto found = lookup(sys, names::store);
  CAF_REQUIRE(found.has_value());
  static_assert(std::is_same_v<decltype(found), std::optional<store_actor>>);
  CAF_CHECK(*found == st);
  withdraw(sys, names::store);
  CAF_CHECK(!lookup(sys, names::store).has_value());
}

CAF_TEST(an actor of another interface under the name is not handed out) {
  // Written past the typed helpers, as an unchecked put would.
  auto bus = sys.spawn(event_bus, std::string{"n1"});
  spawned.push_back(caf::actor_cast<caf::actor>(bus));
  sys.registry().put(names::store.key, caf::actor_cast<caf::strong_actor_ptr>(bus));
  CAF_CHECK(!lookup(sys, names::store).has_value());
  auto idle = sys.spawn(untyped_idle);
  spawned.push_back(idle);
  sys.registry().erase(names::store.key);
  sys.registry().put(names::store.key, caf::actor_cast<caf::strong_actor_ptr>(idle));
  CAF_CHECK(!lookup(sys, names::store).has_value());
}

CAF_TEST(enrolling replaces the previous incarnation) {
  auto first = spawn_store();
  auto second = spawn_store();
  enroll(sys, names::store, first);
  enroll(sys, names::store, second);
  auto found = lookup(sys, names::store);
  CAF_REQUIRE(found.has_value());
  CAF_CHECK(*found == second);
}

CAF_TEST(the supervisor registers a typed child under its declared name) {
  auto e = env;
  auto sup = sys.spawn(node_supervisor, supervisor_config{},
                       std::vector<child_spec>{make_child(
                           names::store, [e](caf::actor_system& s) { return s.spawn(store, e); })});
  run();
  auto found = lookup(sys, names::store);
  CAF_REQUIRE(found.has_value());
  auto reply = self->request(sup, caf::infinite, shutdown_atom::value);
  run();
  reply.receive([](ok_atom) {}, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(!lookup(sys, names::store).has_value());
}

CAF_TEST_FIXTURE_SCOPE_END()
