#define CAF_SUITE app_records
#include "support/dsl.hpp"

#include "actors/core/store.hpp"
#include "persistence/apps.hpp"
#include "persistence/lmdb_env.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace troupe::persistence;

namespace {

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<lmdb_env> env = lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);

  ~fixture() override {
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    run();
  }

  void write(write_batch ops) {
    self->send(st, write_atom::value, std::move(ops));
    run();
    expect_reply();
  }

  void expect_reply() {
    bool got = false;
    self->receive([&](write_result&) { got = true; },
                  [&](caf::error& err) { CAF_FAIL("write failed: " << caf::to_string(err)); });
    CAF_REQUIRE(got);
  }

  instance_record instance(std::string app, std::string id) {
    instance_record r;
    r.app = std::move(app);
    r.id = std::move(id);
    r.revision = 2;
    r.node = "n1";
    r.ports = {20001, 20002};
    r.pgid = 4242;
    r.state = "running";
    r.restarts = 3;
    r.exit_code = 1;
    return r;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(app_records_tests, fixture)

CAF_TEST(an app record round - trips with revision and desired state) {
  app_record a;
  a.name = "web";
  a.revision = 4;
  a.spec = R"({"metadata":{"name":"web"}})";
  a.desired_state = app_state::up;
  a.desired_replicas = 3;
  write({put_app_op(a)});
  auto got = get_app(*env, "web");
  CAF_REQUIRE(got.has_value());
  CAF_CHECK_EQUAL(got->revision, 4u);
  CAF_CHECK_EQUAL(got->spec, a.spec);
  CAF_CHECK_EQUAL(got->desired_state, "up");
  CAF_CHECK_EQUAL(got->desired_replicas, 3);
  CAF_CHECK(!get_app(*env, "other").has_value());
}

CAF_TEST(instances are listed per app only) {
  write({put_instance_op(instance("web", "web-a")), put_instance_op(instance("web", "web-b")),
         put_instance_op(instance("web2", "web2-a"))});
  auto web = list_instances(*env, "web");
  CAF_REQUIRE_EQUAL(web.size(), 2u);
  CAF_CHECK_EQUAL(web[0].id, "web-a");
  CAF_CHECK_EQUAL(web[0].ports, (std::vector<uint16_t>{20001, 20002}));
  CAF_CHECK_EQUAL(web[0].pgid, 4242);
  CAF_CHECK_EQUAL(web[0].restarts, 3u);
  CAF_CHECK_EQUAL(web[0].exit_code.value_or(-1), 1);
  CAF_CHECK(!web[0].signal.has_value());
  CAF_CHECK_EQUAL(list_all_instances(*env).size(), 3u);
}

namespace {

/// A decision of the API's kind (no autoscaler fields).
scaling_decision dec(const std::string& app, int64_t ts, int32_t from, int32_t to,
                     const std::string& reason) {
  scaling_decision d;
  d.app = app;
  d.ts_ns = ts;
  d.from = from;
  d.to = to;
  d.reason = reason;
  return d;
}

} // namespace

CAF_TEST(scaling decisions come newest first a page at a time and stay per app) {
  write({scaling_op(dec("web", 10, 0, 3, "up")), scaling_op(dec("web2", 11, 0, 1, "up")),
         scaling_op(dec("web", 12, 3, 1, "scale")), scaling_op(dec("web", 13, 1, 0, "down"))});
  std::string next;
  auto all = scaling_page(*env, "web", "", 10, next);
  CAF_REQUIRE_EQUAL(all.size(), 3u);
  CAF_CHECK(next.empty());
  CAF_CHECK_EQUAL(all[0].reason, "down");
  CAF_CHECK_EQUAL(all[1].reason, "scale");
  CAF_CHECK_EQUAL(all[2].to, 3);
  // Pages of two: the cursor goes on where the first stopped, then ends.
  auto first = scaling_page(*env, "web", "", 2, next);
  CAF_REQUIRE_EQUAL(first.size(), 2u);
  CAF_REQUIRE(!next.empty());
  auto second = scaling_page(*env, "web", next, 2, next);
  CAF_REQUIRE_EQUAL(second.size(), 1u);
  CAF_CHECK_EQUAL(second[0].reason, "up");
  CAF_CHECK_EQUAL(second[0].app, "web");
  CAF_CHECK(next.empty());
  // A cursor that is none of troupe's starts from the newest, within the app.
  auto odd = scaling_page(*env, "web", std::string{"\x01zz"}, 10, next);
  CAF_CHECK_EQUAL(odd.size(), 3u);
  CAF_CHECK_EQUAL(scaling_page(*env, "web2", "", 10, next).size(), 1u);
}

CAF_TEST(an autoscaler decision keeps its rule and what it looked at) {
  scaling_decision d;
  d.app = "web";
  d.ts_ns = 42;
  d.from = 2;
  d.to = 3;
  d.reason = "rps 120 is 120% of target";
  d.rule = "scale_out";
  d.metric = "rps";
  d.window = "20s";
  d.observed = 120;
  d.target = 50;
  d.proposal = 3;
  auto back = decode_scaling(encode(d));
  CAF_CHECK_EQUAL(back.rule, "scale_out");
  CAF_CHECK_EQUAL(back.metric, "rps");
  CAF_CHECK_EQUAL(back.window, "20s");
  CAF_CHECK_EQUAL(back.observed, 120.0);
  CAF_CHECK_EQUAL(back.target, 50.0);
  CAF_CHECK_EQUAL(back.proposal, 3);
  CAF_CHECK_EQUAL(back.reason, d.reason);
  // One of the API's: no rule, and none comes back.
  scaling_decision api;
  api.app = "web";
  api.from = 1;
  api.to = 2;
  api.reason = "api";
  CAF_CHECK(decode_scaling(encode(api)).rule.empty());
}

CAF_TEST(scaling decisions are pruned to the newest ones per app) {
  write_batch ops;
  for (int64_t i = 1; i <= 10; ++i)
    ops.push_back(scaling_op(dec("web", i, 0, static_cast<int32_t>(i), "api")));
  ops.push_back(scaling_op(dec("web2", 5, 0, 1, "api")));
  write(ops);
  CAF_CHECK(!prune_scaling_op(*env, "web", 10));
  auto op = prune_scaling_op(*env, "web", 3);
  CAF_REQUIRE(op);
  write({*op});
  std::string next;
  auto left = scaling_page(*env, "web", "", 100, next);
  CAF_REQUIRE_EQUAL(left.size(), 3u);
  CAF_CHECK_EQUAL(left[0].to, 10);
  CAF_CHECK_EQUAL(left[2].to, 8);
  CAF_CHECK_EQUAL(scaling_page(*env, "web2", "", 100, next).size(), 1u);
  // keep 0: all of them.
  write({*prune_scaling_op(*env, "web", 0)});
  CAF_CHECK(scaling_page(*env, "web", "", 100, next).empty());
}

CAF_TEST(purging an app removes its records but not another app with a longer name) {
  app_record a;
  a.name = "web";
  app_record b;
  b.name = "web2";
  write({put_app_op(a), put_app_op(b), put_instance_op(instance("web", "web-a")),
         put_instance_op(instance("web2", "web2-a")), scaling_op(dec("web", 1, 0, 1, "up")),
         scaling_op(dec("web2", 2, 0, 1, "up"))});
  write(purge_app_ops(*env, "web"));
  CAF_CHECK(!get_app(*env, "web").has_value());
  CAF_CHECK(get_app(*env, "web2").has_value());
  CAF_CHECK(list_instances(*env, "web").empty());
  CAF_CHECK_EQUAL(list_instances(*env, "web2").size(), 1u);
  std::string next;
  CAF_CHECK(scaling_page(*env, "web", "", 10, next).empty());
  CAF_CHECK_EQUAL(scaling_page(*env, "web2", "", 10, next).size(), 1u);
}

CAF_TEST_FIXTURE_SCOPE_END()
