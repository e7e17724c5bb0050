#define CAF_SUITE e2e_traffic
#include "support/dsl.hpp"

// Traffic end to end: the real troupe binary's built-in proxy in front of
// instances of the project's test backend. Waits follow the node's event
// stream or a load loop's own counters (a condition variable); nothing
// sleeps to wait for a state, and no case asserts a duration.

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <regex>
#include <sys/wait.h>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "persistence/redis.hpp"
#include "support/apps_e2e.hpp"
#include "support/byte_pattern.hpp"
#include "support/child.hpp"
#include "support/servers.hpp"

using namespace apps_e2e;

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bh = beast::http;
using tcp = net::ip::tcp;
using header_pairs = std::vector<std::pair<std::string, std::string>>;

/// The proxy's port, from its "proxy listening on 127.0.0.1:PORT" line.
uint16_t proxy_port(const e2e::daemon& node) {
  std::regex re("proxy listening on 127\\.0\\.0\\.1:([0-9]+)");
  auto line = node.wait_for_line(re);
  CAF_REQUIRE(line);
  std::smatch m;
  CAF_REQUIRE(std::regex_search(*line, m, re));
  return static_cast<uint16_t>(std::stoi(m[1]));
}

/// A keep-alive HTTP/1.1 client (one connection, requests in turn).
class client {
public:
  explicit client(uint16_t port, std::string host = "localhost")
      : stream_(ioc_), host_(std::move(host)) {
    stream_.connect(tcp::endpoint(net::ip::address_v4::loopback(), port));
  }

  bh::response<bh::string_body> send(bh::verb verb, const std::string& target,
                                     const header_pairs& headers = {}, std::string body = {}) {
    bh::request<bh::string_body> req{verb, target, 11};
    req.set(bh::field::host, host_);
    for (auto& [k, v] : headers)
      req.set(k, v);
    if (!body.empty() || verb == bh::verb::post) {
      req.body() = std::move(body);
      req.prepare_payload();
    }
    // Asynchronous under the hood: the stream's timeout bounds each step
    // (synchronous Asio calls would wait forever).
    beast::error_code ec;
    auto step = [&](auto&& start) {
      stream_.expires_after(std::chrono::seconds(30));
      start([&ec](beast::error_code e, size_t) { ec = e; });
      ioc_.restart();
      ioc_.run();
      if (ec)
        throw boost::system::system_error(ec);
    };
    step([&](auto done) { bh::async_write(stream_, req, done); });
    bh::response_parser<bh::string_body> p;
    p.body_limit(64u << 20);
    step([&](auto done) { bh::async_read(stream_, buf_, p, done); });
    return p.release();
  }

  bh::response<bh::string_body> get(const std::string& target, const header_pairs& headers = {}) {
    return send(bh::verb::get, target, headers);
  }

  beast::tcp_stream& stream() { return stream_; }
  beast::flat_buffer& buffer() { return buf_; }

private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::string host_;
};

/// Bounded load: `threads` keep-alive clients GET `target` in a loop until
/// stopped (or `max_each` requests each); every non-200 and every
/// transport error is a failure, kept with its reason.
class load {
public:
  load(uint16_t port, std::string target, int threads, int max_each = 20'000) {
    for (int i = 0; i < threads; ++i)
      threads_.emplace_back([this, port, target, max_each] { run(port, target, max_each); });
  }

  ~load() { stop(); }

  /// Waits until `n` requests succeeded in all (false after `timeout`).
  bool wait_ok(int n, e2e::duration timeout = 30s) {
    std::unique_lock<std::mutex> g{mtx_};
    return cv_.wait_for(g, timeout, [&] { return ok_ >= n || done_ == threads_.size(); }) &&
           ok_ >= n;
  }

  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }

  int ok() const {
    std::lock_guard<std::mutex> g{mtx_};
    return ok_;
  }

  std::vector<std::string> failures() const {
    std::lock_guard<std::mutex> g{mtx_};
    return failures_;
  }

  /// Requests sent again on a new connection after the old one closed.
  int retried() const {
    std::lock_guard<std::mutex> g{mtx_};
    return retried_;
  }

private:
  void run(uint16_t port, const std::string& target, int max_each) {
    std::unique_ptr<client> c;
    for (int i = 0; i < max_each && !stop_; ++i) {
      std::string failure;
      try {
        if (!c)
          c = std::make_unique<client>(port);
        bh::response<bh::string_body> res;
        try {
          res = c->get(target);
        } catch (const boost::system::system_error& e) {
          // A kept-alive connection the server closed as the request went
          // out (nginx's workers do on a reload): a client retries that
          // once on a new connection (RFC 9112, 9.3.1).
          if (e.code() != bh::error::end_of_stream && e.code() != net::error::connection_reset)
            throw;
          c = std::make_unique<client>(port);
          res = c->get(target);
          std::lock_guard<std::mutex> g{mtx_};
          ++retried_;
        }
        if (res.result_int() != 200)
          failure = std::to_string(res.result_int()) + " " + res.body();
        if (!res.keep_alive())
          c.reset();
      } catch (const std::exception& e) {
        failure = std::string("transport: ") + e.what();
        c.reset();
      }
      std::lock_guard<std::mutex> g{mtx_};
      if (failure.empty())
        ++ok_;
      else
        failures_.push_back(failure);
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> g{mtx_};
    ++done_;
    cv_.notify_all();
  }

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  int ok_ = 0;
  int retried_ = 0;
  size_t done_ = 0;
  std::vector<std::string> failures_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

/// The node's peak resident memory so far (VmHWM, bytes).
uint64_t peak_rss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0)
      return std::stoull(line.substr(6)) * 1024;
  return 0;
}

using test::fnv;
using test::fnv_basis;
using test::pattern_byte;

json spec_with(const std::string& name, int replicas, const json& expose) {
  auto spec = backend_spec(name, replicas);
  if (!expose.is_null())
    spec["spec"]["expose"] = expose;
  return spec;
}

/// The instance a backend's GET / answer names.
std::string instance_of(const bh::response<bh::string_body>& res) {
  auto j = json::parse(res.body(), nullptr, false);
  return j.is_object() ? j.value("instance", "") : "";
}

/// GET `target` until it answers 200 (at most 10 s): an app actor tells the
/// proxy of a ready instance right after announcing it, so the first
/// request after the event may still find none.
bh::response<bh::string_body> routed(client& c, const std::string& target) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  auto res = c.get(target);
  while (res.result_int() != 200 && std::chrono::steady_clock::now() < deadline)
    res = c.get(target);
  return res;
}

/// The pid of instance `id` from the app's status.
pid_t pid_of(uint16_t port, const std::string& app, const std::string& id) {
  auto inst = instances_of(status_of(port, app));
  return inst.count(id) ? inst[id]["pid"].get<pid_t>() : 0;
}

/// A node running app `name` (the test backend) with `replicas` ready
/// instances that its proxy routes to.
struct proxied_app {
  std::string name;
  reap_on_exit reap;
  e2e::daemon node;
  events ev;
  uint16_t proxy = 0;

  proxied_app(const std::string& base, int replicas, e2e::daemon_options opts = fast_options())
      : name(app_name(base)), reap{name}, node{std::move(opts)}, ev{node.port()} {
    register_and_up(node.port(), ev, backend_spec(name, replicas), static_cast<size_t>(replicas));
    proxy = proxy_port(node);
    client c{proxy};
    CAF_REQUIRE_EQUAL(routed(c, "/" + name + "/").result_int(), 200);
  }
};

/// Stops the load and checks that not one request failed.
void check_no_failure(load& l) {
  l.stop();
  auto failures = l.failures();
  for (auto& f : failures)
    std::cerr << "failed: " << f << "\n";
  CAF_CHECK_EQUAL(failures.size(), 0u);
  CAF_MESSAGE(l.ok() << " requests, none failed (" << l.retried()
                     << " sent again on a new connection after a keep-alive close)");
}

} // namespace

CAF_TEST(three ready instances share the requests and see the forwarded headers) {
  proxied_app a{"spread", 3};
  auto& name = a.name;
  auto& node = a.node;
  client c{a.proxy};
  std::map<std::string, int> by_instance;
  for (int i = 0; i < 3000; ++i) {
    auto res = c.get("/" + name + "/");
    CAF_REQUIRE_EQUAL(res.result_int(), 200);
    ++by_instance[instance_of(res)];
  }
  CAF_CHECK_EQUAL(by_instance.size(), 3u);
  for (auto& [id, n] : by_instance) {
    CAF_MESSAGE(id << ": " << n << " of 3000");
    CAF_CHECK(id.rfind(name + "-", 0) == 0);
    CAF_CHECK_LESS_OR_EQUAL(n, 1500);
  }
  // The backend sees the client's request id, X-Forwarded-*, its own path.
  auto res = c.get("/" + name + "/headers", {{"X-Request-ID", "trace-abc-123"}});
  CAF_REQUIRE_EQUAL(res.result_int(), 200);
  auto seen = json::parse(res.body());
  CAF_CHECK_EQUAL(seen.value("X-Request-ID", ""), "trace-abc-123");
  CAF_CHECK_EQUAL(seen.value("X-Forwarded-For", ""), "127.0.0.1");
  CAF_CHECK_EQUAL(seen.value("X-Forwarded-Proto", ""), "http");
  CAF_CHECK_EQUAL(seen.value("X-Forwarded-Host", ""), "localhost");
  CAF_CHECK_EQUAL(std::string(res["X-Request-ID"]), "trace-abc-123");
  // Without one, a fresh id (the same the client gets back).
  res = c.get("/" + name + "/headers");
  seen = json::parse(res.body());
  auto minted = seen.value("X-Request-ID", "");
  CAF_CHECK_EQUAL(minted.size(), 32u);
  CAF_CHECK_EQUAL(std::string(res["X-Request-ID"]), minted);
  // Hop-by-hop fields stay on their hop.
  res = c.get("/" + name + "/headers", {{"Connection", "keep-alive, X-Secret-Hop"},
                                        {"X-Secret-Hop", "1"},
                                        {"Proxy-Authorization", "Basic eDp5"}});
  seen = json::parse(res.body());
  CAF_CHECK(!seen.contains("X-Secret-Hop"));
  CAF_CHECK(!seen.contains("Proxy-Authorization"));
  // Pipelined requests are answered in order: the slow first one first.
  {
    std::string batch;
    for (auto* target : {"/slow?ms=200", "/", "/headers"})
      batch += "GET /" + name + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
    net::write(c.stream().socket(), net::buffer(batch));
    std::vector<std::string> bodies;
    for (int i = 0; i < 3; ++i) {
      bh::response<bh::string_body> r;
      bh::read(c.stream(), c.buffer(), r);
      CAF_CHECK_EQUAL(r.result_int(), 200);
      bodies.push_back(r.body());
    }
    CAF_CHECK_EQUAL(bodies[0], "slept 200 ms\n");
    CAF_CHECK(bodies[1].find("\"instance\"") != std::string::npos);
    CAF_CHECK(bodies[2].find("X-Forwarded-For") != std::string::npos);
  }
  // The proxy's counts reach the app's metrics (the registry drains them
  // on its tick: polled with a bound).
  json traffic;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = e2e::get(node.port(), "/apps/" + name + "/metrics");
    CAF_REQUIRE_EQUAL(m.status, 200);
    traffic = m.json()["traffic"];
    if (traffic.is_object() && traffic["requests_total"].get<double>() >= 3006)
      break;
    std::this_thread::sleep_for(100ms);
  }
  CAF_REQUIRE(traffic.is_object());
  CAF_CHECK_GREATER_OR_EQUAL(traffic["requests_total"].get<double>(), 3006);
  CAF_CHECK_EQUAL(traffic["errors_total"].get<double>(), 0);
  CAF_CHECK_EQUAL(traffic["instances"].size(), 3u);
  CAF_CHECK(traffic["last_request"].is_number());
  auto w = traffic["windows"]["1m"];
  CAF_CHECK_GREATER(w["rps"].get<double>(), 0);
  CAF_CHECK_EQUAL(w["error_rate"].get<double>(), 0);
  CAF_CHECK(w["latency_seconds"]["p99"].is_number());
  auto prom = e2e::get(node.port(), "/metrics").body;
  CAF_CHECK(prom.find("troupe_app_requests_total{app=\"" + name + "\",status=\"200\"}") !=
            std::string::npos);
  CAF_CHECK(prom.find("troupe_app_request_duration_seconds_count{app=\"" + name + "\"}") !=
            std::string::npos);
  CAF_CHECK(prom.find("troupe_app_active_connections{app=\"" + name + "\"}") != std::string::npos);
}

CAF_TEST(an instance killed under load fails no idempotent request) {
  proxied_app a{"failover", 3};
  auto& name = a.name;
  auto& ev = a.ev;
  load l{a.proxy, "/" + name + "/slow?ms=5", 4};
  CAF_REQUIRE(l.wait_ok(300));
  auto victim = *ev.ready().begin();
  auto pid = pid_of(a.node.port(), name, victim);
  CAF_REQUIRE_GREATER(pid, 0);
  CAF_REQUIRE_EQUAL(::kill(pid, SIGKILL), 0);
  CAF_CHECK(ev.next(name, [&](const json& j) {
    return j["type"] == "instance.exited" && j["data"]["instance"] == victim;
  }));
  CAF_CHECK(ev.next(name, [&](const json& j) {
    return j["type"] == "instance.ready" && j["data"]["instance"] == victim;
  }));
  auto before = l.ok();
  CAF_CHECK(l.wait_ok(before + 300));
  check_no_failure(l);
}

CAF_TEST(scaling in under load drains and fails no request) {
  proxied_app a{"drain", 3};
  auto& name = a.name;
  auto& node = a.node;
  auto& ev = a.ev;
  load l{a.proxy, "/" + name + "/slow?ms=100", 6};
  CAF_REQUIRE(l.wait_ok(60));
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 1}}).status,
                    202);
  int stopped = 0;
  CAF_CHECK(ev.next(
      name, [&](const json& j) { return j["type"] == "instance.stopped" && ++stopped == 2; }));
  auto before = l.ok();
  CAF_CHECK(l.wait_ok(before + 60));
  check_no_failure(l);
  auto after = status_of(node.port(), name);
  CAF_CHECK_EQUAL(after["ready"], 1);
}

CAF_TEST(a 200 MiB upload and download stream through with flat memory) {
  proxied_app a{"bulk", 1};
  auto& name = a.name;
  auto& node = a.node;
  constexpr uint64_t total = 200ull << 20;
  // Warm up one exchange each way, then take the peak as the baseline.
  client c{a.proxy};
  CAF_REQUIRE_EQUAL(c.get("/" + name + "/download?mb=1").result_int(), 200);
  auto base = peak_rss(node.pid());
  CAF_REQUIRE_GREATER(base, 0u);
  {
    // Upload: a Content-Length body written piecewise.
    std::string head = "POST /" + name + "/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                       std::to_string(total) + "\r\n\r\n";
    net::write(c.stream().socket(), net::buffer(head));
    std::vector<char> piece(1 << 20);
    uint64_t hash = fnv_basis;
    for (uint64_t at = 0; at < total; at += piece.size()) {
      for (size_t i = 0; i < piece.size(); ++i)
        piece[i] = pattern_byte(at + i);
      hash = fnv(hash, piece.data(), piece.size());
      net::write(c.stream().socket(), net::buffer(piece));
    }
    bh::response<bh::string_body> r;
    bh::read(c.stream(), c.buffer(), r);
    CAF_REQUIRE_EQUAL(r.result_int(), 200);
    auto j = json::parse(r.body());
    CAF_CHECK_EQUAL(j["bytes"].get<uint64_t>(), total);
    CAF_CHECK_EQUAL(j["fnv"].get<std::string>(), std::to_string(hash));
  }
  {
    // Download: read through a fixed buffer, checked byte for byte.
    bh::request<bh::empty_body> req{bh::verb::get, "/" + name + "/download?mb=200", 11};
    req.set(bh::field::host, "localhost");
    bh::write(c.stream(), req);
    bh::response_parser<bh::buffer_body> p;
    p.body_limit(boost::none);
    bh::read_header(c.stream(), c.buffer(), p);
    CAF_REQUIRE_EQUAL(p.get().result_int(), 200);
    std::vector<char> buf(1 << 16);
    uint64_t got = 0;
    uint64_t hash = fnv_basis;
    uint64_t want = fnv_basis;
    while (!p.is_done()) {
      p.get().body().data = buf.data();
      p.get().body().size = buf.size();
      beast::error_code ec;
      bh::read(c.stream(), c.buffer(), p, ec);
      if (ec == bh::error::need_buffer)
        ec = {};
      CAF_REQUIRE(!ec);
      auto n = buf.size() - p.get().body().size;
      hash = fnv(hash, buf.data(), n);
      for (size_t i = 0; i < n; ++i) {
        char b = pattern_byte(got + i);
        want = fnv(want, &b, 1);
      }
      got += n;
    }
    CAF_CHECK_EQUAL(got, total);
    CAF_CHECK_EQUAL(hash, want);
  }
  // 400 MiB went through; the proxy holds a fixed buffer per direction.
  auto grown = peak_rss(node.pid()) - base;
  CAF_MESSAGE("peak RSS grew by " << grown / 1024 << " KiB moving 400 MiB");
  if (e2e::heap_bounds_checked)
    CAF_CHECK_LESS(grown, 32ull << 20);
}

CAF_TEST(server sent events arrive unbuffered and websockets are tunnelled) {
  proxied_app a{"stream", 1};
  auto& name = a.name;
  auto pp = a.proxy;
  {
    // Event 1 must arrive while the backend still holds event 2 back: a
    // buffering proxy would block this read until the stream ends.
    client c{pp};
    bh::request<bh::empty_body> req{bh::verb::get, "/" + name + "/sse", 11};
    req.set(bh::field::host, "localhost");
    bh::write(c.stream(), req);
    bh::response_parser<bh::buffer_body> p;
    p.body_limit(boost::none);
    c.stream().expires_after(20s);
    bh::read_header(c.stream(), c.buffer(), p);
    CAF_REQUIRE_EQUAL(p.get().result_int(), 200);
    CAF_CHECK_EQUAL(std::string(p.get()[bh::field::content_type]), "text/event-stream");
    std::string seen;
    std::vector<char> buf(4096);
    auto read_until = [&](const std::string& needle) {
      while (seen.find(needle) == std::string::npos && !p.is_done()) {
        p.get().body().data = buf.data();
        p.get().body().size = buf.size();
        beast::error_code ec;
        bh::read_some(c.stream(), c.buffer(), p, ec);
        if (ec == bh::error::need_buffer)
          ec = {};
        if (ec)
          return false;
        seen.append(buf.data(), buf.size() - p.get().body().size);
      }
      return seen.find(needle) != std::string::npos;
    };
    CAF_REQUIRE(read_until("\n\n"));
    auto data = seen.substr(seen.find("data: ") + 6);
    auto port = json::parse(data.substr(0, data.find('\n')))["port"].get<uint16_t>();
    // Releases event 2 at the instance itself (not through the proxy).
    auto rel = e2e::request(port, "POST", "/control/release", {{"Authorization", ""}});
    CAF_CHECK_EQUAL(rel.status, 200);
    CAF_CHECK(read_until("data: released"));
  }
  {
    net::io_context ioc;
    beast::websocket::stream<beast::tcp_stream> ws{ioc};
    beast::get_lowest_layer(ws).connect(tcp::endpoint(net::ip::address_v4::loopback(), pp));
    beast::get_lowest_layer(ws).expires_after(20s);
    ws.handshake("localhost", "/" + name + "/ws");
    for (std::string msg : {std::string("hello through the proxy"), std::string(100'000, 'w')}) {
      ws.write(net::buffer(msg));
      beast::flat_buffer b;
      ws.read(b);
      CAF_CHECK_EQUAL(beast::buffers_to_string(b.data()), msg);
    }
    ws.close(beast::websocket::close_code::normal);
  }
}

CAF_TEST(routes by host path prefix and own port and answers 503 without ready instances) {
  auto by_host = app_name("hosted");
  auto by_path = app_name("pathed");
  auto by_port = app_name("ported");
  auto unready = app_name("unready");
  reap_on_exit r1{by_host}, r2{by_path}, r3{by_port}, r4{unready};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  auto own = test::free_loopback_port();
  register_and_up(node.port(), ev, spec_with(by_host, 1, {{"host", "*.apps.example.test"}}), 1);
  register_and_up(node.port(), ev,
                  spec_with(by_path, 1, {{"pathPrefix", "/api"}, {"stripPrefix", true}}), 1);
  register_and_up(node.port(), ev, spec_with(by_port, 1, {{"port", own}}), 1);
  auto pp = proxy_port(node);
  {
    client c{pp, "shop.apps.example.test"};
    CAF_CHECK(instance_of(routed(c, "/")).rfind(by_host + "-", 0) == 0);
  }
  {
    client c{pp};
    auto res = routed(c, "/api/");
    CAF_REQUIRE_EQUAL(res.result_int(), 200);
    CAF_CHECK(instance_of(res).rfind(by_path + "-", 0) == 0);
    // The prefix is stripped: the backend's /headers answers /api/headers.
    CAF_CHECK(c.get("/api/headers").body().find("X-Forwarded-For") != std::string::npos);
    // An app exposed otherwise is not at /{name}/.
    CAF_CHECK_EQUAL(c.get("/" + by_port + "/").result_int(), 404);
    auto none = c.get("/no-such-app/");
    CAF_CHECK_EQUAL(none.result_int(), 404);
    auto why = json::parse(none.body());
    CAF_CHECK_EQUAL(why["error"]["code"], "no_route");
  }
  {
    // The app's own listener opens when the proxy learns of the app, just
    // after the ready event: connecting is retried with a bound.
    std::unique_ptr<client> c;
    auto until = std::chrono::steady_clock::now() + 10s;
    while (!c && std::chrono::steady_clock::now() < until) {
      try {
        c = std::make_unique<client>(own);
      } catch (const std::exception&) {
        std::this_thread::sleep_for(20ms);
      }
    }
    CAF_REQUIRE(c);
    CAF_CHECK(instance_of(routed(*c, "/")).rfind(by_port + "-", 0) == 0);
  }
  // A rule another app holds is refused at registration, naming the field.
  auto clash = post_json(node.port(), "/apps/register",
                         spec_with(app_name("clash"), 1, {{"host", "*.apps.example.test"}}));
  CAF_CHECK_EQUAL(clash.status, 400);
  CAF_CHECK(clash.body.find("spec.expose.pathPrefix") != std::string::npos);
  clash =
      post_json(node.port(), "/apps/register", spec_with(app_name("clash"), 1, {{"port", own}}));
  CAF_CHECK_EQUAL(clash.status, 400);
  CAF_CHECK(clash.body.find("spec.expose.port") != std::string::npos);
  // An app whose instance never becomes ready: 503 with Retry-After, JSON.
  auto spec = backend_spec(unready, 1);
  spec["spec"]["health"]["httpGet"]["path"] = "/never-healthy";
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/register", spec).status, 201);
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + unready + "/up").status, 202);
  CAF_REQUIRE(ev.next_of(unready, "instance.started"));
  client c{pp};
  auto deadline = std::chrono::steady_clock::now() + 20s;
  bh::response<bh::string_body> res;
  // The app actor tells the proxy right after the instance's event: polled.
  do
    res = c.get("/" + unready + "/");
  while (res.result_int() == 404 && std::chrono::steady_clock::now() < deadline);
  CAF_CHECK_EQUAL(res.result_int(), 503);
  CAF_CHECK_EQUAL(std::string(res[bh::field::retry_after]), "1");
  CAF_CHECK_EQUAL(std::string(res[bh::field::content_type]), "application/json");
  auto why = json::parse(res.body());
  CAF_CHECK_EQUAL(why["error"]["code"], "no_ready_instance");
}

CAF_TEST(a slow instance is a 504 and a malformed answer a 502) {
  auto opts = fast_options();
  opts.env.emplace_back("TROUPE_PROXY__UPSTREAM_TIMEOUT", "1s");
  proxied_app a{"faulty", 1, opts};
  auto& name = a.name;
  auto& node = a.node;
  client c{a.proxy};
  auto slow = c.get("/" + name + "/slow?ms=5000", {{"X-Request-ID", "slow-1"}});
  CAF_CHECK_EQUAL(slow.result_int(), 504);
  auto why = json::parse(slow.body());
  CAF_CHECK_EQUAL(why["error"]["code"], "upstream_timeout");
  CAF_CHECK_EQUAL(std::string(slow["X-Request-ID"]), "slow-1");
  // The proxy's log line of it carries the request id.
  CAF_CHECK(node.wait_for_line(
      [](const std::string& l) { return l.find("slow-1") != std::string::npos; }, 10s));
  // The connection stays usable; a malformed response is a 502.
  auto bad = c.get("/" + name + "/garbage");
  CAF_CHECK_EQUAL(bad.result_int(), 502);
  why = json::parse(bad.body());
  CAF_CHECK_EQUAL(why["error"]["code"], "bad_gateway");
  CAF_CHECK_EQUAL(c.get("/" + name + "/").result_int(), 200);
}

namespace {

/// Scale to zero: an autoscaled app with minReplicas 0 that starts at zero
/// and goes back after `idle` seconds without a request.
json zero_spec(const std::string& name, int idle, const json& activation = json::object()) {
  auto spec = backend_spec(name, 0);
  json policy{{"mode", "auto"},
              {"evaluationSeconds", 1},
              {"cooldownSeconds", 1},
              {"idleSeconds", idle},
              {"http", {{"targetRPSPerReplica", 1000}, {"windowSeconds", 1}}}};
  if (!activation.empty())
    policy["activation"] = activation;
  spec["spec"]["scaling"] = {
      {"minReplicas", 0}, {"maxReplicas", 2}, {"replicas", 0}, {"policy", policy}};
  return spec;
}

/// The requests the proxy holds for `app` now (GET /apps/{name}/metrics).
uint64_t pending_of(uint16_t port, const std::string& app) {
  auto m = e2e::get(port, "/apps/" + app + "/metrics").json();
  if (!m.contains("traffic") || !m["traffic"].is_object())
    return 0;
  return m["traffic"].value("pending", uint64_t{0});
}

/// Polls until the proxy holds `n` requests for `app` (false after 10 s).
bool until_pending(uint16_t port, const std::string& app, uint64_t n) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline)
    if (pending_of(port, app) == n)
      return true;
  return false;
}

/// `n` GETs of `app` through the proxy on connections of their own, each
/// sent once the one before is held.
std::vector<std::future<bh::response<bh::string_body>>> held_gets(uint16_t proxy, uint16_t port,
                                                                  const std::string& app, int n) {
  auto before = pending_of(port, app);
  std::vector<std::future<bh::response<bh::string_body>>> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(std::async(std::launch::async, [proxy, app] {
      client c{proxy};
      return c.get("/" + app + "/");
    }));
    CAF_REQUIRE(until_pending(port, app, before + static_cast<uint64_t>(i + 1)));
  }
  return out;
}

/// An app at zero driven by `queue` alone (no request rate; idle far away;
/// the http block holds the 1 s hysteresis window, its latency bound never
/// applies), up to 3 replicas, scaling in without stabilization.
json queue_spec(const std::string& name, const json& queue) {
  auto spec = zero_spec(name, 3600);
  auto& policy = spec["spec"]["scaling"]["policy"];
  spec["spec"]["scaling"]["maxReplicas"] = 3;
  policy["http"] = {{"maxP95LatencyMs", 60000}, {"windowSeconds", 1}};
  policy["queue"] = queue;
  policy["behavior"] = {
      {"scaleDown",
       {{"stabilizationWindowSeconds", 0},
        {"policies", json::array({{{"type", "Pods"}, {"value", 3}, {"periodSeconds", 1}}})}}}};
  return spec;
}

/// The app's next app.scaled event as "rule metric from->to".
std::string next_scaled(events& ev, const std::string& app) {
  auto j = ev.next(
      app, [&](const json& x) { return x["type"] == "app.scaled"; }, 30s);
  CAF_REQUIRE(j);
  auto d = (*j)["data"];
  CAF_MESSAGE("scaled: " << d.dump());
  return d["rule"].get<std::string>() + " " + d["metric"].get<std::string>() + " " +
         std::to_string(d["from"].get<int>()) + "->" + std::to_string(d["to"].get<int>());
}

/// The app's replica changes in /apps/{name}/scaling, oldest first, as
/// "rule metric from->to".
std::vector<std::string> scaling_changes(uint16_t port, const std::string& app) {
  auto history = e2e::get(port, "/apps/" + app + "/scaling?limit=1000").json();
  std::vector<std::string> out;
  for (auto& d : history["decisions"])
    if (d["from"] != d["to"])
      out.insert(out.begin(), d["rule"].get<std::string>() + " " + d.value("metric", "") + " " +
                                  std::to_string(d["from"].get<int>()) + "->" +
                                  std::to_string(d["to"].get<int>()));
  return out;
}

} // namespace

CAF_TEST(nginx mode renders validates and reloads the real nginx) {
  e2e::scratch_dir dir{"troupe-e2e-nginx"};
  auto d = dir.path();
  auto conf_dir = d + "/conf.d";
  std::filesystem::create_directories(conf_dir);
  std::ofstream(conf_dir + "/troupe.conf") << "";
  auto nginx_port = test::free_loopback_port();
  auto main_conf = d + "/nginx.conf";
  std::ofstream(main_conf) << "worker_processes 1;\ndaemon off;\npid " << d
                           << "/nginx.pid;\nerror_log " << d << "/error.log warn;\n"
                           << "events { worker_connections 1024; }\nhttp {\n  access_log off;\n"
                           << "  client_body_temp_path " << d << "/cb;\n  proxy_temp_path " << d
                           << "/px;\n  fastcgi_temp_path " << d << "/fc;\n  uwsgi_temp_path " << d
                           << "/uw;\n  scgi_temp_path " << d << "/sc;\n  include " << conf_dir
                           << "/troupe.conf;\n}\n";
  // The template troupe renders from: a copy the test may break later.
  auto tmpl = d + "/app.conf.in";
  std::filesystem::copy_file(
      std::string{std::getenv("TROUPE_SOURCE_DIR")} + "/configs/nginx-app.conf.in", tmpl);
  std::string error;
  auto nginx_pid =
      test::launch_child({"/usr/sbin/nginx", "-c", main_conf, "-p", d}, environ, d, 2, 2, &error);
  CAF_REQUIRE_GREATER(nginx_pid, 0);
  struct stop_nginx {
    pid_t pid;
    ~stop_nginx() {
      // Fast shutdown (TERM) of master and workers, SIGKILL after 10 s.
      ::kill(-pid, SIGTERM);
      auto deadline = std::chrono::steady_clock::now() + 10s;
      while (::waitpid(pid, nullptr, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(-pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
          break;
        }
        std::this_thread::sleep_for(10ms);
      }
    }
  } stop{nginx_pid};

  auto opts = fast_options();
  opts.args = {"--proxy-listen", "127.0.0.1:" + std::to_string(nginx_port)};
  opts.env.emplace_back("TROUPE_PROXY__MODE", "nginx");
  opts.env.emplace_back("TROUPE_PROXY__NGINX__CONF_DIR", conf_dir);
  opts.env.emplace_back("TROUPE_PROXY__NGINX__MAIN_CONF", main_conf);
  opts.env.emplace_back("TROUPE_PROXY__NGINX__TEMPLATE", tmpl);
  opts.env.emplace_back("TROUPE_PROXY__NGINX__MIN_RELOAD_INTERVAL", "200ms");
  auto status_port = test::free_loopback_port();
  opts.env.emplace_back("TROUPE_PROXY__NGINX__STATUS_LISTEN",
                        "127.0.0.1:" + std::to_string(status_port));
  auto name = app_name("viaginx");
  reap_on_exit reap{name};
  e2e::daemon node{opts};
  events ev{node.port()};
  register_and_up(node.port(), ev, backend_spec(name, 3), 3);
  // nginx listens once the first reload is through, and routes to all
  // three once the last ready instance is in. A reload is asynchronous (the
  // old worker may take a connection for a moment): wait, with a bound,
  // until 20 fresh connections in a row are answered by all three.
  std::map<std::string, int> by_instance;
  int steady = 0;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (steady < 20 && std::chrono::steady_clock::now() < deadline) {
    try {
      client c{nginx_port};
      std::set<std::string> seen;
      for (int i = 0; i < 12; ++i) {
        auto res = c.get("/" + name + "/");
        if (res.result_int() == 200)
          seen.insert(instance_of(res));
      }
      steady = seen.size() == 3 ? steady + 1 : 0;
    } catch (const std::exception&) {
      steady = 0;
    }
  }
  CAF_REQUIRE_EQUAL(steady, 20);
  by_instance.clear();
  {
    client c{nginx_port};
    for (int i = 0; i < 600; ++i) {
      auto res = c.get("/" + name + "/");
      if (res.result_int() != 200)
        CAF_FAIL("through nginx: " << res.result_int() << " " << res.body());
      ++by_instance[instance_of(res)];
    }
  }
  for (auto& [id, n] : by_instance) {
    CAF_MESSAGE(id << ": " << n << " of 600 through nginx");
    CAF_CHECK_LESS_OR_EQUAL(n, 300);
  }
  // Request metrics from nginx's JSON access log (troupe reads it each
  // second), connection gauges from its stub_status: polled with a bound.
  json traffic;
  CAF_CHECK(e2e::poll_until(
      [&] {
        traffic = e2e::get(node.port(), "/apps/" + name + "/metrics").json()["traffic"];
        return traffic.is_object() && traffic["requests_total"].get<double>() >= 600;
      },
      20s, 100ms));
  CAF_REQUIRE(traffic.is_object());
  CAF_CHECK_GREATER_OR_EQUAL(traffic["windows"]["1m"]["requests"].get<double>(), 600);
  CAF_CHECK(traffic["windows"]["1m"]["latency_seconds"]["p99"].is_number());
  CAF_CHECK(traffic["last_request"].is_number());
  CAF_CHECK(e2e::poll_until(
      [&] {
        auto prom = e2e::get(node.port(), "/metrics").body;
        return prom.find("troupe_app_requests_total{app=\"" + name + "\",status=\"200\"}") !=
                   std::string::npos &&
               prom.find("troupe_proxy_nginx_connections{state=\"active\"}") != std::string::npos;
      },
      20s, 100ms));
  // A request in flight on each instance (least_conn spreads them), then
  // scale 3 -> 1: the drained instances get their SIGTERM only once nginx's
  // workers from before the reload have finished those requests.
  {
    std::vector<std::future<int>> slow;
    for (int i = 0; i < 3; ++i) {
      slow.push_back(std::async(std::launch::async, [&] {
        client c{nginx_port};
        return static_cast<int>(c.get("/" + name + "/slow?ms=2500").result_int());
      }));
      // Instances busy with a slow request (the info request counts itself).
      CAF_REQUIRE(e2e::poll_until([&] {
        int busy = 0;
        auto status = status_of(node.port(), name);
        for (auto& x : status["instances"])
          if (backend_info(static_cast<uint16_t>(x["port"].get<int>())).value("in_flight", 0) > 1)
            ++busy;
        return busy == i + 1;
      }));
    }
    CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 1}}).status,
                      202);
    for (auto& f : slow)
      CAF_CHECK_EQUAL(f.get(), 200);
    std::set<std::string> stopped;
    CAF_REQUIRE(ev.next(name, [&](const json& j) {
      ev.track(j);
      if (j["type"] == "instance.stopped")
        stopped.insert(j["data"]["instance"].get<std::string>());
      return stopped.size() == 2;
    }));
    // Each drained backend logged how many requests it still had when its
    // SIGTERM came: none.
    for (auto& id : stopped) {
      std::string said;
      CAF_CHECK(e2e::poll_until([&] {
        for (auto& l : log_lines(node.port(), "/apps/" + name + "/logs?limit=1000"))
          if (l["labels"].value("instance", "") == id &&
              l.value("line", "").find("signal 15: draining") != std::string::npos)
            said = l.value("line", "");
        return !said.empty();
      }));
      CAF_MESSAGE(id << ": " << said);
      CAF_CHECK(said.find("draining 0 requests") != std::string::npos);
    }
    CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 3}}).status,
                      202);
    CAF_REQUIRE(ev.until_ready(name, 3));
  }
  // An instance killed under load: nginx retries the idempotent requests.
  {
    load l{nginx_port, "/" + name + "/slow?ms=5", 4};
    CAF_REQUIRE(l.wait_ok(200));
    auto victim = *ev.ready().begin();
    auto pid = pid_of(node.port(), name, victim);
    CAF_REQUIRE_GREATER(pid, 0);
    CAF_REQUIRE_EQUAL(::kill(pid, SIGKILL), 0);
    CAF_CHECK(ev.next(name, [&](const json& j) {
      return j["type"] == "instance.ready" && j["data"]["instance"] == victim;
    }));
    auto before = l.ok();
    CAF_CHECK(l.wait_ok(before + 200));
    check_no_failure(l);
  }
  // A template edit nginx refuses: rejected, the old configuration serves.
  auto live = std::string{};
  {
    std::ifstream in(conf_dir + "/troupe.conf");
    std::stringstream buf;
    buf << in.rdbuf();
    live = buf.str();
  }
  std::ofstream(tmpl, std::ios::app) << "    this_is_no_directive on;\n";
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 2}}).status,
                    202);
  auto rejected = ev.next_of(name, "proxy.config_rejected");
  CAF_REQUIRE(rejected);
  auto reason = (*rejected)["data"]["reason"].get<std::string>();
  CAF_MESSAGE("rejected: " << reason);
  CAF_CHECK(reason.find("this_is_no_directive") != std::string::npos);
  {
    std::ifstream in(conf_dir + "/troupe.conf");
    std::stringstream buf;
    buf << in.rdbuf();
    CAF_CHECK_EQUAL(buf.str(), live);
  }
  {
    client c{nginx_port};
    CAF_CHECK_EQUAL(c.get("/" + name + "/").result_int(), 200);
  }
  // The template mended (the next change reloads with it).
  std::filesystem::copy_file(std::string{std::getenv("TROUPE_SOURCE_DIR")} +
                                 "/configs/nginx-app.conf.in",
                             tmpl, std::filesystem::copy_options::overwrite_existing);
  // An app at zero in nginx mode: nginx cannot hold a request; it answers
  // 503 with Retry-After, and that 503 in its access log wakes the app.
  {
    auto zero = app_name("ngzero");
    reap_on_exit zero_reap{zero};
    CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/register", zero_spec(zero, 3600)).status, 201);
    CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + zero + "/up").status, 202);
    // One connection per request: a reload closes nginx's kept-alive ones.
    auto get = [&] { return client{nginx_port}.get("/" + zero + "/"); };
    // nginx's own 404 until a reload has the app's location.
    auto until = std::chrono::steady_clock::now() + 10s;
    auto res = get();
    while (res.result_int() == 404 && std::chrono::steady_clock::now() < until)
      res = get();
    CAF_CHECK_EQUAL(res.result_int(), 503);
    CAF_CHECK_EQUAL(res[bh::field::retry_after], "1");
    auto woke = ev.next(
        zero, [](const json& j) { return j["type"] == "app.scaled" && j["data"]["to"] == 1; }, 30s);
    CAF_REQUIRE(woke);
    CAF_CHECK_EQUAL((*woke)["data"]["metric"], "pending_requests");
    until = std::chrono::steady_clock::now() + 30s;
    while (res.result_int() != 200 && std::chrono::steady_clock::now() < until)
      res = get();
    CAF_CHECK_EQUAL(res.result_int(), 200);
  }
}

CAF_TEST(the autoscaler follows the load through the proxy and explains each step) {
  auto name = app_name("auto");
  reap_on_exit reap{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  auto spec = backend_spec(name, 1);
  json scale_down{
      {"stabilizationWindowSeconds", 0},
      {"policies", json::array({{{"type", "Pods"}, {"value", 1}, {"periodSeconds", 1}}})}};
  spec["spec"]["scaling"] = {{"minReplicas", 1},
                             {"maxReplicas", 3},
                             {"replicas", 1},
                             {"policy",
                              {{"mode", "auto"},
                               {"evaluationSeconds", 1},
                               {"cooldownSeconds", 1},
                               {"http", {{"targetRPSPerReplica", 20}, {"windowSeconds", 2}}},
                               {"behavior", {{"scaleDown", scale_down}}}}}};
  register_and_up(node.port(), ev, spec, 1);
  auto proxy = proxy_port(node);
  {
    client c{proxy};
    CAF_REQUIRE_EQUAL(routed(c, "/" + name + "/").result_int(), 200);
  }
  // A load far above 20 requests per second and replica: out to the maximum
  // once it has lasted windowSeconds, without a failed request.
  {
    // Paced (20 ms per request, 2 clients: about 100 per second), so it
    // lasts well past the window within the load's bound.
    load l{proxy, "/" + name + "/slow?ms=20", 2};
    CAF_REQUIRE(l.wait_ok(20));
    auto out = ev.next(
        name,
        [&](const json& j) {
          ev.track(j);
          return j["type"] == "app.scaled";
        },
        30s);
    if (!out)
      CAF_MESSAGE("decisions: " << e2e::get(node.port(), "/apps/" + name + "/scaling").body);
    CAF_REQUIRE(out);
    auto data = (*out)["data"];
    CAF_MESSAGE("scaled: " << data.dump());
    CAF_CHECK_EQUAL(data["rule"], "scale_out");
    CAF_CHECK_EQUAL(data["metric"], "rps");
    CAF_CHECK_EQUAL(data["from"], 1);
    CAF_CHECK_EQUAL(data["to"], 3);
    CAF_CHECK_EQUAL(data["target"].get<double>(), 20.0);
    CAF_CHECK_GREATER(data["observed"].get<double>(), 60.0);
    CAF_REQUIRE(ev.until_ready(name, 3));
    check_no_failure(l);
  }
  // No load: back to the minimum one replica at a time (Pods 1 per second).
  std::vector<int> steps;
  CAF_REQUIRE(ev.next(
      name,
      [&](const json& j) {
        ev.track(j);
        if (j["type"] == "app.scaled") {
          CAF_CHECK_EQUAL(j["data"]["rule"], "scale_in");
          steps.push_back(j["data"]["to"].get<int>());
        }
        return !steps.empty() && steps.back() == 1;
      },
      60s));
  CAF_CHECK_EQUAL(steps, (std::vector<int>{2, 1}));
  // The history explains each step, newest first.
  auto history = e2e::get(node.port(), "/apps/" + name + "/scaling?limit=1000").json();
  std::vector<std::string> changes;
  for (auto& d : history["decisions"])
    if (d["from"] != d["to"])
      changes.push_back(d["rule"].get<std::string>() + " " + std::to_string(d["from"].get<int>()) +
                        "->" + std::to_string(d["to"].get<int>()));
  CAF_CHECK_EQUAL(changes, (std::vector<std::string>{"scale_in 2->1", "scale_in 3->2",
                                                     "scale_out 1->3", "manual 0->1"}));
  for (auto& d : history["decisions"])
    if (d["rule"] != "manual") {
      CAF_CHECK_EQUAL(d["metric"], "rps");
      CAF_CHECK(!d["reason"].get<std::string>().empty());
    }
  stop_node(node, name);
}

CAF_TEST(an app at zero answers held requests once an instance is ready and goes back when idle) {
  auto name = app_name("zero");
  reap_on_exit reap{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  auto spec = zero_spec(name, 2);
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/register", spec).status, 201);
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + name + "/up").status, 202);
  auto proxy = proxy_port(node);
  CAF_REQUIRE(e2e::get(node.port(), "/apps/" + name + "/status").json()["desired"] == 0);
  // Held while the app starts: an upload larger than the relay buffer (part
  // held by the proxy, the rest waiting in the socket) and two GETs.
  constexpr size_t upload_bytes = 200 * 1024;
  std::string body(upload_bytes, '\0');
  for (size_t i = 0; i < upload_bytes; ++i)
    body[i] = static_cast<char>(pattern_byte(i));
  auto want_fnv = fnv(fnv_basis, body.data(), body.size());
  auto upload = std::async(std::launch::async, [&] {
    client c{proxy};
    return c.send(bh::verb::post, "/" + name + "/upload", {}, body);
  });
  CAF_REQUIRE(until_pending(node.port(), name, 1));
  auto gets = held_gets(proxy, node.port(), name, 2);
  auto up = upload.get();
  CAF_CHECK_EQUAL(up.result_int(), 200);
  CAF_CHECK_EQUAL(up["X-Troupe-Cold-Start"], "1");
  auto got = json::parse(up.body(), nullptr, false);
  CAF_CHECK_EQUAL(got.value("bytes", uint64_t{0}), upload_bytes);
  CAF_CHECK_EQUAL(got.value("fnv", std::string{}), std::to_string(want_fnv));
  for (auto& g : gets) {
    auto res = g.get();
    CAF_CHECK_EQUAL(res.result_int(), 200);
    CAF_CHECK_EQUAL(res["X-Troupe-Cold-Start"], "1");
  }
  {
    client c{proxy};
    auto warm = c.get("/" + name + "/");
    CAF_CHECK_EQUAL(warm.result_int(), 200);
    CAF_CHECK(warm.find("X-Troupe-Cold-Start") == warm.end());
  }
  // No request for idleSeconds: back to zero.
  auto idle = ev.next(
      name, [](const json& j) { return j["type"] == "app.scaled" && j["data"]["to"] == 0; }, 30s);
  CAF_REQUIRE(idle);
  CAF_CHECK_EQUAL((*idle)["data"]["rule"], "scale_in");
  CAF_CHECK_EQUAL((*idle)["data"]["metric"], "idle");
  // And it wakes again.
  {
    client c{proxy};
    auto again = c.get("/" + name + "/");
    CAF_CHECK_EQUAL(again.result_int(), 200);
    CAF_CHECK_EQUAL(again["X-Troupe-Cold-Start"], "1");
  }
  auto changes = scaling_changes(node.port(), name);
  CAF_MESSAGE("changes: " << json(changes).dump());
  CAF_REQUIRE_GREATER_OR_EQUAL(changes.size(), 3u);
  CAF_CHECK_EQUAL(changes[0], "scale_out pending_requests 0->1");
  CAF_CHECK_EQUAL(changes[1], "scale_in idle 1->0");
  CAF_CHECK_EQUAL(changes[2], "scale_out pending_requests 0->1");
  stop_node(node, name);
}

CAF_TEST(requests held past maxPendingRequests or timeoutSeconds are answered 503) {
  auto name = app_name("hold");
  reap_on_exit reap{name};
  e2e::daemon node{fast_options()};
  auto spec = zero_spec(name, 60, {{"timeoutSeconds", 2}, {"maxPendingRequests", 2}});
  // An instance that never turns ready: nothing can answer the held ones.
  spec["spec"]["health"]["httpGet"]["path"] = "/never-ready";
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/register", spec).status, 201);
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + name + "/up").status, 202);
  auto proxy = proxy_port(node);
  // A client that gives up while held frees its place at once.
  {
    client gone{proxy};
    bh::request<bh::empty_body> req{bh::verb::get, "/" + name + "/", 11};
    req.set(bh::field::host, "localhost");
    bh::write(gone.stream(), req);
    CAF_REQUIRE(until_pending(node.port(), name, 1));
  }
  CAF_REQUIRE(until_pending(node.port(), name, 0));
  auto held = held_gets(proxy, node.port(), name, 2);
  {
    client c{proxy};
    auto full = c.get("/" + name + "/");
    CAF_CHECK_EQUAL(full.result_int(), 503);
    CAF_CHECK_EQUAL(full[bh::field::retry_after], "1");
    auto err = json::parse(full.body(), nullptr, false);
    CAF_CHECK_EQUAL(err["error"]["code"], "activation_queue_full");
  }
  for (auto& h : held) {
    auto res = h.get();
    CAF_CHECK_EQUAL(res.result_int(), 503);
    CAF_CHECK_EQUAL(res[bh::field::retry_after], "1");
    auto err = json::parse(res.body(), nullptr, false);
    CAF_CHECK_EQUAL(err["error"]["code"], "activation_timeout");
    CAF_MESSAGE("held: " << err.dump());
  }
  CAF_CHECK_EQUAL(pending_of(node.port(), name), 0u);
  // The proxy answered three 503s (full, two timeouts) and none to the
  // client that left: had it been held to its deadline (it came first), its
  // 503 would be counted before the others.
  auto errors = [&] {
    auto m = e2e::get(node.port(), "/apps/" + name + "/metrics").json();
    return m["traffic"].value("errors_total", 0.0);
  };
  auto until = std::chrono::steady_clock::now() + 10s;
  while (errors() < 3 && std::chrono::steady_clock::now() < until) {
  }
  CAF_CHECK_EQUAL(errors(), 3.0);
  stop_node(node, name);
}

CAF_TEST(a redis list length drives an app from zero to its maximum and back) {
  e2e::scratch_dir dir{"troupe-e2e-queue"};
  std::string err;
  auto rs = test::start_redis(dir.path(), 0, &err);
  if (!rs)
    CAF_FAIL("redis-server: " << err);
  redis::url_parts where;
  where.host = "127.0.0.1";
  where.port = rs->port();
  redis::client rc{where, 2s};
  auto name = app_name("queue");
  reap_on_exit reap{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  auto spec = queue_spec(name, {{"redis",
                                 {{"url", "redis://127.0.0.1:" + std::to_string(rs->port())},
                                  {"key", "work"},
                                  {"targetPerReplica", 5},
                                  {"activationLength", 2}}}});
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/register", spec).status, 201);
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + name + "/up").status, 202);
  auto run = [&](std::vector<std::string> cmd) {
    auto r = rc.command(cmd, &err);
    if (!r || r->type == redis::reply::kind::error)
      CAF_FAIL("redis: " << err);
  };
  auto next_change = [&] { return next_scaled(ev, name); };
  // 12 items, 5 per replica: from zero to 3 at once (activation).
  std::vector<std::string> push{"RPUSH", "work"};
  for (int i = 0; i < 12; ++i)
    push.push_back("item-" + std::to_string(i));
  run(push);
  CAF_CHECK_EQUAL(next_change(), "scale_out queue_redis 0->3");
  CAF_REQUIRE(ev.until_ready(name, 3));
  // 4 left: 1.3 per replica, below 30 % of 5 for windowSeconds: in to 1.
  run({"LTRIM", "work", "0", "3"});
  CAF_CHECK_EQUAL(next_change(), "scale_in queue_redis 3->1");
  // Empty: to zero.
  run({"DEL", "work"});
  CAF_CHECK_EQUAL(next_change(), "scale_in queue_redis 1->0");
  // Three items, above activationLength 2: awake again.
  run({"RPUSH", "work", "a", "b", "c"});
  CAF_CHECK_EQUAL(next_change(), "scale_out queue_redis 0->1");
  stop_node(node, name);
}

CAF_TEST(queued jobs with a label drive an app from zero and back) {
  auto opts = fast_options();
  opts.env.emplace_back("TROUPE_JOBS__CONCURRENCY", "1");
  auto name = app_name("jobq");
  reap_on_exit reap{name};
  e2e::daemon node{opts};
  events ev{node.port()};
  auto submit = [&](const json& spec) {
    auto res = e2e::request(node.port(), "POST", "/jobs", {{"Content-Type", "application/json"}},
                            spec.dump());
    CAF_REQUIRE_EQUAL(res.status, 201);
    return res.json()["job_id"].get<std::string>();
  };
  // One slot, taken: what comes next waits in the queue.
  auto blocker = submit({{"command", "sleep 60"}});
  auto spec = queue_spec(name, {{"jobs", {{"label", "kind=batch"}, {"targetPerReplica", 2}}}});
  CAF_REQUIRE_EQUAL(post_json(node.port(), "/apps/register", spec).status, 201);
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + name + "/up").status, 202);
  auto next_change = [&] { return next_scaled(ev, name); };
  // Five queued with the label (and one without, not counted): 5 / 2 per
  // replica wants 3.
  std::vector<std::string> queued;
  for (int i = 0; i < 5; ++i)
    queued.push_back(submit({{"command", "true"}, {"labels", {{"kind", "batch"}}}}));
  queued.push_back(submit({{"command", "true"}, {"labels", {{"kind", "other"}}}}));
  CAF_CHECK_EQUAL(next_change(), "scale_out queue_jobs 0->3");
  // Cancelled, the queue is empty: back to zero.
  for (auto& id : queued)
    CAF_CHECK_EQUAL(e2e::request(node.port(), "DELETE", "/jobs/" + id).status, 200);
  CAF_CHECK_EQUAL(next_change(), "scale_in queue_jobs 3->0");
  CAF_CHECK_EQUAL(e2e::request(node.port(), "DELETE", "/jobs/" + blocker).status, 200);
  stop_node(node, name);
}
