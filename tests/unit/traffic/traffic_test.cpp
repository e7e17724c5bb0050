#define CAF_SUITE traffic
#include "support/dsl.hpp"

// The traffic actor on the deterministic coordinator in front of a real
// data plane (http/proxy on a loopback port): endpoints in, drain answers
// and the app view out, refused updates counted.

#include <boost/asio.hpp>

#include "actors/traffic/traffic.hpp"
#include "support/servers.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

struct fixture : test::deterministic_fixture {
  std::shared_ptr<http::proxy_server> proxy;
  traffic_actor actor;

  fixture() {
    http::proxy_options o;
    o.port = 0;
    proxy = std::make_shared<http::proxy_server>(o);
    proxy->start();
    // No gauge ticks: run() would follow the timer forever.
    actor = sys.spawn(traffic, proxy, std::chrono::milliseconds(0));
    run();
  }

  ~fixture() override {
    anon_send_exit(actor, caf::exit_reason::user_shutdown);
    run();
    proxy->stop();
  }
};

app_endpoints endpoints(std::string app, std::vector<std::pair<std::string, uint16_t>> ready) {
  app_endpoints x;
  x.app = std::move(app);
  for (auto& [id, port] : ready)
    x.ready.push_back({id, port, 0});
  return x;
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(traffic_tests, fixture)

CAF_TEST(a routable instance counts as in flight until it leaves the ready set) {
  anon_send(actor, endpoints("web", {{"web-1", 21001}, {"web-2", 21002}}));
  run();
  // Still routable: a drain must not end before the proxy stopped sending.
  CAF_CHECK_EQUAL(proxy->in_flight("web", "web-1"), 1u);
  CAF_CHECK_EQUAL(proxy->in_flight("web", "nobody"), 0u);
  anon_send(actor, endpoints("web", {{"web-2", 21002}}));
  run();
  CAF_CHECK_EQUAL(proxy->in_flight("web", "web-1"), 0u);
  CAF_CHECK_EQUAL(proxy->in_flight("web", "web-2"), 1u);
  auto view = proxy->app_view("web");
  CAF_REQUIRE(view);
  CAF_REQUIRE_EQUAL(view->instances.size(), 1u);
  CAF_CHECK_EQUAL(view->instances[0].instance, "web-2");
  CAF_CHECK_EQUAL(view->instances[0].port, 21002);
  auto deleted = endpoints("web", {});
  deleted.deleted = true;
  anon_send(actor, deleted);
  run();
  CAF_CHECK(!proxy->app_view("web"));
}

CAF_TEST(an own port another process holds is refused and the old route stays) {
  auto taken = test::free_loopback_port();
  // Hold the port: the proxy cannot listen on it.
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor holder{ioc, {boost::asio::ip::make_address("127.0.0.1"), taken}};
  auto x = endpoints("api", {{"api-1", 21003}});
  x.exposed = true;
  x.port = taken;
  anon_send(actor, x);
  run();
  CAF_CHECK(!proxy->app_view("api"));
  CAF_CHECK(proxy->app_ports().empty());
  auto st = deref<traffic_actor::stateful_base<traffic_state>>(actor).state.refused;
  CAF_CHECK_EQUAL(st, 1u);
  // Without the port rule it is routed (at /api/…).
  anon_send(actor, endpoints("api", {{"api-1", 21003}}));
  run();
  CAF_CHECK(proxy->app_view("api"));
}

CAF_TEST_FIXTURE_SCOPE_END()
