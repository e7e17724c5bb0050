#define CAF_SUITE e2e_security

#include "support/dsl.hpp"

#include "support/e2e.hpp"
#include "support/files.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace troupe::e2e;
using troupe::test::read_file;
using troupe::test::write_file;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

namespace {

const std::string admin_token = "admin-0123456789abcdef";
const std::string submit_token = "submit-0123456789abcdef";
const std::string read_token = "read-0123456789abcdef01";
const std::string other_submit_token = "other-0123456789abcdef";

/// A daemon with three tokens of three roles.
daemon_options three_tokens(environment extra = {}) {
  daemon_options opts;
  opts.env = std::move(extra);
  opts.env.emplace_back("TROUPE_AUTH__TOKENS",
                        R"([{"name":"ops","token":")" + admin_token + R"(","roles":["admin"]},)" +
                            R"({"name":"ci","token":")" + submit_token +
                            R"(","roles":["submit"]},)" + R"({"name":"cd","token":")" +
                            other_submit_token + R"(","roles":["submit"]},)" +
                            R"({"name":"dash","token":")" + read_token + R"(","roles":["read"]}])");
  return opts;
}

header_list as(const std::string& token, header_list extra = {}) {
  extra.emplace_back("Authorization", "Bearer " + token);
  return extra;
}

/// A blocking loopback TCP client for what the harness does not do: partial
/// requests, pauses, idle connections.
class raw_client {
public:
  explicit raw_client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~raw_client() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  /// Reads until `pred(data)` holds, the peer closes or `timeout` passes.
  template <class Pred> std::string read_until(Pred pred, std::chrono::milliseconds timeout) {
    auto deadline = steady::now() + timeout;
    while (!pred(data_) && !closed_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      if (left.count() <= 0)
        break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        continue;
      char buf[8192];
      auto n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0)
        closed_ = true;
      else
        data_.append(buf, static_cast<size_t>(n));
    }
    return data_;
  }

  std::string read_head(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return read_until([](const std::string& d) { return d.find("\r\n\r\n") != std::string::npos; },
                      timeout);
  }

  /// True once the server closed the connection (waits up to `timeout`).
  bool wait_closed(std::chrono::milliseconds timeout) {
    read_until([](const std::string&) { return false; }, timeout);
    return closed_;
  }

  const std::string& data() const { return data_; }

private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string data_;
};

const std::string boundary = "troupe-e2e-security";

std::string multipart(const std::string& spec, const std::string& file = {}) {
  std::string body =
      "--" + boundary + "\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n" + spec + "\r\n";
  if (!file.empty())
    body += "--" + boundary +
            "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.tar\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n" +
            file + "\r\n";
  body += "--" + boundary + "--\r\n";
  return body;
}

std::string job_status(uint16_t port, const std::string& id) {
  return get(port, "/jobs/" + id).json().value("status", "");
}

bool wait_done(uint16_t port, const std::string& id) {
  return poll_until([&] {
    auto s = job_status(port, id);
    return s == "succeeded" || s == "failed";
  });
}

int shell(const std::string& cmd) {
  return std::system(cmd.c_str());
}

} // namespace

CAF_TEST(a cross origin form post is refused and runs nothing) {
  scratch_dir dir;
  auto marker = dir.path() + "/touched";
  daemon_options opts;
  opts.env = {{"TROUPE_AUTH__MODE", "none"}}; // the browser defences on their own
  e2e::daemon node{opts};
  auto port = node.port();
  auto body = R"({"command":"touch )" + marker + R"("})";
  auto form = request(
      port, "POST", "/jobs",
      {{"Origin", "http://evil.example"}, {"Content-Type", "application/x-www-form-urlencoded"}},
      body);
  CAF_CHECK_EQUAL(form.status, 403);
  CAF_CHECK_EQUAL(json_field(form, "/error/code"), "forbidden_origin");
  // Without an Origin (a non-browser client), a form body is never parsed.
  auto no_origin =
      request(port, "POST", "/jobs", {{"Content-Type", "application/x-www-form-urlencoded"}}, body);
  CAF_CHECK_EQUAL(no_origin.status, 415);
  CAF_CHECK_EQUAL(json_field(no_origin, "/error/code"), "unsupported_media_type");
  auto untyped = request(port, "POST", "/jobs", {{"Content-Type", ""}}, body);
  CAF_CHECK_EQUAL(untyped.status, 415);
  // A self-submitting multipart form with a spec field.
  auto mp =
      request(port, "POST", "/jobs",
              {{"Origin", "null"}, {"Content-Type", "multipart/form-data; boundary=" + boundary}},
              multipart(body));
  CAF_CHECK_EQUAL(mp.status, 403);
  auto jobs = get(port, "/jobs");
  CAF_CHECK_EQUAL(jobs.status, 200);
  CAF_CHECK_EQUAL(jobs.json()["jobs"].size(), 0u);
  CAF_CHECK(!fs::exists(marker));
}

CAF_TEST(without a token the API answers 401 and probes stay public) {
  e2e::daemon node;
  auto port = node.port();
  header_list none{{"Authorization", ""}};
  for (auto target : {"/jobs", "/events", "/logs", "/monitoring/system", "/jobs/x"}) {
    auto res = get(port, target, none);
    CAF_CHECK_EQUAL(res.status, 401);
    CAF_CHECK_EQUAL(json_field(res, "/error/code"), "unauthorized");
    CAF_CHECK_EQUAL(res.header("WWW-Authenticate").value_or("<none>"), "Bearer realm=\"troupe\"");
  }
  auto submit =
      request(port, "POST", "/jobs", {{"Authorization", ""}, {"Content-Type", "application/json"}},
              R"({"command":"true"})");
  CAF_CHECK_EQUAL(submit.status, 401);
  auto wrong = get(port, "/jobs", {{"Authorization", "Bearer wrong-token-0123456789"}});
  CAF_CHECK_EQUAL(wrong.status, 401);
  for (auto target : {"/healthz", "/readyz", "/version", "/metrics"})
    CAF_CHECK_EQUAL(get(port, target, none).status, 200);
  // The harness's own admin token works everywhere.
  CAF_CHECK_EQUAL(get(port, "/jobs").status, 200);
}

CAF_TEST(roles decide who reads who submits and who administers) {
  daemon_options opts = three_tokens({{"TROUPE_DEBUG__FAULT_INJECTION", "true"}});
  e2e::daemon node{opts};
  auto port = node.port();
  auto spec = R"({"command":"echo hi"})";
  header_list json_type{{"Content-Type", "application/json"}};
  auto by_reader = request(port, "POST", "/jobs", as(read_token, json_type), spec);
  CAF_CHECK_EQUAL(by_reader.status, 403);
  CAF_CHECK_EQUAL(json_field(by_reader, "/error/code"), "forbidden");
  CAF_CHECK_EQUAL(get(port, "/jobs", as(read_token)).status, 200);
  auto by_submitter = request(port, "POST", "/jobs", as(submit_token, json_type), spec);
  CAF_REQUIRE_EQUAL(by_submitter.status, 201);
  auto id = by_submitter.json().value("job_id", "");
  CAF_CHECK_EQUAL(get(port, "/jobs/" + id, as(read_token)).status, 200);
  CAF_CHECK_EQUAL(json_field(get(port, "/jobs/" + id, as(read_token)), "/submitted_by"), "ci");
  // Node operations need admin.
  CAF_CHECK_EQUAL(request(port, "POST", "/debug/crash/event_bus", as(submit_token)).status, 403);
  CAF_CHECK_EQUAL(request(port, "POST", "/debug/crash/event_bus", as(admin_token)).status, 202);
}

CAF_TEST(a submitter cancels its own jobs and only admin cancels others) {
  e2e::daemon node{three_tokens()};
  auto port = node.port();
  header_list json_type{{"Content-Type", "application/json"}};
  auto submit = [&](const std::string& token) {
    auto res = request(port, "POST", "/jobs", as(token, json_type), R"({"command":"sleep 30"})");
    CAF_REQUIRE_EQUAL(res.status, 201);
    return res.json().value("job_id", "");
  };
  auto mine = submit(submit_token);
  auto theirs = submit(other_submit_token);
  auto refused = request(port, "DELETE", "/jobs/" + theirs, as(submit_token));
  CAF_CHECK_EQUAL(refused.status, 403);
  CAF_CHECK_EQUAL(json_field(refused, "/error/code"), "forbidden");
  CAF_CHECK_EQUAL(request(port, "DELETE", "/jobs/" + mine, as(read_token)).status, 403);
  CAF_CHECK_EQUAL(request(port, "DELETE", "/jobs/" + mine, as(submit_token)).status, 200);
  CAF_CHECK_EQUAL(request(port, "DELETE", "/jobs/" + theirs, as(admin_token)).status, 200);
  CAF_CHECK(poll_until([&] {
    return get(port, "/jobs/" + theirs, as(read_token)).json().value("status", "") == "cancelled";
  }));
}

CAF_TEST(no token ever appears in the daemon s output) {
  e2e::daemon node{three_tokens()};
  auto port = node.port();
  CAF_CHECK_EQUAL(get(port, "/jobs", as(admin_token)).status, 200);
  CAF_CHECK_EQUAL(get(port, "/jobs", as(read_token + "x")).status, 401);
  // EventSource cannot set headers: streams take ?access_token=.
  auto stream = open_sse(port, "/events?access_token=" + read_token,
                         {{"Authorization", ""}, {"Last-Event-ID", "0"}});
  CAF_CHECK_EQUAL(stream.status(), 200);
  auto ev = stream.next_of_type("node.started", std::chrono::seconds(10));
  CAF_CHECK(ev.has_value());
  // Only streaming routes take it.
  CAF_CHECK_EQUAL(get(port, "/jobs?access_token=" + read_token, {{"Authorization", ""}}).status,
                  401);
  CAF_REQUIRE(node.wait_for_line(std::regex{"access_token=REDACTED"}).has_value());
  for (auto& line : node.output())
    for (auto& token : {admin_token, submit_token, read_token, other_submit_token})
      if (line.find(token) != std::string::npos)
        CAF_FAIL("a token appears in the output: " << line);
}

CAF_TEST(a host that is not loopback is refused on a loopback listener) {
  e2e::daemon node;
  auto res = get(node.port(), "/healthz", {{"Host", "evil.example:8000"}});
  CAF_CHECK_EQUAL(res.status, 403);
  CAF_CHECK_EQUAL(json_field(res, "/error/code"), "forbidden_host");
  CAF_CHECK_EQUAL(get(node.port(), "/healthz", {{"Host", "localhost:8000"}}).status, 200);
}

CAF_TEST(allowed origins get CORS headers and preflights) {
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__ALLOWED_ORIGINS", "https://dash.example"}};
  e2e::daemon node{opts};
  auto port = node.port();
  auto res = get(port, "/jobs", {{"Origin", "https://dash.example"}});
  CAF_CHECK_EQUAL(res.status, 200);
  CAF_CHECK_EQUAL(res.header("Access-Control-Allow-Origin").value_or("<none>"),
                  "https://dash.example");
  auto pre = request(port, "OPTIONS", "/jobs",
                     {{"Origin", "https://dash.example"},
                      {"Access-Control-Request-Method", "POST"},
                      {"Authorization", ""}});
  CAF_CHECK_EQUAL(pre.status, 204);
  CAF_CHECK(contains(pre.header("Access-Control-Allow-Headers").value_or(""), "Authorization"));
  auto other = get(port, "/jobs", {{"Origin", "https://other.example"}});
  CAF_CHECK_EQUAL(other.status, 403);
  CAF_CHECK(!other.header("Access-Control-Allow-Origin"));
}

CAF_TEST(bodies are bounded per route) {
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__MAX_JSON_BYTES", "1KiB"}};
  e2e::daemon node{opts};
  auto port = node.port();
  auto on_get = request(port, "GET", "/healthz", {{"Content-Type", "application/json"}}, "{}");
  CAF_CHECK_EQUAL(on_get.status, 413);
  std::string big = R"({"command":"true","name":")" + std::string(2000, 'x') + "\"}";
  auto json = request(port, "POST", "/jobs", {{"Content-Type", "application/json"}}, big);
  CAF_CHECK_EQUAL(json.status, 413);
  CAF_CHECK(contains(json_field(json, "/error/message"), "http.max_json_bytes"));
  CAF_CHECK_EQUAL(get(port, "/healthz").status, 200);
}

CAF_TEST(path parameters are decoded once) {
  e2e::daemon node;
  auto res = get(node.port(), "/jobs/%252F");
  CAF_CHECK_EQUAL(res.status, 404);
  CAF_CHECK(contains(json_field(res, "/error/message"), "%2F"));
}

CAF_TEST(expect 100 continue is answered after the checks pass) {
  e2e::daemon node;
  auto port = node.port();
  auto body = multipart(R"({"command":"true"})");
  auto head =
      "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" +
      boundary + "\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nExpect: 100-continue\r\n";
  {
    raw_client c{port};
    CAF_REQUIRE(c.connected());
    c.send(head + "Authorization: Bearer " + node.token() + "\r\n\r\n");
    auto first = c.read_head();
    CAF_REQUIRE(first.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
    c.send(body);
    auto all = c.read_until(
        [](const std::string& d) { return d.find("HTTP/1.1 201") != std::string::npos; },
        std::chrono::seconds(10));
    CAF_CHECK(contains(all, "HTTP/1.1 201"));
  }
  {
    // No token: the final answer comes instead of 100, and the body is never read.
    raw_client c{port};
    c.send(head + "\r\n");
    auto first = c.read_head();
    CAF_CHECK(first.rfind("HTTP/1.1 401", 0) == 0);
    CAF_CHECK(c.wait_closed(std::chrono::seconds(10)));
  }
  // curl waits a second for the 100 unless it comes; it sends Expect for
  // bodies over 1 MiB.
  scratch_dir dir;
  auto file = dir.path() + "/big.bin";
  CAF_REQUIRE_EQUAL(shell("head -c 5242880 /dev/urandom > " + file), 0);
  auto out = dir.path() + "/curl.err";
  auto cmd = "curl -sS -v -o /dev/null -H 'Authorization: Bearer " + node.token() +
             "' -F 'spec={\"command\":\"true\"}' -F file=@" + file +
             " http://127.0.0.1:" + std::to_string(port) + "/jobs 2> " + out;
  shell(cmd);
  auto trace = read_file(out);
  CAF_CHECK(contains(trace, "Expect: 100-continue"));
  CAF_CHECK(contains(trace, "HTTP/1.1 100 Continue"));
  // The archive is not one; troupe says so only after reading it from disk.
  CAF_CHECK(contains(trace, "HTTP/1.1 400"));
}

CAF_TEST(a slowloris client is closed after the header timeout) {
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__HEADER_TIMEOUT", "1s"}, {"TROUPE_HTTP__REQUEST_TIMEOUT", "60s"}};
  e2e::daemon node{opts};
  raw_client c{node.port()};
  CAF_REQUIRE(c.connected());
  c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  // One header byte every 200 ms: the connection is never idle, yet the
  // headers never finish.
  bool closed = false;
  auto start = steady::now();
  while (!closed && steady::now() - start < std::chrono::seconds(20)) {
    c.send("X");
    closed = c.wait_closed(std::chrono::milliseconds(200));
  }
  CAF_CHECK(closed);
  CAF_CHECK_EQUAL(get(node.port(), "/healthz").status, 200);
}

CAF_TEST(an upload goes on while bytes flow and a stalled one is closed) {
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__REQUEST_TIMEOUT", "1s"}, {"TROUPE_HTTP__MAX_REQUEST_DURATION", "60s"}};
  e2e::daemon node{opts};
  auto port = node.port();
  auto body = multipart(R"({"command":"true"})", std::string(512 * 1024, 'a'));
  auto head =
      "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" +
      boundary + "\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nAuthorization: Bearer " + node.token() + "\r\n\r\n";
  {
    raw_client c{port};
    c.send(head);
    // Ten pieces 400 ms apart: 4 s in all, four times the idle timeout.
    auto piece = body.size() / 10 + 1;
    for (size_t at = 0; at < body.size(); at += piece) {
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      CAF_REQUIRE(c.send(std::string_view{body}.substr(at, piece)));
    }
    auto res = c.read_head(std::chrono::seconds(10));
    // The upload was read whole: the answer is about the archive, not a cut.
    CAF_CHECK(res.rfind("HTTP/1.1 400", 0) == 0);
    CAF_CHECK(contains(c.read_until([](auto& d) { return contains(d, "invalid_archive"); },
                                    std::chrono::seconds(5)),
                       "invalid_archive"));
  }
  {
    raw_client c{port};
    c.send(head);
    c.send(std::string_view{body}.substr(0, 1000));
    CAF_CHECK(c.wait_closed(std::chrono::seconds(15)));
    CAF_CHECK(c.data().empty());
  }
  // Nothing of either upload is left behind.
  CAF_CHECK(poll_until([&] { return fs::is_empty(node.data_dir() + "/uploads"); }));
}

CAF_TEST(past max connections new ones get 503 and jobs still run) {
  // A low descriptor limit for the daemon: 400, of which 256 stay reserved.
  daemon_options opts;
  opts.wrapper = {"/usr/bin/prlimit", "--nofile=400:400"};
  auto node = std::make_unique<e2e::daemon>(opts);
  auto port = node->port();
  // More idle connections than the daemon has descriptors.
  std::vector<std::unique_ptr<raw_client>> flood;
  for (int i = 0; i < 450; ++i)
    flood.push_back(std::make_unique<raw_client>(port));
  size_t refused = 0;
  for (auto& c : flood) {
    auto head = c->read_until([](auto& d) { return !d.empty(); }, std::chrono::milliseconds(20));
    if (head.rfind("HTTP/1.1 503", 0) == 0)
      ++refused;
  }
  CAF_MESSAGE(refused << " of 450 connections refused with 503");
  CAF_CHECK_GREATER(refused, 250u);
  // Free a few slots for the test's own requests; the flood stays.
  flood.erase(flood.begin(), flood.begin() + 4);
  CAF_REQUIRE(poll_until([&] { return get(port, "/healthz").status == 200; }));
  for (int i = 0; i < 3; ++i) {
    auto res = request(port, "POST", "/jobs", {{"Content-Type", "application/json"}},
                       R"({"command":"echo spawned"})");
    CAF_REQUIRE_EQUAL(res.status, 201);
    auto id = res.json().value("job_id", "");
    CAF_REQUIRE(wait_done(port, id));
    CAF_CHECK_EQUAL(job_status(port, id), "succeeded");
  }
  CAF_CHECK(node->wait_for_line(std::regex{"connections refused with 503"}).has_value());
}

CAF_TEST(mutating requests are rate limited) {
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__RATE_LIMIT__REQUESTS_PER_SECOND", "0.01"},
              {"TROUPE_HTTP__RATE_LIMIT__BURST", "2"}};
  e2e::daemon node{opts};
  auto port = node.port();
  auto post = [&] {
    return request(port, "POST", "/jobs", {{"Content-Type", "application/json"}},
                   R"({"command":"true"})");
  };
  CAF_CHECK_EQUAL(post().status, 201);
  CAF_CHECK_EQUAL(post().status, 201);
  auto third = post();
  CAF_CHECK_EQUAL(third.status, 429);
  CAF_CHECK(third.header("Retry-After").has_value());
  CAF_CHECK_EQUAL(get(port, "/jobs").status, 200);
}

CAF_TEST(the API is served over TLS with a configured certificate) {
  scratch_dir dir;
  auto cert = dir.path() + "/cert.pem";
  auto key = dir.path() + "/key.pem";
  CAF_REQUIRE_EQUAL(shell("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
                          "-addext subjectAltName=IP:127.0.0.1 -keyout " +
                          key + " -out " + cert + " 2>/dev/null"),
                    0);
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__TLS__CERT_FILE", cert}, {"TROUPE_HTTP__TLS__KEY_FILE", key}};
  e2e::daemon node{opts};
  auto url = "https://127.0.0.1:" + std::to_string(node.port());
  auto out = dir.path() + "/out";
  auto curl = "curl -sS --cacert " + cert + " -o " + out + " -w '%{http_code}' ";
  auto code = [&](const std::string& args) {
    auto status = dir.path() + "/status";
    shell(curl + args + " > " + status + " 2>/dev/null");
    return read_file(status);
  };
  CAF_CHECK_EQUAL(code(url + "/healthz"), "200");
  CAF_CHECK_EQUAL(code(url + "/jobs"), "401");
  CAF_CHECK_EQUAL(code("-H 'Authorization: Bearer " + node.token() + "' " + url + "/jobs"), "200");
  CAF_CHECK(contains(read_file(out), "\"jobs\""));
  // Plain HTTP on the TLS port gets no answer.
  CAF_CHECK_EQUAL(get(node.port(), "/healthz").status, 0);
  CAF_CHECK_EQUAL(code(url + "/healthz"), "200");
}

CAF_TEST(an unusable certificate stops the daemon naming the key) {
  scratch_dir dir;
  auto missing = dir.path() + "/missing.pem";
  auto res = run_troupe(
      {"serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path() + "/data"},
      {{"TROUPE_HTTP__TLS__CERT_FILE", missing}, {"TROUPE_HTTP__TLS__KEY_FILE", missing}});
  CAF_REQUIRE(res.status.has_value());
  CAF_CHECK(res.status->exited_nonzero());
  CAF_CHECK(contains(res.out + res.err, "http.tls.cert_file"));
}
