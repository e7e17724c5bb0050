#define CAF_SUITE app_backend
#include "support/dsl.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <future>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "http/http_client.hpp"
#include "support/servers.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

struct fixture {
  test::temp_dir dir;
  test::external_server backend = start();

  test::external_server start() {
    std::string error;
    auto server = test::start_app_backend(dir.path(), "web-7", &error);
    if (!server)
      CAF_FAIL("cannot start the test backend: " << error);
    return std::move(*server);
  }

  http::client_response call(const std::string& method, const std::string& target,
                             std::chrono::milliseconds timeout = 10s) {
    http::url base{"http", "127.0.0.1", std::to_string(backend.port()), "/"};
    return http::fetch(base, method, target, {}, {}, timeout);
  }

  unsigned status(const std::string& method, const std::string& target) {
    return call(method, target).status;
  }

  std::string log() {
    std::ifstream in{backend.log()};
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  /// Waits for the backend to exit; its wait status.
  int wait_exit() {
    int status = 0;
    while (::waitpid(backend.pid(), &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(app_backend_tests, fixture)

CAF_TEST(root answers with the instance id and pid) {
  auto res = call("GET", "/");
  CAF_REQUIRE_EQUAL(res.status, 200u);
  auto body = nlohmann::json::parse(res.body);
  CAF_CHECK_EQUAL(body["instance"], "web-7");
  CAF_CHECK_EQUAL(body["pid"], backend.pid());
  CAF_CHECK_EQUAL(body["port"], backend.port());
  CAF_CHECK(log().find("listening on 127.0.0.1:" + std::to_string(backend.port())) !=
            std::string::npos);
}

CAF_TEST(health fails and heals on command) {
  CAF_CHECK_EQUAL(status("GET", "/healthz"), 200u);
  CAF_CHECK_EQUAL(status("GET", "/control/fail-health"), 405u);
  CAF_CHECK_EQUAL(status("POST", "/control/fail-health"), 200u);
  CAF_CHECK_EQUAL(status("GET", "/healthz"), 503u);
  CAF_CHECK_EQUAL(status("POST", "/control/heal"), 200u);
  CAF_CHECK_EQUAL(status("GET", "/healthz"), 200u);
}

CAF_TEST(a hung backend leaves health probes to time out) {
  CAF_CHECK_EQUAL(status("POST", "/control/hang"), 200u);
  auto probe = call("GET", "/healthz", 300ms);
  CAF_CHECK_EQUAL(probe.status, 0u);
  // Everything else still answers, and heal ends the hang.
  CAF_CHECK_EQUAL(status("GET", "/"), 200u);
  CAF_CHECK_EQUAL(status("POST", "/control/heal"), 200u);
  CAF_CHECK_EQUAL(status("GET", "/healthz"), 200u);
}

CAF_TEST(slow requests overlap and a SIGTERM drains them before exit 0) {
  auto slow = std::async(std::launch::async, [this] { return call("GET", "/slow?ms=1500"); });
  // The backend counts requests in flight: wait until the slow one is one.
  for (;;) {
    auto res = call("GET", "/");
    CAF_REQUIRE_EQUAL(res.status, 200u);
    if (nlohmann::json::parse(res.body)["in_flight"] == 2)
      break;
    std::this_thread::sleep_for(5ms);
  }
  CAF_REQUIRE_EQUAL(::kill(backend.pid(), SIGTERM), 0);
  auto res = slow.get();
  CAF_CHECK_EQUAL(res.status, 200u);
  CAF_CHECK_EQUAL(res.body, "slept 1500 ms\n");
  auto st = wait_exit();
  CAF_CHECK(WIFEXITED(st));
  CAF_CHECK_EQUAL(WEXITSTATUS(st), 0);
  CAF_CHECK(log().find(": draining ") != std::string::npos);
  CAF_CHECK_EQUAL(status("GET", "/"), 0u); // nothing listens any more
}

CAF_TEST(crash exits 3 after answering) {
  CAF_CHECK_EQUAL(status("POST", "/control/crash"), 200u);
  auto st = wait_exit();
  CAF_CHECK(WIFEXITED(st));
  CAF_CHECK_EQUAL(WEXITSTATUS(st), 3);
}

CAF_TEST(log prints the line flushed before it answers) {
  CAF_CHECK_EQUAL(status("POST", "/control/log?line=hello%20from+web-7"), 200u);
  CAF_CHECK(log().find("\nhello from web-7\n") != std::string::npos);
  CAF_CHECK_EQUAL(status("POST", "/control/log"), 400u);
}

CAF_TEST(alloc makes memory resident) {
  auto rss_kib = [this] {
    std::ifstream in{"/proc/" + std::to_string(backend.pid()) + "/status"};
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("VmRSS:", 0) == 0)
        return std::stol(line.substr(6));
    return 0l;
  };
  auto before = rss_kib();
  CAF_CHECK_EQUAL(status("POST", "/control/alloc?mb=32"), 200u);
  CAF_CHECK_GREATER_OR_EQUAL(rss_kib() - before, 32l * 1024);
  CAF_CHECK_EQUAL(status("POST", "/control/alloc?mb=lots"), 400u);
}

CAF_TEST_FIXTURE_SCOPE_END()
