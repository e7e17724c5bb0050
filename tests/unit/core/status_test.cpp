#define CAF_SUITE status
#include "support/dsl.hpp"

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "actors/core/status.hpp"
#include "actors/core/store.hpp"
#include "persistence/lmdb_env.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;

namespace {

component_status sample() {
  component_status x{"sample", false, {}};
  caf::put(x.fields, "count", uint64_t{42});
  caf::put(x.fields, "slots", 2);
  caf::put(x.fields, "ok", true);
  caf::put(x.fields, "url", "http://loki:3100");
  caf::put(x.fields, "redis.status", "failing");
  caf::put(x.fields, "redis.error", "connection refused");
  caf::config_value::list children;
  caf::settings child;
  caf::put(child, "name", "store");
  caf::put(child, "running", true);
  children.emplace_back(std::move(child));
  caf::put(x.fields, "children", std::move(children));
  return x;
}

} // namespace

CAF_TEST(fields render as one JSON object with nested groups and lists) {
  auto doc = status_json(sample());
  CAF_CHECK_EQUAL(doc.dump(),
                  R"({"children":[{"name":"store","running":true}],"count":42,"ok":true,)"
                  R"("redis":{"error":"connection refused","status":"failing"},"slots":2,)"
                  R"("url":"http://loki:3100"})");
}

CAF_TEST(name and health are the protocols own and not rendered) {
  component_status x{"quiet", true, {}};
  CAF_CHECK_EQUAL(status_json(x).dump(), "{}");
}

CAF_TEST(a status crosses the wire unchanged) {
  caf::actor_system_config cfg;
  add_troupe_types(cfg);
  caf::actor_system sys{cfg};
  auto before = sample();
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  CAF_REQUIRE(!sink(before));
  component_status after;
  caf::binary_deserializer source{sys, buf};
  CAF_REQUIRE(!source(after));
  CAF_CHECK_EQUAL(after.name, "sample");
  CAF_CHECK_EQUAL(after.healthy, false);
  CAF_CHECK_EQUAL(status_json(after), status_json(before));
}

// Closure messages are marked, and only the bridge's interface takes one.
static_assert(is_node_local_v<bridge_task>);
static_assert(!is_node_local_v<job_update>);
static_assert(!is_node_local_v<component_status>);
static_assert(has_node_local_messages_v<http_bridge_actor>);
static_assert(!has_node_local_messages_v<job_controller_actor>);

CAF_TEST_FIXTURE_SCOPE(status_protocol_tests, test::deterministic_fixture)

CAF_TEST(a component answers the status protocol through the shared interface) {
  test::temp_dir dir;
  auto env = persistence::lmdb_env::open(dir / "store", 64ull << 20);
  auto st = sys.spawn(store, env);
  // Any component's handle is a status_api handle (extend_with).
  status_api any = st;
  auto x = request<component_status>(any, status_atom::value);
  CAF_CHECK_EQUAL(x.name, "store");
  CAF_CHECK(x.healthy);
  CAF_CHECK_EQUAL(status_json(x).dump(), R"({"batches":0,"commits":0,"queued":0})");
  caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
  run();
}

CAF_TEST_FIXTURE_SCOPE_END()
