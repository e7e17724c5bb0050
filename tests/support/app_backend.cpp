// troupe-test-backend: the HTTP app the apps tests and benchmarks run as
// instances. Single-threaded Beast on 127.0.0.1:$PORT (or --port N; 0 picks
// one). Its first stdout line says where it listens:
//   troupe-test-backend listening on 127.0.0.1:PORT pid PID instance ID
// Routes:
//   GET  /                  {"instance": $TROUPE_INSTANCE, "pid", "port", "in_flight"}
//   GET  /healthz           200 ok, 503 after fail-health, no answer after hang
//   GET  /slow?ms=N         answers after N ms (async timer; concurrent requests overlap)
//   POST /control/fail-health | /control/heal (also ends hang) | /control/hang
//   POST /control/crash[?mode=abort]   answers, then exits 3 (or aborts)
//   POST /control/log?line=TEXT        prints TEXT to stdout, flushed
//   POST /control/alloc?mb=N           allocates and touches N MiB (kept)
// SIGTERM/SIGINT: stops accepting, closes idle connections, finishes requests
// in flight (a hung /healthz is not one), then exits 0.

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/ground/url.hpp"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr long max_slow_ms = 600'000;
constexpr long max_alloc_mb = 64 * 1024;

struct backend_state {
  std::string instance;
  uint16_t port = 0;
  bool failing = false;
  bool hanging = false;
  bool draining = false;
  /// Requests that will be answered (a hung /healthz is not counted).
  int in_flight = 0;
  /// Memory /control/alloc keeps.
  std::vector<std::unique_ptr<char[]>> hoard;
};

backend_state state;

void say(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::map<std::string, std::string> query_of(std::string_view target) {
  std::map<std::string, std::string> out;
  auto q = target.find('?');
  if (q == std::string_view::npos)
    return out;
  auto rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto pair = rest.substr(0, amp);
    auto eq = pair.find('=');
    out[troupe::url_decode(pair.substr(0, eq), true)] =
        eq == std::string_view::npos ? std::string{}
                                     : troupe::url_decode(pair.substr(eq + 1), true);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
  }
  return out;
}

std::optional<long> number(const std::map<std::string, std::string>& q, const std::string& key,
                           long max) {
  auto it = q.find(key);
  if (it == q.end() || it->second.empty() || it->second.size() > 12)
    return std::nullopt;
  char* end = nullptr;
  long n = std::strtol(it->second.c_str(), &end, 10);
  if (*end != '\0' || n < 0 || n > max)
    return std::nullopt;
  return n;
}

class session;
std::set<session*> sessions;

class session : public std::enable_shared_from_this<session> {
public:
  explicit session(tcp::socket socket) : stream_(std::move(socket)) { sessions.insert(this); }
  ~session() { sessions.erase(this); }

  void start() { do_read(); }

  /// Shutdown: a connection that is not answering a request closes now.
  void close_if_idle() {
    if (!answering_)
      stream_.socket().close();
  }

private:
  using response = http::response<http::string_body>;

  void do_read() {
    req_ = {};
    http::async_read(stream_, buffer_, req_,
                     beast::bind_front_handler(&session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec)
      return;
    route();
  }

  void route() {
    std::string target{req_.target()};
    auto path = target.substr(0, target.find('?'));
    auto q = query_of(target);
    bool post = req_.method() == http::verb::post;
    if (path == "/healthz" && state.hanging)
      return park();
    answering_ = true;
    ++state.in_flight;
    if (path == "/")
      return reply(200,
                   "{\"instance\":\"" + state.instance + "\",\"pid\":" +
                       std::to_string(::getpid()) + ",\"port\":" + std::to_string(state.port) +
                       ",\"in_flight\":" + std::to_string(state.in_flight) + "}\n",
                   "application/json");
    if (path == "/healthz")
      return state.failing ? reply(503, "unhealthy\n") : reply(200, "ok\n");
    if (path == "/slow")
      return slow(q);
    if (path.rfind("/control/", 0) == 0) {
      if (!post)
        return reply(405, "control routes take POST\n");
      return control(path.substr(9), q);
    }
    reply(404, "no route " + path + "\n");
  }

  /// No answer: the caller's probe must time out. The connection stays open
  /// until the caller gives up (or the drain closes it).
  void park() {
    stream_.socket().async_wait(tcp::socket::wait_read,
                                [self = shared_from_this()](beast::error_code) {});
  }

  void slow(const std::map<std::string, std::string>& q) {
    auto ms = number(q, "ms", max_slow_ms);
    if (!ms)
      return reply(400, "ms must be 0.." + std::to_string(max_slow_ms) + "\n");
    timer_.expires_after(std::chrono::milliseconds{*ms});
    timer_.async_wait([self = shared_from_this(), n = *ms](beast::error_code) {
      self->reply(200, "slept " + std::to_string(n) + " ms\n");
    });
  }

  void control(const std::string& what, const std::map<std::string, std::string>& q) {
    if (what == "fail-health") {
      state.failing = true;
      return reply(200, "failing health\n");
    }
    if (what == "heal") {
      state.failing = state.hanging = false;
      return reply(200, "healthy\n");
    }
    if (what == "hang") {
      state.hanging = true;
      return reply(200, "hanging /healthz\n");
    }
    if (what == "crash")
      return crash(q.count("mode") != 0 && q.at("mode") == "abort");
    if (what == "log") {
      auto it = q.find("line");
      if (it == q.end())
        return reply(400, "line is required\n");
      say(it->second);
      return reply(200, "logged\n");
    }
    if (what == "alloc")
      return alloc(q);
    reply(404, "no control route " + what + "\n");
  }

  void crash(bool abort) {
    say(abort ? "crashing (abort)" : "crashing (exit 3)");
    reply(200, "crashing\n", "text/plain", [abort] {
      if (abort)
        std::abort();
      std::_Exit(3);
    });
  }

  void alloc(const std::map<std::string, std::string>& q) {
    auto mb = number(q, "mb", max_alloc_mb);
    if (!mb)
      return reply(400, "mb must be 0.." + std::to_string(max_alloc_mb) + "\n");
    size_t bytes = static_cast<size_t>(*mb) << 20;
    std::unique_ptr<char[]> block{new (std::nothrow) char[bytes == 0 ? 1 : bytes]};
    if (!block)
      return reply(507, "cannot allocate " + std::to_string(*mb) + " MiB\n");
    // Touching every page makes the memory resident: that is what limits see.
    std::memset(block.get(), 0x5a, bytes);
    state.hoard.push_back(std::move(block));
    reply(200, "allocated " + std::to_string(*mb) + " MiB\n");
  }

  void reply(unsigned status, std::string body, const char* type = "text/plain",
             std::function<void()> after = {}) {
    auto res = std::make_shared<response>(static_cast<http::status>(status), req_.version());
    res->set(http::field::server, "troupe-test-backend");
    res->set(http::field::content_type, type);
    res->keep_alive(req_.keep_alive() && !state.draining);
    res->body() = std::move(body);
    res->prepare_payload();
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, after](beast::error_code ec, size_t) {
                        if (after)
                          after();
                        self->finished(ec, res->keep_alive());
                      });
  }

  void finished(beast::error_code ec, bool keep_alive) {
    answering_ = false;
    --state.in_flight;
    if (ec || !keep_alive || state.draining) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    do_read();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  net::steady_timer timer_{stream_.get_executor()};
  bool answering_ = false;
};

void do_accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](beast::error_code ec, tcp::socket socket) {
    if (ec)
      return; // closed by the drain
    std::make_shared<session>(std::move(socket))->start();
    do_accept(acceptor);
  });
}

std::optional<long> port_argument(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--port") == 0)
      return std::strtol(argv[i + 1], nullptr, 10);
  if (const char* env = std::getenv("PORT"))
    return std::strtol(env, nullptr, 10);
  return std::nullopt;
}

} // namespace

int main(int argc, char** argv) {
  auto port = port_argument(argc, argv);
  if (!port || *port < 0 || *port > 65535) {
    std::fprintf(stderr, "usage: troupe-test-backend [--port N] (or PORT=N)\n");
    return 2;
  }
  const char* instance = std::getenv("TROUPE_INSTANCE");
  state.instance = instance != nullptr ? instance : "";
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  try {
    tcp::endpoint where{net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(*port)};
    acceptor.open(where.protocol());
    acceptor.set_option(net::socket_base::reuse_address(true));
    acceptor.bind(where);
    acceptor.listen();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe-test-backend: cannot listen on 127.0.0.1:%ld: %s\n", *port,
                 e.what());
    return 1;
  }
  state.port = acceptor.local_endpoint().port();
  say("troupe-test-backend listening on 127.0.0.1:" + std::to_string(state.port) + " pid " +
      std::to_string(::getpid()) + " instance " + state.instance);
  net::signal_set signals{ioc, SIGTERM, SIGINT};
  signals.async_wait([&](beast::error_code ec, int sig) {
    if (ec)
      return;
    state.draining = true;
    say("signal " + std::to_string(sig) + ": draining " + std::to_string(state.in_flight) +
        " requests in flight");
    acceptor.close();
    // Copy: closing a session may end it and erase it from the set.
    std::vector<session*> open{sessions.begin(), sessions.end()};
    for (auto* s : open)
      s->close_if_idle();
  });
  do_accept(acceptor);
  ioc.run();
  say("troupe-test-backend exiting");
  return 0;
}
