#define CAF_SUITE loki
#include "support/dsl.hpp"

#include "actors/logs/loki.hpp"
#include "http/http_client.hpp"
#include "runtime/ground/log_level.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <chrono>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>
#include <zlib.h>

// CAF's DSL macro of this name would swallow breaker::allow calls; unused here.
#undef allow

using namespace std::chrono_literals;
using namespace troupe;
using loki::entry;
using loki::outcome;
using loki::request_id_mode;
using nlohmann::json;
using std::chrono::milliseconds;

namespace {

json parse_body(const std::vector<entry>& entries, request_id_mode mode) {
  return json::parse(loki::push_body(entries, mode));
}

std::string gunzip(const std::string& data) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK)
    return "<inflateInit2 failed>";
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  std::array<char, 4096> buf;
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf.data(), buf.size() - zs.avail_out);
  }
  inflateEnd(&zs);
  return rc == Z_STREAM_END ? out : "<inflate failed>";
}

int64_t ms(milliseconds d) {
  return d.count();
}

/// retry_after's result in ms, -1 for nullopt.
int64_t retry_ms(std::string_view header, std::chrono::system_clock::time_point now = {}) {
  auto d = loki::retry_after(header, now);
  return d ? d->count() : -1;
}

/// "Sun, 06 Nov 1994 08:49:37 GMT"
const auto rfc_example = std::chrono::system_clock::time_point{784111777s};

std::string level(std::string_view line, bool is_stderr = false) {
  return troupe::detect_level(line, is_stderr, "info", "error");
}

/// A TCP socket bound to 127.0.0.1 on a free port; listening if asked.
int bound_socket(uint16_t& port, bool listening) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port = ntohs(addr.sin_port);
  if (listening)
    ::listen(fd, 4);
  return fd;
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// A request as the test server saw it.
struct seen_request {
  std::string method, target, body;
  std::map<std::string, std::string> headers; ///< lower-cased names
};

seen_request parse_request(const std::string& raw) {
  seen_request out;
  auto head_end = raw.find("\r\n\r\n");
  auto head = raw.substr(0, head_end);
  out.body = head_end == std::string::npos ? "" : raw.substr(head_end + 4);
  auto line_end = head.find("\r\n");
  auto first = head.substr(0, line_end);
  out.method = first.substr(0, first.find(' '));
  out.target = first.substr(out.method.size() + 1, first.rfind(' ') - out.method.size() - 1);
  for (auto pos = line_end; pos != std::string::npos && pos < head.size();) {
    auto next = head.find("\r\n", pos + 2);
    auto line =
        head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    auto colon = line.find(':');
    out.headers[lower(line.substr(0, colon))] = line.substr(line.find_first_not_of(' ', colon + 1));
    pos = next;
  }
  return out;
}

/// Accepts one connection, reads one request and answers it with `reply`.
class one_shot_server {
public:
  explicit one_shot_server(std::string reply)
      : listener_(bound_socket(port_, true)), thread_([this, reply] { serve(reply); }) {}

  ~one_shot_server() {
    if (thread_.joinable())
      thread_.join();
    ::close(listener_);
  }

  uint16_t port() const { return port_; }

  /// The request it received; waits for the exchange to finish.
  seen_request received() {
    thread_.join();
    return parse_request(raw_);
  }

private:
  void serve(const std::string& reply) {
    pollfd pfd{listener_, POLLIN, 0};
    if (::poll(&pfd, 1, 5000) != 1)
      return;
    int fd = ::accept(listener_, nullptr, nullptr);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (!complete()) {
      char buf[4096];
      auto n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0)
        break;
      raw_.append(buf, static_cast<size_t>(n));
    }
    ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(fd);
  }

  bool complete() const {
    auto head_end = raw_.find("\r\n\r\n");
    if (head_end == std::string::npos)
      return false;
    auto headers = parse_request(raw_.substr(0, head_end + 4)).headers;
    auto length = headers.count("content-length") ? std::stoul(headers["content-length"]) : 0;
    return raw_.size() >= head_end + 4 + length;
  }

  uint16_t port_ = 0;
  int listener_;
  std::string raw_;
  std::thread thread_;
};

http::url local_url(uint16_t port, const std::string& path = "") {
  return *http::parse_url("http://127.0.0.1:" + std::to_string(port) + path);
}

} // namespace

CAF_TEST(push_body groups entries into streams by label set in order of first appearance) {
  std::vector<entry> entries{
      {3, "a1", {{"service", "a"}}, ""},
      {1, "b1", {{"service", "b"}}, ""},
      {2, "a2", {{"service", "a"}}, ""},
      {9'000'000'000'000'000'000, "b2", {{"service", "b"}}, ""},
  };
  auto body = parse_body(entries, request_id_mode::structured_metadata);
  auto& streams = body["streams"];
  CAF_REQUIRE_EQUAL(streams.size(), 2u);
  CAF_CHECK_EQUAL(streams[0]["stream"], json({{"service", "a"}}));
  CAF_CHECK_EQUAL(streams[0]["values"], json::parse(R"([["3","a1"],["2","a2"]])"));
  CAF_CHECK_EQUAL(streams[1]["stream"], json({{"service", "b"}}));
  CAF_CHECK_EQUAL(streams[1]["values"],
                  json::parse(R"([["1","b1"],["9000000000000000000","b2"]])"));
}

CAF_TEST(push_body treats label sets with any differing label as different streams) {
  std::map<std::string, std::string> base{{"service", "s"}, {"level", "info"}};
  auto other = base;
  other["level"] = "error";
  auto body = parse_body({{1, "x", base, ""}, {2, "y", other, ""}, {3, "z", base, ""}},
                         request_id_mode::structured_metadata);
  CAF_REQUIRE_EQUAL(body["streams"].size(), 2u);
  CAF_CHECK_EQUAL(body["streams"][0]["values"].size(), 2u);
  CAF_CHECK_EQUAL(body["streams"][1]["stream"]["level"], "error");
}

CAF_TEST(push_body puts request ids into structured metadata) {
  std::map<std::string, std::string> labels{{"service", "s"}};
  auto body = parse_body({{1, "with", labels, "req-1"}, {2, "without", labels, ""}},
                         request_id_mode::structured_metadata);
  CAF_REQUIRE_EQUAL(body["streams"].size(), 1u);
  auto& values = body["streams"][0]["values"];
  CAF_CHECK_EQUAL(values[0], json::parse(R"(["1","with",{"request_id":"req-1"}])"));
  CAF_CHECK_EQUAL(values[1], json::parse(R"(["2","without"])"));
  CAF_CHECK_EQUAL(body["streams"][0]["stream"], json({{"service", "s"}}));
}

CAF_TEST(push_body puts request ids into the label set in label mode) {
  std::map<std::string, std::string> labels{{"service", "s"}};
  auto body = parse_body({{1, "a", labels, "r1"}, {2, "b", labels, ""}, {3, "c", labels, "r1"}},
                         request_id_mode::label);
  auto& streams = body["streams"];
  CAF_REQUIRE_EQUAL(streams.size(), 2u);
  CAF_CHECK_EQUAL(streams[0]["stream"], json({{"service", "s"}, {"request_id", "r1"}}));
  CAF_CHECK_EQUAL(streams[0]["values"], json::parse(R"([["1","a"],["3","c"]])"));
  CAF_CHECK_EQUAL(streams[1]["stream"], json({{"service", "s"}}));
  CAF_CHECK_EQUAL(streams[1]["values"], json::parse(R"([["2","b"]])"));
}

CAF_TEST(push_body escapes quotes newlines and control characters) {
  std::string line = "say \"hi\"\n\tback\\slash \x01 ünïcode";
  auto raw = loki::push_body({{1, line, {{"k", "v\"q"}}, ""}}, request_id_mode::label);
  CAF_CHECK(raw.find('\n') == std::string::npos);
  auto body = json::parse(raw);
  CAF_CHECK_EQUAL(body["streams"][0]["values"][0][1], line);
  CAF_CHECK_EQUAL(body["streams"][0]["stream"]["k"], "v\"q");
}

CAF_TEST(push_body repairs invalid utf8 instead of failing) {
  std::string line = "ok \xff\xfe bad \xc3";
  auto raw =
      loki::push_body({{1, line, {{"k", "\x80"}}, "id\xc0"}}, request_id_mode::structured_metadata);
  auto body = json::parse(raw);
  CAF_CHECK_EQUAL(body["streams"][0]["values"][0][1],
                  "ok \xEF\xBF\xBD\xEF\xBF\xBD bad \xEF\xBF\xBD");
  CAF_CHECK_EQUAL(body["streams"][0]["stream"]["k"], "\xEF\xBF\xBD");
  CAF_CHECK_EQUAL(body["streams"][0]["values"][0][2]["request_id"], "id\xEF\xBF\xBD");
}

CAF_TEST(push_body of nothing is an empty stream list) {
  CAF_CHECK_EQUAL(parse_body({}, request_id_mode::label), json::parse(R"({"streams":[]})"));
}

CAF_TEST(gzip round trips through zlib inflate) {
  std::string big;
  for (int i = 0; i < 50'000; ++i)
    big += "line " + std::to_string(i * 7919 % 10007) + "\n";
  for (const std::string& data : {std::string{}, std::string{"hello"}, big}) {
    auto packed = loki::gzip(data);
    CAF_REQUIRE_GREATER_OR_EQUAL(packed.size(), 18u);
    CAF_CHECK_EQUAL(static_cast<unsigned char>(packed[0]), 0x1fu);
    CAF_CHECK_EQUAL(static_cast<unsigned char>(packed[1]), 0x8bu);
    CAF_CHECK(gunzip(packed) == data);
  }
  CAF_CHECK_LESS(loki::gzip(big).size(), big.size() / 2);
}

CAF_TEST(backoff grows exponentially with full jitter) {
  auto b = [](int n, double r) { return ms(loki::backoff(n, 100ms, 5s, r)); };
  CAF_CHECK_EQUAL(b(1, 0.0), 10); // floor
  CAF_CHECK_EQUAL(b(1, 0.5), 50);
  CAF_CHECK_EQUAL(b(1, 0.999), 100);
  CAF_CHECK_EQUAL(b(2, 0.5), 100);
  CAF_CHECK_EQUAL(b(2, 0.999), 200);
  CAF_CHECK_EQUAL(b(3, 0.0), 10);
  CAF_CHECK_EQUAL(b(3, 0.5), 200);
  CAF_CHECK_EQUAL(b(3, 0.999), 400);
  CAF_CHECK_EQUAL(b(6, 0.999), 3197);
}

CAF_TEST(backoff is capped at max) {
  auto b = [](int n, double r) { return ms(loki::backoff(n, 100ms, 5s, r)); };
  CAF_CHECK_EQUAL(b(7, 0.5), 2500);
  CAF_CHECK_GREATER_OR_EQUAL(b(7, 0.999), 4990);
  CAF_CHECK_LESS_OR_EQUAL(b(7, 0.999), 5000);
  CAF_CHECK_LESS_OR_EQUAL(b(1000, 0.999), 5000);
  CAF_CHECK_LESS_OR_EQUAL(b(INT32_MAX, 0.999999), 5000);
  CAF_CHECK_EQUAL(b(INT32_MAX, 0.5), 2500);
  // No overflow when doubling runs into the largest representable delay.
  auto huge = ms(loki::backoff(70, 1ms, milliseconds::max(), 0.5));
  CAF_CHECK_GREATER_OR_EQUAL(huge, milliseconds::max().count() / 2 - 1);
  CAF_CHECK_LESS_OR_EQUAL(huge, milliseconds::max().count() / 2 + 1);
  CAF_CHECK_GREATER(ms(loki::backoff(70, 1ms, milliseconds::max(), 0.999999)), huge);
}

CAF_TEST(backoff never goes below the floor) {
  CAF_CHECK_EQUAL(ms(loki::backoff(1, 5ms, 5s, 0.999)), ms(loki::backoff_floor));
  CAF_CHECK_EQUAL(ms(loki::backoff(1, 0ms, 5s, 0.5)), ms(loki::backoff_floor));
  CAF_CHECK_EQUAL(ms(loki::backoff(0, 100ms, 5s, 0.999)), 100); // n < 1 counts as 1
  CAF_CHECK_EQUAL(ms(loki::backoff(4, 100ms, 5s, -3.0)), ms(loki::backoff_floor));
  CAF_CHECK_EQUAL(ms(loki::backoff(4, 100ms, 5s, 7.0)), 800); // rng clamped below 1
}

CAF_TEST(retry_after reads delta seconds) {
  CAF_CHECK_EQUAL(retry_ms("120"), 120'000);
  CAF_CHECK_EQUAL(retry_ms("0"), 0);
  CAF_CHECK_EQUAL(retry_ms(" 7 "), 7'000);
  CAF_CHECK_EQUAL(retry_ms("-5"), 0);
  CAF_CHECK_EQUAL(retry_ms("99999999999999999999999"),
                  std::numeric_limits<int64_t>::max() / 1000 * 1000);
}

CAF_TEST(retry_after rejects garbage) {
  for (auto text : {"", "   ", "soon", "12abc", "1.5", "-", "--5", "Sun, 06 Nov 1994",
                    "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT",
                    "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC"})
    CAF_CHECK_EQUAL(retry_ms(text, rfc_example), -1);
}

CAF_TEST(retry_after reads HTTP dates relative to now) {
  CAF_CHECK_EQUAL(retry_ms("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example - 37s), 37'000);
  CAF_CHECK_EQUAL(retry_ms("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example - 1500ms), 1'500);
  CAF_CHECK_EQUAL(retry_ms("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example), 0);
  CAF_CHECK_EQUAL(retry_ms("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example + 100s), 0);
  // The obsolete forms a recipient must still accept.
  CAF_CHECK_EQUAL(retry_ms("Sunday, 06-Nov-94 08:49:37 GMT", rfc_example - 10s), 10'000);
  CAF_CHECK_EQUAL(retry_ms("Sun Nov  6 08:49:37 1994", rfc_example - 10s), 10'000);
  CAF_CHECK_EQUAL(retry_ms("Thu, 29 Feb 2024 00:00:00 GMT",
                           std::chrono::system_clock::time_point{1709164800s - 1s}),
                  1'000);
}

CAF_TEST(breaker opens after threshold consecutive failures) {
  using state = loki::breaker::state;
  auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  loki::breaker b{3, 1s};
  CAF_CHECK(b.current(t0) == state::closed);
  CAF_CHECK(b.allow(t0));
  b.failure(t0);
  b.failure(t0);
  CAF_CHECK(b.current(t0) == state::closed);
  CAF_CHECK_EQUAL(b.consecutive_failures(), 2);
  b.success();
  CAF_CHECK_EQUAL(b.consecutive_failures(), 0);
  b.failure(t0);
  b.failure(t0);
  b.failure(t0 + 10ms);
  CAF_CHECK_EQUAL(b.consecutive_failures(), 3);
  CAF_CHECK(b.current(t0 + 10ms) == state::open);
  CAF_CHECK(!b.allow(t0 + 10ms));
  CAF_CHECK(!b.allow(t0 + 1009ms));
}

CAF_TEST(breaker lets exactly one probe through when half open) {
  using state = loki::breaker::state;
  auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  loki::breaker b{2, 1s};
  b.failure(t0);
  b.failure(t0);
  CAF_CHECK(b.current(t0 + 999ms) == state::open);
  CAF_CHECK(b.current(t0 + 1s) == state::half_open);
  CAF_CHECK(b.allow(t0 + 1s));
  CAF_CHECK(!b.allow(t0 + 1s));
  CAF_CHECK(!b.allow(t0 + 5s));
  CAF_CHECK(b.current(t0 + 5s) == state::half_open);
  // The probe fails: open again, cooldown counted from the failure.
  b.failure(t0 + 5s);
  CAF_CHECK(b.current(t0 + 5s) == state::open);
  CAF_CHECK(!b.allow(t0 + 5999ms));
  CAF_CHECK(b.allow(t0 + 6s));
  CAF_CHECK(!b.allow(t0 + 6s));
  // The next probe succeeds: closed, failures forgotten.
  b.success();
  CAF_CHECK(b.current(t0 + 6s) == state::closed);
  CAF_CHECK_EQUAL(b.consecutive_failures(), 0);
  CAF_CHECK(b.allow(t0 + 6s));
  CAF_CHECK(b.allow(t0 + 6s));
  b.failure(t0 + 7s);
  CAF_CHECK(b.current(t0 + 7s) == state::closed);
}

CAF_TEST(decide flushes at the entry count byte size and age limits) {
  loki::batch_limits limits{3, 100, 1000ms};
  auto d = loki::decide(limits, 2, 99, 999ms);
  CAF_CHECK(!d.flush);
  CAF_CHECK_EQUAL(ms(d.wait), 1);
  CAF_CHECK(loki::decide(limits, 3, 1, 0ms).flush);
  CAF_CHECK(loki::decide(limits, 1, 100, 0ms).flush);
  CAF_CHECK(loki::decide(limits, 1, 1, 1000ms).flush);
  CAF_CHECK(loki::decide(limits, 1, 1, 5000ms).flush);
  CAF_CHECK_EQUAL(ms(loki::decide(limits, 1, 1, 1000ms).wait), 0);
  d = loki::decide(limits, 1, 1, 250ms);
  CAF_CHECK(!d.flush);
  CAF_CHECK_EQUAL(ms(d.wait), 750);
}

CAF_TEST(decide never flushes an empty batch) {
  loki::batch_limits limits{0, 0, 1000ms};
  auto d = loki::decide(limits, 0, 0, 5000ms);
  CAF_CHECK(!d.flush);
  CAF_CHECK_EQUAL(ms(d.wait), 1000);
  CAF_CHECK(loki::decide(loki::batch_limits{}, 100, 0, 0ms).flush);
  CAF_CHECK(loki::decide(loki::batch_limits{}, 1, 1 << 20, 0ms).flush);
}

CAF_TEST(classify maps push results to ok drop or retry) {
  CAF_CHECK(loki::classify(200) == outcome::ok);
  CAF_CHECK(loki::classify(204) == outcome::ok);
  for (unsigned status : {400u, 413u, 422u})
    CAF_CHECK(loki::classify(status) == outcome::drop);
  // A wrong token, URL or proxy is fixed by the operator: the lines wait.
  for (unsigned status : {0u, 301u, 401u, 403u, 404u, 408u, 429u, 500u, 502u, 503u, 504u})
    CAF_CHECK(loki::classify(status) == outcome::retry);
}

CAF_TEST(detect_level reads level or severity from JSON object lines) {
  CAF_CHECK_EQUAL(level(R"({"level":"ERROR","msg":"x"})"), "error");
  CAF_CHECK_EQUAL(level(R"({"msg":"x","severity":"Warning"})"), "warn");
  CAF_CHECK_EQUAL(level(R"(  {"level":"Information"}  )"), "info");
  CAF_CHECK_EQUAL(level(R"({"level":"err"})"), "error");
  CAF_CHECK_EQUAL(level(R"({"level":"FATAL"})"), "critical");
  CAF_CHECK_EQUAL(level(R"({"level":"crit"})"), "critical");
  CAF_CHECK_EQUAL(level(R"({"level":"critical"})"), "critical");
  CAF_CHECK_EQUAL(level(R"({"level":"trace"})"), "trace");
  CAF_CHECK_EQUAL(level(R"({"level":"Debug"})"), "debug");
  CAF_CHECK_EQUAL(level(R"({"level":"warn"})", true), "warn");
  CAF_CHECK_EQUAL(level(R"({"level":"NOTICE"})"), "notice");
  CAF_CHECK_EQUAL(level(R"({"severity":"debug","level":"error"})"), "error");
  CAF_CHECK_EQUAL(level(R"({"ctx":{"level":"debug"},"level":"warn"})"), "warn");
  CAF_CHECK_EQUAL(level(R"({"tags":["level"],"level":"debug"})"), "debug");
}

CAF_TEST(detect_level falls back to the stream default) {
  CAF_CHECK_EQUAL(level("plain text ERROR"), "info");
  CAF_CHECK_EQUAL(level("plain text ERROR", true), "error");
  CAF_CHECK_EQUAL(level(""), "info");
  CAF_CHECK_EQUAL(level("", true), "error");
  CAF_CHECK_EQUAL(level(R"({"log":{"level":"debug"}})"), "info");
  CAF_CHECK_EQUAL(level(R"({"level":"debug")"), "info");
  CAF_CHECK_EQUAL(level(R"({"level":"debug"} trailing)"), "info");
  CAF_CHECK_EQUAL(level(R"({"level":"debug",})", true), "error");
  CAF_CHECK_EQUAL(level(R"({"level":30})"), "info");
  CAF_CHECK_EQUAL(level(R"({"level":["debug"]})"), "info");
  CAF_CHECK_EQUAL(level(R"({"level":""})"), "info");
  CAF_CHECK_EQUAL(level(R"([{"level":"debug"}])"), "info");
  CAF_CHECK_EQUAL(level(R"({"msg":"level"})"), "info");
}

CAF_TEST(parse_url splits scheme host port and base path) {
  auto u = http::parse_url("http://loki.example:3100/base/path");
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->scheme, "http");
  CAF_CHECK_EQUAL(u->host, "loki.example");
  CAF_CHECK_EQUAL(u->port, "3100");
  CAF_CHECK_EQUAL(u->target, "/base/path");
  u = http::parse_url("HTTP://loki");
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->port, "80");
  CAF_CHECK_EQUAL(u->target, "/");
  u = http::parse_url("http://[::1]:8080");
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->host, "::1");
  CAF_CHECK_EQUAL(u->port, "8080");
}

CAF_TEST(parse_url rejects what it cannot serve) {
  std::string error;
  CAF_CHECK(!http::parse_url("https://loki:3100", &error));
  CAF_CHECK_EQUAL(error, "https is not supported yet");
  for (auto text : {"loki:3100", "ftp://loki", "http://", "http://:80",
                    "http://loki:", "http://loki:0", "http://loki:65536", "http://loki:12x",
                    "http://u:p@loki", "http://loki/?q=1", "http://[::1", "http://[::1]x"}) {
    error.clear();
    CAF_CHECK(!http::parse_url(text, &error));
    CAF_CHECK(!error.empty());
  }
  CAF_CHECK(!http::parse_url("https://x"));
}

CAF_TEST(base64 encodes the RFC 4648 test vectors) {
  CAF_CHECK_EQUAL(http::base64(""), "");
  CAF_CHECK_EQUAL(http::base64("f"), "Zg==");
  CAF_CHECK_EQUAL(http::base64("fo"), "Zm8=");
  CAF_CHECK_EQUAL(http::base64("foo"), "Zm9v");
  CAF_CHECK_EQUAL(http::base64("foob"), "Zm9vYg==");
  CAF_CHECK_EQUAL(http::base64("fooba"), "Zm9vYmE=");
  CAF_CHECK_EQUAL(http::base64("foobar"), "Zm9vYmFy");
  CAF_CHECK_EQUAL(http::base64("\xff\xfe"), "//4=");
}

CAF_TEST(fetch sends one request and returns the response) {
  one_shot_server server{"HTTP/1.1 429 Too Many Requests\r\n"
                         "Retry-After: 3\r\n"
                         "X-Multi: a\r\n"
                         "x-multi: b\r\n"
                         "Content-Length: 5\r\n"
                         "\r\n"
                         "slow!"};
  auto res = http::fetch(local_url(server.port(), "/loki/"), "POST", "/api/v1/push",
                         {{"Content-Type", "application/json"},
                          {"Authorization", "Basic " + http::base64("user:pass")},
                          {"X-Scope-OrgID", "tenant"}},
                         R"({"a":1})", 2s);
  CAF_CHECK_EQUAL(res.error, "");
  CAF_CHECK_EQUAL(res.status, 429u);
  CAF_CHECK_EQUAL(res.body, "slow!");
  CAF_CHECK_EQUAL(res.headers["retry-after"], "3");
  CAF_CHECK_EQUAL(res.headers["x-multi"], "a, b");
  auto req = server.received();
  CAF_CHECK_EQUAL(req.method, "POST");
  CAF_CHECK_EQUAL(req.target, "/loki/api/v1/push");
  CAF_CHECK_EQUAL(req.headers["host"], "127.0.0.1:" + std::to_string(server.port()));
  CAF_CHECK_EQUAL(req.headers["content-type"], "application/json");
  CAF_CHECK_EQUAL(req.headers["authorization"], "Basic dXNlcjpwYXNz");
  CAF_CHECK_EQUAL(req.headers["x-scope-orgid"], "tenant");
  CAF_CHECK_EQUAL(req.headers["content-length"], "7");
  CAF_CHECK_EQUAL(req.body, R"({"a":1})");
}

CAF_TEST(fetch reads a body delimited by the connection closing) {
  one_shot_server server{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof"};
  auto res = http::fetch(local_url(server.port()), "GET", "/ready", {}, "", 2s);
  CAF_CHECK_EQUAL(res.status, 200u);
  CAF_CHECK_EQUAL(res.body, "until eof");
  auto req = server.received();
  CAF_CHECK_EQUAL(req.method, "GET");
  CAF_CHECK_EQUAL(req.target, "/ready");
  CAF_CHECK_EQUAL(req.body, "");
}

CAF_TEST(fetch reports a refused connection as a transport error) {
  uint16_t port = 0;
  ::close(bound_socket(port, false));
  auto res = http::fetch(local_url(port), "GET", "/", {}, "", 2s);
  CAF_CHECK_EQUAL(res.status, 0u);
  CAF_CHECK(res.error.find("refused") != std::string::npos);
  CAF_MESSAGE("error: " << res.error);
}

CAF_TEST(fetch gives up on a server that never answers within the timeout) {
  uint16_t port = 0;
  // Listening without accepting: the kernel completes the handshake, nobody reads.
  int fd = bound_socket(port, true);
  auto start = std::chrono::steady_clock::now();
  auto res = http::fetch(local_url(port), "POST", "/push", {}, "data", 300ms);
  auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  CAF_CHECK_EQUAL(res.status, 0u);
  CAF_CHECK(res.error.find("timed out") != std::string::npos);
  CAF_CHECK_GREATER_OR_EQUAL(took, 290ms);
  CAF_CHECK_LESS(took, 1s);
  CAF_MESSAGE("error: " << res.error);
}

CAF_TEST(fetch reports a name that does not resolve) {
  auto res =
      http::fetch(*http::parse_url("http://no-such-host.invalid:3100"), "GET", "/", {}, "", 2s);
  CAF_CHECK_EQUAL(res.status, 0u);
  CAF_CHECK(!res.error.empty());
  CAF_MESSAGE("error: " << res.error);
}
