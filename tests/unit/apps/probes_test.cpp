#define CAF_SUITE probes
#include "support/dsl.hpp"

#include <atomic>
#include <fstream>
#include <future>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/apps/probes.hpp"
#include "runtime/ground/process.hpp"
#include "support/capture_server.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace troupe::apps;
using namespace std::chrono_literals;

namespace {

/// A loopback listener on a free port; accepts nothing unless told.
struct listener {
  int fd = -1;
  uint16_t port = 0;
  listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CAF_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    CAF_REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~listener() { close(); }
  void close() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
};

struct fixture {
  process::io procs;
  std::shared_ptr<prober> probes = make_prober(procs, prober_limits{});

  /// Runs one probe and waits for its result (the wait is a watchdog only).
  probe_outcome run(probe_request req) {
    auto done = std::make_shared<std::promise<probe_outcome>>();
    auto result = done->get_future();
    probes->probe(std::move(req), [done](probe_outcome o) { done->set_value(std::move(o)); });
    CAF_REQUIRE(result.wait_for(60s) == std::future_status::ready);
    return result.get();
  }

  static probe_request http(uint16_t port, std::string path = "/healthz") {
    probe_request r;
    r.spec.kind = probe_kind::http;
    r.spec.port = port;
    r.spec.path = std::move(path);
    r.spec.timeout = 5s;
    return r;
  }

  static probe_request exec(std::vector<std::string> argv,
                            std::chrono::milliseconds timeout = 10s) {
    probe_request r;
    r.spec.kind = probe_kind::exec;
    r.spec.command = std::move(argv);
    r.spec.timeout = timeout;
    r.env = {"PATH=/usr/bin:/bin"};
    return r;
  }
};

bool gone(pid_t pid) {
  // A zombie still has /proc/<pid>: only a reaped process is gone.
  return ::access(("/proc/" + std::to_string(pid)).c_str(), F_OK) != 0;
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(probes_tests, fixture)

CAF_TEST(http 2xx and 3xx are healthy and the probe asks for the path) {
  test::capture_server server;
  server.script({200, {}, "ok"});
  auto ok = run(http(server.port()));
  CAF_CHECK(ok.verdict == probe_verdict::healthy);
  server.script({302, {{"Location", "/elsewhere"}}, ""});
  CAF_CHECK(run(http(server.port())).verdict == probe_verdict::healthy);
  auto reqs = server.requests();
  CAF_REQUIRE_EQUAL(reqs.size(), 2u);
  CAF_CHECK_EQUAL(reqs[0].method, "GET");
  CAF_CHECK_EQUAL(reqs[0].target, "/healthz");
}

CAF_TEST(http errors name the status) {
  test::capture_server server;
  server.script({503, {}, "down"});
  auto out = run(http(server.port()));
  CAF_CHECK(out.verdict == probe_verdict::unhealthy);
  CAF_CHECK_EQUAL(out.error, "HTTP 503");
  server.script({404, {}, ""});
  CAF_CHECK_EQUAL(run(http(server.port())).error, "HTTP 404");
}

CAF_TEST(a closed port is connection refused for http and tcp) {
  uint16_t port = 0;
  {
    listener l;
    port = l.port;
  }
  auto out = run(http(port));
  CAF_CHECK(out.verdict == probe_verdict::unhealthy);
  CAF_CHECK_EQUAL(out.error, "connection refused");
  auto tcp = http(port);
  tcp.spec.kind = probe_kind::tcp;
  CAF_CHECK_EQUAL(run(tcp).error, "connection refused");
}

CAF_TEST(tcp connect to a listener is healthy) {
  listener l;
  auto req = http(l.port);
  req.spec.kind = probe_kind::tcp;
  CAF_CHECK(run(req).verdict == probe_verdict::healthy);
}

CAF_TEST(a server that never answers times out) {
  listener l; // the kernel completes the handshake; nobody ever reads or writes
  auto req = http(l.port);
  req.spec.timeout = 300ms;
  auto out = run(req);
  CAF_CHECK(out.verdict == probe_verdict::unhealthy);
  CAF_CHECK_EQUAL(out.error, "timeout after 300ms");
}

CAF_TEST(an endless response is cut off at the byte limit) {
  listener l;
  std::atomic<uint64_t> sent{0};
  std::thread server([&] {
    int c = ::accept(l.fd, nullptr, nullptr);
    std::string chunk(4096, 'x');
    // Streams until the prober hangs up; a reader without a limit never would.
    while (::send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL) > 0)
      sent += chunk.size();
    ::close(c);
  });
  auto out = run(http(l.port));
  server.join();
  CAF_CHECK(out.verdict == probe_verdict::unhealthy);
  CAF_CHECK_EQUAL(out.error, "response status line too long");
}

CAF_TEST(exec probes are healthy on exit 0 and name other exits) {
  CAF_CHECK(run(exec({"/bin/sh", "-c", "exit 0"})).verdict == probe_verdict::healthy);
  auto out = run(exec({"/bin/sh", "-c", "echo lots of output; exit 3"}));
  CAF_CHECK(out.verdict == probe_verdict::unhealthy);
  CAF_CHECK_EQUAL(out.error, "exit code 3");
  auto missing = run(exec({"/nonexistent/probe"}));
  CAF_CHECK(missing.verdict == probe_verdict::unhealthy);
  CAF_CHECK(missing.error.find("cannot start /nonexistent/probe") != std::string::npos);
}

CAF_TEST(a hanging exec probe is killed at its timeout and reaped) {
  test::temp_dir dir;
  auto pidfile = dir / "pid";
  auto out = run(exec({"/bin/sh", "-c", "echo $$ > " + pidfile + "; exec sleep 60"}, 500ms));
  CAF_CHECK(out.verdict == probe_verdict::unhealthy);
  CAF_CHECK_EQUAL(out.error, "timeout after 500ms");
  pid_t pid = 0;
  std::ifstream(pidfile) >> pid;
  CAF_REQUIRE(pid > 0);
  // Killed and reaped by the watch (no zombie); the loop only waits for it.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!gone(pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  CAF_CHECK(gone(pid));
}

CAF_TEST(concurrency is bounded and an overflowing queue is skipped) {
  probes = make_prober(procs, prober_limits{1, 1, 8 * 1024});
  listener l; // never answers: each probe holds its slot until its timeout
  bool first_closed_before_second = false;
  std::thread server([&] {
    int c1 = ::accept(l.fd, nullptr, nullptr);
    int c2 = ::accept(l.fd, nullptr, nullptr);
    // With one slot the second probe connects only after the first gave up
    // and hung up; without the bound it would connect at once.
    char buf[256];
    ssize_t n;
    while ((n = ::recv(c1, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
    }
    first_closed_before_second = n == 0;
    ::close(c1);
    ::close(c2);
  });
  std::vector<std::shared_ptr<std::promise<probe_outcome>>> promises;
  std::atomic<int> order{0};
  std::vector<int> finished_at(3, -1);
  for (int i = 0; i < 3; ++i) {
    auto p = std::make_shared<std::promise<probe_outcome>>();
    promises.push_back(p);
    auto req = http(l.port);
    req.spec.timeout = 2s;
    probes->probe(req, [p, i, &order, &finished_at](probe_outcome o) {
      finished_at[i] = order++;
      p->set_value(std::move(o));
    });
  }
  std::vector<probe_outcome> outs;
  for (auto& p : promises) {
    auto f = p->get_future();
    CAF_REQUIRE(f.wait_for(60s) == std::future_status::ready);
    outs.push_back(f.get());
  }
  server.join();
  CAF_CHECK(first_closed_before_second);
  // One runs, one waits, the third is refused at once.
  CAF_CHECK(outs[2].verdict == probe_verdict::skipped);
  CAF_CHECK_EQUAL(outs[2].error, "prober overloaded: 1 probes waiting");
  CAF_CHECK_EQUAL(finished_at[2], 0);
  CAF_CHECK_EQUAL(outs[0].error, "timeout after 2s");
}

CAF_TEST_FIXTURE_SCOPE_END()
