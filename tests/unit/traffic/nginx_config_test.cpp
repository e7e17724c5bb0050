#define CAF_SUITE nginx_config
#include "support/dsl.hpp"

// nginx mode's rendering with the shipped template, checked by the real
// nginx (`nginx -t` against a main configuration in a temporary directory).

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
  auto conf = nginx::render(shipped_template(), "127.0.0.1:38090", apps);
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
  test::temp_dir dir;
  CAF_CHECK_EQUAL(nginx_test(dir, conf), 0);
}

CAF_TEST(a template without the marker is refused naming the key) {
  std::string why;
  try {
    nginx::render("upstream @UPSTREAM@ {}\n", "127.0.0.1:1", {});
  } catch (const spec_error& e) {
    why = e.what();
  }
  CAF_CHECK(contains(why, "proxy.nginx.template"));
  // A template nginx does not understand renders, and nginx -t says no.
  auto bad = shipped_template() + "    this_is_no_directive on;\n";
  auto conf = nginx::render(bad, "127.0.0.1:38092", {{"web", std::nullopt, {{"web-1", 21001}}}});
  test::temp_dir dir;
  CAF_CHECK_NOT_EQUAL(nginx_test(dir, conf), 0);
}
