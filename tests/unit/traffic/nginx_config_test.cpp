#define CAF_SUITE nginx_config
#include "support/dsl.hpp"

// nginx mode's rendering with the shipped template, checked by the real
// nginx (`nginx -t` against a main configuration in a temporary directory).

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "actors/traffic/nginx_config.hpp"
#include "runtime/ground/spec_document.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;

namespace {

std::string shipped_template() {
  auto root = std::getenv("TROUPE_SOURCE_DIR");
  std::ifstream in(std::string{root != nullptr ? root : ".."} + "/configs/nginx-app.conf.in");
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

/// `nginx -t` of a main configuration that includes `conf`; its exit code.
int nginx_test(const test::temp_dir& dir, const std::string& conf) {
  auto d = dir.path();
  {
    std::ofstream(d + "/troupe.conf") << conf;
    std::ofstream main(d + "/nginx.conf");
    main << "pid " << d << "/nginx.pid;\nerror_log " << d << "/error.log;\n"
         << "events {}\nhttp {\n  client_body_temp_path " << d << "/cb;\n  proxy_temp_path " << d
         << "/px;\n  fastcgi_temp_path " << d << "/fc;\n  uwsgi_temp_path " << d
         << "/uw;\n  scgi_temp_path " << d << "/sc;\n  access_log off;\n  include " << d
         << "/troupe.conf;\n}\n";
  }
  auto cmd = "nginx -t -q -c " + d + "/nginx.conf -p " + d + " > " + d + "/t.out 2>&1";
  auto rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::ifstream out(d + "/t.out");
    std::stringstream buf;
    buf << out.rdbuf();
    CAF_MESSAGE("nginx -t: " << buf.str());
  }
  return rc;
}

} // namespace

CAF_TEST(apps render as upstreams and locations that nginx accepts) {
  std::vector<nginx::app_part> apps{
      {"web", std::nullopt, {{"web-1", 21001}, {"web-2", 21002}}},
      {"api", expose_rule{"", "/api", true, 0}, {{"api-1", 21003}}},
      {"shop", expose_rule{"*.shop.example.test", "", false, 0}, {{"shop-1", 21004}}},
      {"own", expose_rule{"", "", false, 38091}, {{"own-1", 21005}}},
      {"cold", std::nullopt, {}}};
  test::temp_dir dir;
  nginx::render_options opts{"127.0.0.1:38090", dir.path() + "/access.json", "127.0.0.1:38093"};
  auto conf = nginx::render(shipped_template(), opts, apps);
  CAF_CHECK(contains(conf, "upstream troupe_web {"));
  CAF_CHECK(contains(conf, "server 127.0.0.1:21001; # web-1"));
  CAF_CHECK(contains(conf, "server 127.0.0.1:21002; # web-2"));
  CAF_CHECK(contains(conf, "location /web/ {"));
  CAF_CHECK(contains(conf, "proxy_pass http://troupe_web/;"));
  CAF_CHECK(contains(conf, "location /api/ {"));
  CAF_CHECK(contains(conf, "server_name *.shop.example.test;"));
  CAF_CHECK(contains(conf, "proxy_pass http://troupe_shop;"));
  CAF_CHECK(contains(conf, "listen 127.0.0.1:38091 default_server;"));
  // Nothing ready: no upstream, a 503 where its location would be.
  CAF_CHECK(!contains(conf, "upstream troupe_cold"));
  CAF_CHECK(contains(conf, "no_ready_instance"));
  CAF_CHECK(contains(conf, "proxy_next_upstream error timeout http_502;"));
  // troupe's metrics: every location names its app in the JSON access log,
  // and stub_status has a server of its own.
  CAF_CHECK(contains(conf, "log_format troupe_json escape=json"));
  CAF_CHECK(contains(conf, "access_log " + dir.path() + "/access.json troupe_json;"));
  CAF_CHECK(contains(conf, "set $troupe_app \"web\";"));
  CAF_CHECK(contains(conf, "set $troupe_app \"cold\";"));
  CAF_CHECK(contains(conf, "listen 127.0.0.1:38093;"));
  CAF_CHECK(contains(conf, "stub_status;"));
  CAF_CHECK_EQUAL(nginx_test(dir, conf), 0);
  // Without them: no log format, no status server, still valid.
  auto plain = nginx::render(shipped_template(), {"127.0.0.1:38090", "", ""}, apps);
  CAF_CHECK(!contains(plain, "troupe_json"));
  CAF_CHECK(!contains(plain, "stub_status"));
  test::temp_dir dir2;
  CAF_CHECK_EQUAL(nginx_test(dir2, plain), 0);
}

CAF_TEST(a template without the marker is refused naming the key) {
  std::string why;
  try {
    nginx::render("upstream @UPSTREAM@ {}\n", {"127.0.0.1:1", "", ""}, {});
  } catch (const spec_error& e) {
    why = e.what();
  }
  CAF_CHECK(contains(why, "proxy.nginx.template"));
  // A template nginx does not understand renders, and nginx -t says no.
  auto bad = shipped_template() + "    this_is_no_directive on;\n";
  auto conf =
      nginx::render(bad, {"127.0.0.1:38092", "", ""}, {{"web", std::nullopt, {{"web-1", 21001}}}});
  test::temp_dir dir;
  CAF_CHECK_NOT_EQUAL(nginx_test(dir, conf), 0);
}

CAF_TEST(access log lines and stub_status parse) {
  auto e = nginx::parse_access_line(
      R"({"app":"web","status":"503","seconds":"0.012","upstream":"127.0.0.1:21001",)"
      R"("msec":"1765000000.250"})");
  CAF_REQUIRE(e);
  CAF_CHECK_EQUAL(e->app, "web");
  CAF_CHECK_EQUAL(e->status, 503);
  CAF_CHECK_LESS(std::abs(e->seconds - 0.012), 1e-9);
  CAF_CHECK_EQUAL(e->at_ns / 1'000'000, int64_t{1765000000250});
  // Not an app's request, not troupe's format, not JSON: skipped.
  CAF_CHECK(!nginx::parse_access_line(R"({"app":"","status":"404","seconds":"0","msec":"1"})"));
  CAF_CHECK(!nginx::parse_access_line(R"({"app":"web","status":"-","seconds":"0","msec":"1"})"));
  CAF_CHECK(!nginx::parse_access_line("127.0.0.1 - - [06/Dec/2026] \"GET / HTTP/1.1\" 200"));
  auto s = nginx::parse_stub_status("Active connections: 2 \nserver accepts handled requests\n"
                                    " 10 9 31 \nReading: 0 Writing: 1 Waiting: 1 \n");
  CAF_REQUIRE(s);
  CAF_CHECK_EQUAL(s->active, 2u);
  CAF_CHECK_EQUAL(s->accepts, 10u);
  CAF_CHECK_EQUAL(s->handled, 9u);
  CAF_CHECK_EQUAL(s->requests, 31u);
  CAF_CHECK_EQUAL(s->writing, 1u);
  CAF_CHECK_EQUAL(s->waiting, 1u);
  CAF_CHECK(!nginx::parse_stub_status("<html>404</html>"));
}
