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
//   GET  /headers           the request's header fields as a JSON object
//   POST /upload            streams the body through; {"bytes", "fnv"} of it
//   GET  /download?mb=N     N MiB of a fixed pattern, chunked, written piecewise
//   GET  /sse               text/event-stream: event 1 ({"port"}), then waits
//                           for POST /control/release (on any connection)
//                           before event 2 and the end
//   GET  /ws                WebSocket: echoes every message
//   GET  /garbage           answers bytes that are no HTTP response, then closes
// Bodies are streamed (a 64 KiB buffer), never held whole.
// SIGTERM/SIGINT: stops accepting, closes idle connections, finishes requests
// in flight (a hung /healthz is not one), then exits 0.

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

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
#include "support/byte_pattern.hpp"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

constexpr long max_slow_ms = 600'000;
constexpr long max_alloc_mb = 64 * 1024;
constexpr long max_download_mb = 64 * 1024;
constexpr size_t chunk_bytes = 64 * 1024;

using troupe::test::fnv;
using troupe::test::pattern_byte;

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
  /// SSE streams waiting for /control/release.
  std::vector<std::function<void()>> held;
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
    parser_.emplace();
    parser_->body_limit(boost::none);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, size_t) {
    if (ec)
      return;
    auto& m = parser_->get();
    target_ = std::string(m.target());
    method_ = m.method();
    version_ = m.version();
    keep_alive_ = m.keep_alive();
    up_bytes_ = 0;
    up_hash_ = troupe::test::fnv_basis;
    if (target_.substr(0, target_.find('?')) == "/upload")
      return upload();
    if (websocket::is_upgrade(m))
      return upgrade();
    discard_body();
  }

  /// Reads a body nobody needs, then answers the request.
  void discard_body() {
    if (parser_->is_done())
      return route();
    auto& m = parser_->get();
    m.body().data = scratch_.data();
    m.body().size = scratch_.size();
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec && ec != http::error::need_buffer)
                         return;
                       self->discard_body();
                     });
  }

  void upload() {
    answering_ = true;
    ++state.in_flight;
    if (parser_->is_done())
      return reply(200,
                   "{\"bytes\":" + std::to_string(up_bytes_) + ",\"fnv\":\"" +
                       std::to_string(up_hash_) + "\"}\n",
                   "application/json");
    auto& m = parser_->get();
    m.body().data = scratch_.data();
    m.body().size = scratch_.size();
    http::async_read_some(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (ec && ec != http::error::need_buffer) {
                              self->answering_ = false;
                              --state.in_flight;
                              return;
                            }
                            auto& m = self->parser_->get();
                            auto n = self->scratch_.size() - m.body().size;
                            self->up_hash_ = fnv(self->up_hash_, self->scratch_.data(), n);
                            self->up_bytes_ += n;
                            --state.in_flight; // upload() counts it again
                            self->upload();
                          });
  }

  void upgrade() {
    auto ws = std::make_shared<websocket::stream<beast::tcp_stream>>(std::move(stream_));
    auto req = std::make_shared<http::request<http::buffer_body>>(parser_->release());
    ws->async_accept(*req, [ws, req](beast::error_code ec) {
      if (!ec)
        echo(ws, std::make_shared<beast::flat_buffer>());
    });
  }

  static void echo(std::shared_ptr<websocket::stream<beast::tcp_stream>> ws,
                   std::shared_ptr<beast::flat_buffer> buf) {
    ws->async_read(*buf, [ws, buf](beast::error_code ec, size_t) {
      if (ec)
        return;
      ws->text(ws->got_text());
      ws->async_write(buf->data(), [ws, buf](beast::error_code e, size_t) {
        if (e)
          return;
        buf->consume(buf->size());
        echo(ws, buf);
      });
    });
  }

  void route() {
    std::string target = target_;
    auto path = target.substr(0, target.find('?'));
    auto q = query_of(target);
    bool post = method_ == http::verb::post;
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
    if (path == "/headers")
      return headers();
    if (path == "/download")
      return download(q);
    if (path == "/sse")
      return sse();
    if (path == "/garbage")
      return garbage();
    if (path.rfind("/control/", 0) == 0) {
      if (!post)
        return reply(405, "control routes take POST\n");
      return control(path.substr(9), q);
    }
    reply(404, "no route " + path + "\n");
  }

  void headers() {
    std::string out = "{";
    for (auto& f : parser_->get()) {
      if (out.size() > 1)
        out += ",";
      std::string name{f.name_string()};
      std::string value{f.value()};
      for (auto* str : {&name, &value}) {
        std::string esc;
        for (char c : *str)
          if (c == '"' || c == '\\')
            esc += std::string("\\") + c;
          else if (static_cast<unsigned char>(c) >= 0x20)
            esc += c;
        *str = esc;
      }
      out += "\"" + name + "\":\"" + value + "\"";
    }
    reply(200, out + "}\n", "application/json");
  }

  /// A response streamed piece by piece through a buffer_body serializer.
  struct streamed {
    http::response<http::buffer_body> res;
    std::optional<http::response_serializer<http::buffer_body>> sr;
    std::vector<char> buf;
  };

  void download(const std::map<std::string, std::string>& q) {
    auto mb = number(q, "mb", max_download_mb);
    if (!mb)
      return reply(400, "mb must be 0.." + std::to_string(max_download_mb) + "\n");
    auto out = std::make_shared<streamed>();
    out->res.version(version_);
    out->res.result(http::status::ok);
    out->res.set(http::field::content_type, "application/octet-stream");
    out->res.chunked(true);
    out->res.keep_alive(keep_alive_ && !state.draining);
    out->res.body().data = nullptr;
    out->res.body().more = true;
    out->buf.resize(chunk_bytes);
    out->sr.emplace(out->res);
    write_pattern(out, 0, static_cast<uint64_t>(*mb) << 20);
  }

  void write_pattern(std::shared_ptr<streamed> out, uint64_t at, uint64_t total) {
    auto n = std::min<uint64_t>(chunk_bytes, total - at);
    for (uint64_t i = 0; i < n; ++i)
      out->buf[i] = pattern_byte(at + i);
    out->res.body().data = n > 0 ? out->buf.data() : nullptr;
    out->res.body().size = n;
    out->res.body().more = at + n < total;
    http::async_write(stream_, *out->sr,
                      [self = shared_from_this(), out, at, n, total](beast::error_code ec, size_t) {
                        if (ec == http::error::need_buffer)
                          ec = {};
                        if (ec)
                          return self->finished(ec, false);
                        if (out->sr->is_done())
                          return self->finished(ec, out->res.keep_alive());
                        self->write_pattern(out, at + n, total);
                      });
  }

  void garbage() {
    static const std::string junk = "this is not HTTP at all\r\n\r\n";
    net::async_write(
        stream_, net::buffer(junk),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->finished(ec, false); });
  }

  /// Event 1 now; event 2 and the end once /control/release is called.
  void sse() {
    auto out = std::make_shared<streamed>();
    out->res.version(version_);
    out->res.result(http::status::ok);
    out->res.set(http::field::content_type, "text/event-stream");
    out->res.set(http::field::cache_control, "no-cache");
    out->res.chunked(true);
    out->res.keep_alive(false);
    std::string first = "id: 1\ndata: {\"port\":" + std::to_string(state.port) + "}\n\n";
    out->buf.assign(first.begin(), first.end());
    out->res.body().data = out->buf.data();
    out->res.body().size = out->buf.size();
    out->res.body().more = true;
    out->sr.emplace(out->res);
    http::async_write(
        stream_, *out->sr, [self = shared_from_this(), out](beast::error_code ec, size_t) {
          if (ec && ec != http::error::need_buffer)
            return self->finished(ec, false);
          state.held.push_back([self, out] {
            std::string second = "id: 2\ndata: released\n\n";
            out->buf.assign(second.begin(), second.end());
            out->res.body().data = out->buf.data();
            out->res.body().size = out->buf.size();
            out->res.body().more = false;
            http::async_write(self->stream_, *out->sr, [self, out](beast::error_code e, size_t) {
              if (e == http::error::need_buffer)
                e = {};
              self->finished(e, false);
            });
          });
        });
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
    if (what == "release") {
      auto held = std::move(state.held);
      state.held.clear();
      for (auto& fn : held)
        fn();
      return reply(200, "released " + std::to_string(held.size()) + "\n");
    }
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
    auto res = std::make_shared<response>(static_cast<http::status>(status), version_);
    res->set(http::field::server, "troupe-test-backend");
    res->set(http::field::content_type, type);
    res->keep_alive(keep_alive_ && !state.draining);
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
  std::optional<http::request_parser<http::buffer_body>> parser_;
  std::string target_;
  http::verb method_ = http::verb::get;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::vector<char> scratch_ = std::vector<char>(chunk_bytes);
  uint64_t up_bytes_ = 0;
  uint64_t up_hash_ = troupe::test::fnv_basis;
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
