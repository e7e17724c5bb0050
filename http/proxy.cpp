#include "http/proxy.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include "http/proxy_headers.hpp"
#include "http/request_id.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"
#include "runtime/ground/text.hpp"

namespace troupe::http {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bh = beast::http;
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;
// Streams on the io_context's own executor type: no type-erased executor
// per operation (any_io_executor cost a few percent per request).
using executor = net::io_context::executor_type;
using socket_t = net::basic_stream_socket<tcp, executor>;
using stream_t = beast::basic_stream<tcp, executor, beast::unlimited_rate_policy>;

/// Each direction of a request streams through one buffer this large.
constexpr size_t relay_bytes = 64 * 1024;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("proxy");
}

/// A request held while its app activates: `wake` posts it back onto its
/// io thread (it then picks an instance, or is held again).
struct waiter {
  uint64_t id = 0;
  std::function<void()> wake;
};

/// An app the proxy routes to: its balancer and what it counts.
struct app_entry {
  balancer bal;
  uint64_t active = 0;
  int64_t last_request_ns = 0;
  /// Set: requests are held while no instance is ready (scale from zero).
  std::optional<activation_options> activation;
  /// Held requests, oldest first.
  std::deque<waiter> waiting;
  /// Ready instances (ejected ones too: those are answered, not held).
  size_t ready = 0;
  steady::time_point last_activate{};
  explicit app_entry(balancer_options o) : bal(o) {}
};

/// A connection to an instance; pooled between requests.
struct upstream {
  stream_t stream;
  beast::flat_buffer buf;
  std::string key;
  steady::time_point idle_since;
  /// Taken from the pool (a failure may be a stale keep-alive connection).
  bool reused = false;
  explicit upstream(net::io_context& ioc) : stream(ioc.get_executor()) {}
};

/// One io thread: its io_context, and its idle upstream connections per
/// instance (no lock: only this thread touches them).
struct worker {
  net::io_context ioc{1};
  net::steady_timer sweeper{ioc};
  std::unordered_map<std::string, std::deque<std::shared_ptr<upstream>>> pool;
  std::mt19937_64 rng{std::random_device{}()};
  std::thread thread;
  /// Relay buffers of finished requests, for the next ones (a few only).
  std::vector<std::unique_ptr<char[]>> spare;

  std::unique_ptr<char[]> buffer() {
    if (spare.empty())
      return std::unique_ptr<char[]>(new char[relay_bytes]);
    auto b = std::move(spare.back());
    spare.pop_back();
    return b;
  }

  void give_back(std::unique_ptr<char[]> b) {
    if (b && spare.size() < 64)
      spare.push_back(std::move(b));
  }

  std::shared_ptr<upstream> take(const std::string& key) {
    auto i = pool.find(key);
    if (i == pool.end())
      return nullptr;
    auto& q = i->second;
    auto recent = steady::now() - std::chrono::seconds(1);
    while (!q.empty()) {
      auto u = std::move(q.back());
      q.pop_back();
      // One used within the last second is trusted (the sweep looks at the
      // others every second); an older one is looked at now.
      if (u->idle_since >= recent || usable(*u)) {
        u->reused = true;
        return u;
      }
    }
    return nullptr;
  }

  void give(std::shared_ptr<upstream> u, size_t limit) {
    auto& idle = pool[u->key];
    if (idle.size() >= limit)
      return; // closed as it goes
    u->idle_since = steady::now();
    u->stream.expires_never();
    idle.push_back(std::move(u));
  }

  /// Whether an idle connection can take a request: not closed by the
  /// instance, nothing unasked waiting on it (one MSG_PEEK, no blocking).
  static bool usable(upstream& u) {
    if (!u.stream.socket().is_open())
      return false;
    char b;
    auto n = ::recv(u.stream.socket().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  /// Closes connections idle longer than `idle_timeout` and those the
  /// instance closed (a crashed or stopped instance's).
  void sweep(std::chrono::milliseconds idle_timeout) {
    auto cutoff = steady::now() - idle_timeout;
    for (auto i = pool.begin(); i != pool.end();) {
      auto& q = i->second;
      q.erase(std::remove_if(q.begin(), q.end(),
                             [&](const std::shared_ptr<upstream>& u) {
                               return u->idle_since < cutoff || !usable(*u);
                             }),
              q.end());
      i = q.empty() ? pool.erase(i) : std::next(i);
    }
  }
};

std::string error_json(std::string_view code, const std::string& message) {
  return nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump();
}

bool reset_like(const beast::error_code& ec) {
  return ec == bh::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::connection_aborted;
}

} // namespace

struct proxy_server::impl : std::enable_shared_from_this<proxy_server::impl> {
  struct listener;

  proxy_options opts;
  // Routing and balancing, read by every io thread.
  mutable std::mutex mtx;
  route_table routes;
  std::map<std::string, app_entry, std::less<>> apps;
  // Listeners: the shared one, and the apps' own (serialized by listen_mtx).
  mutable std::mutex listen_mtx;
  std::shared_ptr<listener> shared_listener;
  std::map<std::string, std::shared_ptr<listener>> app_listeners;
  std::atomic<size_t> open{0};
  std::atomic<size_t> next{0};
  /// Ids of held requests.
  std::atomic<uint64_t> next_waiter{1};
  uint16_t bound_port = 0;
  bool running = false;
  // Last: destroyed first, so handlers that go with their io_context still
  // find the members above.
  std::vector<std::unique_ptr<worker>> workers;

  explicit impl(proxy_options o) : opts(std::move(o)) {}

  worker& pick_worker() { return *workers[next++ % workers.size()]; }

  std::shared_ptr<listener> listen(const std::string& host, uint16_t port, uint16_t app_port);
  void adopt(socket_t s, worker& w, uint16_t listener_port);
  void schedule_sweep(worker& w);
};

struct proxy_server::impl::listener : std::enable_shared_from_this<listener> {
  impl& px;
  tcp::acceptor acc;
  net::steady_timer backoff;
  /// 0: the shared listener; else the app port it serves.
  uint16_t app_port;

  listener(impl& p, net::io_context& ioc, uint16_t port)
      : px(p), acc(ioc), backoff(ioc), app_port(port) {}

  void accept() {
    auto self = shared_from_this();
    auto& w = px.pick_worker();
    acc.async_accept(w.ioc.get_executor(), [self, &w](beast::error_code ec, socket_t s) {
      if (ec == net::error::operation_aborted || !self->acc.is_open())
        return;
      if (ec) {
        // Out of descriptors, say: try again shortly instead of spinning.
        log()->warn("proxy: accept failed: {}", ec.message());
        self->backoff.expires_after(std::chrono::milliseconds(50));
        self->backoff.async_wait([self](beast::error_code e) {
          if (!e)
            self->accept();
        });
        return;
      }
      self->px.adopt(std::move(s), w, self->app_port);
      self->accept();
    });
  }

  void close() {
    net::post(acc.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acc.close(ec);
      self->backoff.cancel();
    });
  }
};

namespace {

/// One client connection: reads requests in order (pipelined ones wait in
/// its buffer), relays each to an instance and its response back.
class client_conn : public std::enable_shared_from_this<client_conn> {
public:
  client_conn(std::shared_ptr<proxy_server::impl> px, worker& w, socket_t s, uint16_t listener_port)
      : px_(std::move(px)), w_(w), client_(std::move(s)), listener_port_(listener_port) {
    beast::error_code ec;
    // Small writes (a header alone, an SSE event) go out at once.
    client_.socket().set_option(tcp::no_delay(true), ec);
    auto ep = client_.socket().remote_endpoint(ec);
    if (!ec)
      client_ip_ = ep.address().to_string();
  }

  ~client_conn() {
    release(0, false);
    --px_->open;
  }

  void start() { read_request(); }

private:
  using self_ptr = std::shared_ptr<client_conn>;

  const proxy_options& opts() const { return px_->opts; }

  // -- request header ------------------------------------------------------

  void read_request() {
    req_.emplace();
    req_->header_limit(static_cast<std::uint32_t>(opts().max_header_bytes));
    req_->body_limit(boost::none); // streamed: no size is held
    client_.expires_after(first_ ? opts().header_timeout : opts().client_idle_timeout);
    bh::async_read_header(
        client_, cbuf_, *req_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_request_header(ec); });
  }

  void on_request_header(beast::error_code ec) {
    if (ec) {
      if (ec == bh::error::header_limit)
        reply(431, "header_too_large",
              "the request header is larger than proxy.max_header_bytes (" +
                  std::to_string(opts().max_header_bytes) + ")",
              false, true);
      else if (ec != bh::error::end_of_stream && ec != beast::error::timeout &&
               ec.category() == bh::make_error_code(bh::error::bad_target).category())
        reply(400, "bad_request", "malformed request: " + ec.message(), false, true);
      return; // closed (eof, reset, idle timeout)
    }
    first_ = false;
    t0_ = steady::now();
    status_ = 0;
    cold_ = false;
    expired_ = false;
    answered_ = false;
    prefetched_ = 0;
    auto& m = req_->get();
    client_keep_ = m.keep_alive();
    client_http10_ = m.version() < 11;
    head_ = m.method() == bh::verb::head;
    idempotent_ = idempotent(m.method_string());
    has_body_ = !req_->is_done();
    expect_continue_ = iequals(m[bh::field::expect], "100-continue");
    request_id_ = request_id_for(m["X-Request-ID"]);
    tried_.clear();
    body_started_ = false;
    continue_sent_ = false;
    upgrade_ = wants_upgrade(m);
    std::string host{m[bh::field::host]};
    std::optional<route_match> match;
    {
      std::lock_guard<std::mutex> g{px_->mtx};
      match = px_->routes.match(listener_port_, host, m.target());
      if (match)
        if (auto i = px_->apps.find(match->app); i != px_->apps.end()) {
          ++i->second.active;
          i->second.last_request_ns = now_ns();
          active_ = true;
        }
    }
    if (!match) {
      reply(404, "no_route",
            "no app is exposed at host '" + host + "' path '" + std::string(m.target()) + "'",
            false, false);
      return;
    }
    app_ = std::move(match->app);
    forward_context ctx;
    ctx.client_ip = client_ip_;
    ctx.request_id = request_id_;
    ctx.via = opts().via;
    bool chunked = req_->chunked();
    rewrite_request(m, ctx);
    if (expect_continue_)
      m.erase(bh::field::expect); // answered here (100 Continue), not upstream
    m.target(match->target);
    m.version(11);
    if (chunked)
      m.chunked(true);
    choose_instance();
  }

  // -- instance and connection -----------------------------------------------

  void choose_instance() {
    std::optional<balancer::endpoint> ep;
    hold verdict = hold::no;
    {
      std::lock_guard<std::mutex> g{px_->mtx};
      if (auto i = px_->apps.find(app_); i != px_->apps.end()) {
        ep = i->second.bal.pick(steady::now(), w_.rng, tried_);
        if (ep)
          i->second.bal.started(ep->instance);
        else if (tried_.empty() && i->second.activation && i->second.ready == 0)
          verdict = park(i->second);
      }
    }
    if (verdict == hold::held || verdict == hold::held_activate) {
      if (verdict == hold::held_activate && opts().on_activate)
        opts().on_activate(app_);
      return;
    }
    if (verdict == hold::full) {
      reply(503, "activation_queue_full",
            "app " + app_ + " is starting from zero replicas and already holds " +
                std::to_string(max_pending_) +
                " requests (scaling.policy.activation.maxPendingRequests)",
            true, false);
      return;
    }
    if (verdict == hold::expired) {
      activation_timed_out();
      return;
    }
    if (ep && timer_)
      timer_->cancel(); // held before: on its way now
    if (!ep) {
      if (tried_.empty())
        reply(503, "no_ready_instance", "app " + app_ + " has no ready instance", true, false);
      else
        reply(502, "upstream_unavailable",
              "no instance of app " + app_ + " could be reached (tried " + join(tried_) + ")",
              false, false);
      return;
    }
    instance_ = ep->instance;
    port_ = ep->port;
    in_balancer_ = true;
    tried_.push_back(instance_);
    connect(true);
  }

  /// A pooled connection to the chosen instance, else a new one (`pooled`
  /// false: a new one in any case).
  void connect(bool pooled) {
    auto key = instance_ + ':' + std::to_string(port_);
    up_ = pooled ? w_.take(key) : nullptr;
    if (up_) {
      send_request();
      return;
    }
    up_ = std::make_shared<upstream>(w_.ioc);
    up_->key = std::move(key);
    up_->stream.expires_after(opts().connect_timeout);
    up_->stream.async_connect(
        tcp::endpoint(net::ip::address_v4::loopback(), port_),
        [self = shared_from_this()](beast::error_code ec) { self->on_connect(ec); });
  }

  void on_connect(beast::error_code ec) {
    if (ec) {
      bool ejected = false;
      {
        std::lock_guard<std::mutex> g{px_->mtx};
        if (auto i = px_->apps.find(app_); i != px_->apps.end())
          ejected = i->second.bal.connect_failed(instance_, steady::now());
      }
      if (ejected) {
        log()->warn("proxy: instance {} of app {} ejected for {}s after consecutive connect "
                    "failures (last: {})",
                    instance_, app_, opts().balancing.eject_for.count() / 1000, ec.message());
        if (opts().on_eject)
          opts().on_eject(app_, instance_);
      }
      leave_instance();
      up_.reset();
      // Nothing was sent: another instance may take it, whatever the method.
      if (tried_.size() < 2 && !body_started_) {
        choose_instance();
        return;
      }
      fail(502, "upstream_unavailable",
           "connecting to instance " + tried_.back() + " of app " + app_ +
               " failed: " + ec.message());
      return;
    }
    {
      std::lock_guard<std::mutex> g{px_->mtx};
      if (auto i = px_->apps.find(app_); i != px_->apps.end())
        i->second.bal.connect_ok(instance_);
    }
    up_->stream.socket().set_option(tcp::no_delay(true), ec);
    send_request();
  }

  // -- request: header and body upstream --------------------------------------

  void send_request() {
    auto& m = req_->get();
    if (prefetched_ > 0 || (has_body_ && req_->is_done())) {
      // Held while the app activated: what was read of the body goes with
      // the header, the rest (if any) as it comes.
      body_started_ = true;
      m.body().data = prefetched_ > 0 ? relay_.get() : nullptr;
      m.body().size = prefetched_;
      m.body().more = !req_->is_done();
      req_sr_.emplace(m);
      up_->stream.expires_after(opts().upstream_timeout);
      bh::async_write(up_->stream, *req_sr_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->on_request_written(ec);
                      });
      return;
    }
    m.body().data = nullptr;
    m.body().size = 0;
    m.body().more = has_body_;
    req_sr_.emplace(m);
    if (has_body_ && cbuf_.size() > 0 && !expect_continue_) {
      // Body bytes came with the header: they go upstream in one write.
      read_request_body();
      return;
    }
    req_sr_->split(true); // the header goes at once, the body as it comes
    up_->stream.expires_after(opts().upstream_timeout);
    bh::async_write(up_->stream, *req_sr_,
                    [self = shared_from_this()](beast::error_code ec, size_t) {
                      self->on_request_written(ec);
                    });
  }

  void on_request_written(beast::error_code ec) {
    if (ec == bh::error::need_buffer)
      ec = {};
    if (ec) {
      upstream_broke(ec);
      return;
    }
    if (req_sr_->is_done()) {
      read_response();
      return;
    }
    if (expect_continue_ && !continue_sent_) {
      // The client waits for this before it sends the body.
      continue_sent_ = true;
      static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
      client_.expires_after(opts().client_idle_timeout);
      net::async_write(client_, net::buffer(cont),
                       [self = shared_from_this()](beast::error_code e, size_t) {
                         if (e)
                           self->abort();
                         else
                           self->read_request_body();
                       });
      return;
    }
    read_request_body();
  }

  void read_request_body() {
    body_started_ = true;
    if (!relay_)
      relay_ = w_.buffer();
    auto& m = req_->get();
    m.body().data = relay_.get();
    m.body().size = relay_bytes;
    client_.expires_after(opts().client_idle_timeout);
    bh::async_read_some(
        client_, cbuf_, *req_, [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec == bh::error::need_buffer)
            ec = {};
          if (ec) {
            self->abort(); // the client went away (or stalled) mid-upload
            return;
          }
          auto& m = self->req_->get();
          auto n = relay_bytes - m.body().size;
          if (n == 0 && !self->req_->is_done()) {
            self->read_request_body(); // framing only: a chunk of 0 would end the body
            return;
          }
          m.body().data = n > 0 ? self->relay_.get() : nullptr;
          m.body().size = n;
          m.body().more = !self->req_->is_done();
          self->up_->stream.expires_after(self->opts().upstream_timeout);
          bh::async_write(self->up_->stream, *self->req_sr_,
                          [self](beast::error_code e, size_t) { self->on_request_written(e); });
        });
  }

  // -- response: header and body downstream -----------------------------------

  void read_response() {
    res_.emplace();
    res_->header_limit(static_cast<std::uint32_t>(opts().max_header_bytes));
    res_->body_limit(boost::none);
    if (head_)
      res_->skip(true);
    up_->stream.expires_after(opts().upstream_timeout);
    bh::async_read_header(up_->stream, up_->buf, *res_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            self->on_response_header(ec);
                          });
  }

  void on_response_header(beast::error_code ec) {
    if (ec) {
      if (ec == beast::error::timeout)
        fail(504, "upstream_timeout",
             "instance " + instance_ + " of app " + app_ + " sent no response within " +
                 std::to_string(opts().upstream_timeout.count()) + " ms (proxy.upstream_timeout)");
      else if (reset_like(ec) && !res_->got_some())
        upstream_broke(ec);
      else
        fail(502, "bad_gateway",
             "instance " + instance_ + " of app " + app_ +
                 " sent a malformed response: " + ec.message());
      return;
    }
    auto& r = res_->get();
    status_ = r.result_int();
    if (status_ / 100 == 1 && status_ != 101) {
      read_response(); // an interim response (102, 103): the final one follows
      return;
    }
    bool switching = upgrade_ && status_ == 101;
    upstream_reusable_ = res_->keep_alive() && !switching;
    bool body = !res_->is_done();
    bool has_length = res_->content_length().has_value();
    rewrite_response(r, switching);
    if (r.find("X-Request-ID") == r.end())
      r.set("X-Request-ID", request_id_);
    if (cold_)
      r.set("X-Troupe-Cold-Start", "1");
    r.version(client_http10_ ? 10 : 11);
    if (body && !has_length) {
      // Chunked upstream or ended by close: chunks for an HTTP/1.1 client,
      // the close for an HTTP/1.0 one.
      if (client_http10_)
        client_keep_ = false;
      else
        r.chunked(true);
    }
    if (!switching)
      r.keep_alive(client_keep_);
    r.body().data = nullptr;
    r.body().size = 0;
    r.body().more = body;
    res_sr_.emplace(r);
    if (body && up_->buf.size() > 0 && !switching) {
      // Body bytes came with the header: header and first piece in one write.
      read_response_body();
      return;
    }
    res_sr_->split(true); // the header goes at once (SSE, long polls)
    client_.expires_after(opts().upstream_timeout);
    bh::async_write(client_, *res_sr_,
                    [self = shared_from_this(), switching](beast::error_code e, size_t) {
                      if (e == bh::error::need_buffer)
                        e = {};
                      if (e) {
                        self->abort();
                        return;
                      }
                      if (switching)
                        self->tunnel();
                      else
                        self->on_response_written();
                    });
  }

  void on_response_written() {
    if (res_sr_->is_done()) {
      done();
      return;
    }
    read_response_body();
  }

  void read_response_body() {
    if (!relay_)
      relay_ = w_.buffer();
    auto& r = res_->get();
    r.body().data = relay_.get();
    r.body().size = relay_bytes;
    up_->stream.expires_after(opts().upstream_timeout);
    bh::async_read_some(
        up_->stream, up_->buf, *res_, [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec == bh::error::need_buffer)
            ec = {};
          if (ec) {
            // Broken mid-body: the client can only see the close.
            log()->warn("proxy: instance {} of app {} broke off a response "
                        "(request {}): {}",
                        self->instance_, self->app_, self->request_id_, ec.message());
            self->abort();
            return;
          }
          auto& r = self->res_->get();
          auto n = relay_bytes - r.body().size;
          if (n == 0 && !self->res_->is_done()) {
            // Framing only (a chunk header): a chunk of 0
            // bytes would end the client's body.
            self->on_response_written();
            return;
          }
          r.body().data = n > 0 ? self->relay_.get() : nullptr;
          r.body().size = n;
          r.body().more = !self->res_->is_done();
          self->client_.expires_after(self->opts().upstream_timeout);
          bh::async_write(self->client_, *self->res_sr_, [self](beast::error_code e, size_t) {
            if (e == bh::error::need_buffer)
              e = {};
            if (e)
              self->abort();
            else
              self->on_response_written();
          });
        });
  }

  /// The exchange is complete: the upstream connection goes back to the
  /// pool if both ends allow, the next request is read.
  void done() {
    bool reusable = upstream_reusable_ && res_->is_done() && req_sr_ && req_sr_->is_done() &&
                    up_->buf.size() == 0;
    release(status_, true);
    if (reusable && opts().upstream_keepalive > 0) {
      up_->reused = false;
      w_.give(std::move(up_), opts().upstream_keepalive);
    }
    next_request();
  }

  void next_request() {
    up_.reset();
    res_sr_.reset();
    req_sr_.reset();
    res_.reset();
    w_.give_back(std::move(relay_));
    if (!client_keep_ || (req_ && !req_->is_done())) {
      close_client();
      return;
    }
    req_.reset();
    read_request();
  }

  // -- upgrades ----------------------------------------------------------------

  /// Bytes both ways until either side closes (WebSocket after a 101).
  struct pump : std::enable_shared_from_this<pump> {
    stream_t& from;
    stream_t& to;
    std::shared_ptr<client_conn> owner;
    std::unique_ptr<char[]> buf = std::make_unique<char[]>(16 * 1024);
    pump(stream_t& f, stream_t& t, std::shared_ptr<client_conn> o)
        : from(f), to(t), owner(std::move(o)) {}
    void read() {
      from.async_read_some(net::buffer(buf.get(), 16 * 1024),
                           [self = shared_from_this()](beast::error_code ec, size_t n) {
                             if (ec) {
                               self->owner->end_tunnel();
                               return;
                             }
                             net::async_write(self->to, net::buffer(self->buf.get(), n),
                                              [self](beast::error_code e, size_t) {
                                                if (e)
                                                  self->owner->end_tunnel();
                                                else
                                                  self->read();
                                              });
                           });
    }
  };

  void tunnel() {
    record(status_);
    client_.expires_never();
    up_->stream.expires_never();
    auto self = shared_from_this();
    // What either side sent after its header is already buffered: it goes first.
    auto start = [self](beast::flat_buffer& pending, stream_t& from, stream_t& to) {
      auto p = std::make_shared<pump>(from, to, self);
      if (pending.size() == 0) {
        p->read();
        return;
      }
      auto data = std::make_shared<std::string>(beast::buffers_to_string(pending.data()));
      pending.consume(pending.size());
      net::async_write(to, net::buffer(*data), [p, data](beast::error_code e, size_t) {
        if (e)
          p->owner->end_tunnel();
        else
          p->read();
      });
    };
    start(cbuf_, client_, up_->stream);
    start(up_->buf, up_->stream, client_);
  }

  void end_tunnel() {
    beast::error_code ec;
    client_.socket().close(ec);
    if (up_)
      up_->stream.socket().close(ec);
    release(0, false);
  }

  // -- failures ----------------------------------------------------------------

  /// The upstream reset or closed before any byte of the response: a stale
  /// pooled connection is retried on a new one, an idempotent request
  /// without a body once on another instance; else 502.
  void upstream_broke(beast::error_code ec) {
    bool replayable = idempotent_ && !has_body_;
    bool stale = up_ && up_->reused;
    if (replayable && (stale || tried_.size() < 2)) {
      up_.reset();
      req_sr_.reset();
      res_.reset();
      if (stale) {
        connect(false);
        return;
      }
      leave_instance();
      choose_instance();
      return;
    }
    fail(502, "upstream_reset",
         "instance " + instance_ + " of app " + app_ + " closed the connection before " +
             "responding: " + ec.message());
  }

  /// A failure the client still can be told of (no response byte sent yet).
  void fail(unsigned status, std::string_view code, const std::string& message) {
    log()->warn("proxy: {} {} (request {})", status, message, request_id_);
    if (up_) {
      beast::error_code ec;
      up_->stream.socket().close(ec);
      up_.reset();
    }
    reply(status, code, message, false, false);
  }

  /// Ends the connection (a client gone, a response broken off).
  void abort() {
    release(status_, true);
    if (up_) {
      beast::error_code ec;
      up_->stream.socket().close(ec);
      up_.reset();
    }
    close_client();
  }

  void close_client() {
    beast::error_code ec;
    client_.socket().shutdown(tcp::socket::shutdown_send, ec);
    client_.socket().close(ec);
  }

  /// A response of the proxy's own; the connection stays open if the
  /// client asked and no request body is left unread.
  void reply(unsigned status, std::string_view code, const std::string& message, bool retry,
             bool close) {
    auto res = std::make_shared<bh::response<bh::string_body>>(static_cast<bh::status>(status),
                                                               client_http10_ ? 10 : 11);
    res->set(bh::field::content_type, "application/json");
    res->set(bh::field::cache_control, "no-store");
    if (!request_id_.empty())
      res->set("X-Request-ID", request_id_);
    if (retry)
      res->set(bh::field::retry_after, "1");
    res->body() = error_json(code, message);
    bool keep = !close && client_keep_ && req_ && req_->is_done() && !body_started_;
    client_keep_ = keep;
    res->keep_alive(keep);
    res->prepare_payload();
    release(status, true);
    up_.reset();
    client_.expires_after(opts().client_idle_timeout);
    bh::async_write(client_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec)
        self->close_client();
      else
        self->next_request();
    });
  }

  // -- activation (scale from zero) -------------------------------------------

  enum class hold { no, held, held_activate, full, expired };

  /// Under the lock: holds this request in the app's queue (its first wait
  /// arms the deadline and starts reading the body).
  hold park(app_entry& e) {
    if (expired_)
      return hold::expired;
    max_pending_ = e.activation->max_pending;
    if (e.waiting.size() >= e.activation->max_pending)
      return hold::full;
    waiter_id_ = px_->next_waiter++;
    e.waiting.push_back({waiter_id_, [weak = weak_from_this(), &w = w_, id = waiter_id_] {
                           net::post(w.ioc, [weak, id] {
                             if (auto self = weak.lock())
                               self->wake(id);
                           });
                         }});
    parked_ = true;
    cold_ = true;
    if (!timer_) {
      timer_.emplace(w_.ioc);
      timer_->expires_after(e.activation->timeout);
      timeout_ms_ = e.activation->timeout.count();
      timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
        if (!ec)
          self->on_activation_deadline();
      });
    }
    if (has_body_ && !expect_continue_ && !prefetching_)
      net::post(w_.ioc, [self = shared_from_this()] { self->prefetch(); });
    else if (!has_body_ && !watching_)
      net::post(w_.ioc, [self = shared_from_this()] { self->watch_client(); });
    auto now = steady::now();
    bool signal = e.waiting.size() == 1 || now - e.last_activate >= std::chrono::seconds(1);
    if (signal)
      e.last_activate = now;
    return signal ? hold::held_activate : hold::held;
  }

  /// Out of the app's queue (a client gone, the deadline); false if a wake
  /// took it out already.
  bool unpark() {
    if (!parked_)
      return false;
    parked_ = false;
    std::lock_guard<std::mutex> g{px_->mtx};
    auto i = px_->apps.find(app_);
    if (i == px_->apps.end())
      return false;
    auto& q = i->second.waiting;
    auto it = std::find_if(q.begin(), q.end(), [&](const waiter& x) { return x.id == waiter_id_; });
    if (it == q.end())
      return false;
    q.erase(it);
    return true;
  }

  /// A held request without a body: a client that closes meanwhile frees
  /// its place at once (not at the deadline). Bytes of a pipelined request
  /// wait in the socket for their turn.
  void watch_client() {
    if (!parked_ || watching_)
      return;
    watching_ = true;
    client_.socket().async_wait(
        tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
          self->watching_ = false;
          if (ec || !self->parked_)
            return;
          char b;
          auto n = ::recv(self->client_.socket().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            if (self->unpark())
              self->abort(); // gone while held
        });
  }

  /// An instance is ready (or the app changed): pick one, or be held again.
  void wake(uint64_t id) {
    if (!parked_ || id != waiter_id_)
      return; // a wake for a request that went on otherwise
    parked_ = false;
    if (watching_) {
      beast::error_code ec;
      client_.socket().cancel(ec); // the watch ends (operation_aborted)
    }
    if (prefetching_) {
      resume_ = true; // once the body read in progress completes
      return;
    }
    choose_instance();
  }

  void on_activation_deadline() {
    if (parked_) {
      if (unpark()) {
        activation_timed_out();
        return;
      }
    }
    // A wake is on its way or the request went on: a request held again
    // later is answered at once.
    expired_ = true;
  }

  void activation_timed_out() {
    answered_ = true;
    if (prefetching_ || watching_) {
      beast::error_code ec;
      client_.socket().cancel(ec); // the read ends; the reply follows it
    }
    reply(503, "activation_timeout",
          "app " + app_ + " has no ready instance " + std::to_string(timeout_ms_) +
              " ms after this request arrived (scaling.policy.activation.timeoutSeconds)",
          true, false);
  }

  /// Reads the held request's body into the relay buffer, up to its size
  /// (the rest waits in the socket: the client is slowed, nothing dropped).
  void prefetch() {
    if (!relay_)
      relay_ = w_.buffer();
    if (req_->is_done() || prefetched_ >= relay_bytes || !parked_)
      return;
    auto& m = req_->get();
    m.body().data = relay_.get() + prefetched_;
    m.body().size = relay_bytes - prefetched_;
    prefetching_ = true;
    client_.expires_after(opts().client_idle_timeout);
    bh::async_read_some(
        client_, cbuf_, *req_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_prefetched(ec); });
  }

  void on_prefetched(beast::error_code ec) {
    prefetching_ = false;
    if (ec == bh::error::need_buffer)
      ec = {};
    auto& m = req_->get();
    prefetched_ = relay_bytes - m.body().size;
    if (ec) {
      // The client went away (or stalled) while held; or the deadline's
      // 503 cancelled this read and is under way.
      unpark();
      resume_ = false;
      if (!answered_)
        abort();
      return;
    }
    if (parked_) {
      prefetch();
      return;
    }
    if (resume_) {
      resume_ = false;
      choose_instance();
    }
  }

  // -- bookkeeping -------------------------------------------------------------

  void leave_instance() {
    if (!in_balancer_)
      return;
    in_balancer_ = false;
    std::lock_guard<std::mutex> g{px_->mtx};
    if (auto i = px_->apps.find(app_); i != px_->apps.end())
      i->second.bal.finished(instance_);
  }

  void record(unsigned status) {
    if (recorded_ || app_.empty() || !opts().on_request)
      return;
    recorded_ = true;
    proxy_record r;
    r.app = app_;
    r.instance = in_balancer_ ? std::string_view{instance_} : std::string_view{};
    r.status = status;
    r.seconds = std::chrono::duration<double>(steady::now() - t0_).count();
    opts().on_request(r);
  }

  /// The request is over: counts released, recorded once (`measure`).
  void release(unsigned status, bool measure) {
    if (measure && status != 0)
      record(status);
    unpark();
    if (timer_) {
      timer_->cancel();
      timer_.reset();
    }
    leave_instance();
    if (active_) {
      active_ = false;
      std::lock_guard<std::mutex> g{px_->mtx};
      if (auto i = px_->apps.find(app_); i != px_->apps.end() && i->second.active > 0)
        --i->second.active;
    }
    recorded_ = false;
    app_.clear();
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (auto& s : v)
      out += (out.empty() ? "" : ", ") + s;
    return out;
  }

  std::shared_ptr<proxy_server::impl> px_;
  worker& w_;
  stream_t client_;
  beast::flat_buffer cbuf_;
  uint16_t listener_port_;
  std::string client_ip_;
  bool first_ = true;
  std::optional<bh::request_parser<bh::buffer_body>> req_;
  std::optional<bh::response_parser<bh::buffer_body>> res_;
  std::optional<bh::request_serializer<bh::buffer_body>> req_sr_;
  std::optional<bh::response_serializer<bh::buffer_body>> res_sr_;
  std::shared_ptr<upstream> up_;
  std::unique_ptr<char[]> relay_;
  std::string app_;
  std::string instance_;
  uint16_t port_ = 0;
  std::string request_id_;
  std::vector<std::string> tried_;
  steady::time_point t0_;
  unsigned status_ = 0;
  bool client_keep_ = true;
  bool client_http10_ = false;
  bool head_ = false;
  bool idempotent_ = false;
  bool has_body_ = false;
  bool body_started_ = false;
  bool expect_continue_ = false;
  bool continue_sent_ = false;
  bool upgrade_ = false;
  bool upstream_reusable_ = false;
  bool in_balancer_ = false;
  bool active_ = false;
  bool recorded_ = false;
  // Activation: held in the app's queue, deadline, body read meanwhile.
  std::optional<net::steady_timer> timer_;
  uint64_t waiter_id_ = 0;
  size_t prefetched_ = 0;
  size_t max_pending_ = 0;
  int64_t timeout_ms_ = 0;
  bool parked_ = false;
  bool cold_ = false;
  bool expired_ = false;
  bool prefetching_ = false;
  bool resume_ = false;
  bool answered_ = false;
  bool watching_ = false;
};

} // namespace

std::shared_ptr<proxy_server::impl::listener>
proxy_server::impl::listen(const std::string& host, uint16_t port, uint16_t app_port) {
  if (workers.empty())
    throw std::runtime_error("the proxy has stopped");
  beast::error_code ec;
  auto address = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + host + ": " + ec.message());
  auto l = std::make_shared<listener>(*this, workers.front()->ioc, app_port);
  tcp::endpoint ep{address, port};
  l->acc.open(ep.protocol(), ec);
  if (!ec)
    l->acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec)
    l->acc.bind(ep, ec);
  if (!ec)
    l->acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                             ec.message());
  net::post(l->acc.get_executor(), [l] { l->accept(); });
  return l;
}

void proxy_server::impl::adopt(socket_t s, worker& w, uint16_t listener_port) {
  if (open.load() >= opts.max_connections) {
    beast::error_code ec;
    s.close(ec); // past proxy.max_connections
    return;
  }
  ++open;
  net::post(w.ioc, [px = shared_from_this(), &w, s = std::move(s), listener_port]() mutable {
    std::make_shared<client_conn>(px, w, std::move(s), listener_port)->start();
  });
}

void proxy_server::impl::schedule_sweep(worker& w) {
  w.sweeper.expires_after(std::chrono::seconds(1));
  w.sweeper.async_wait([this, &w](beast::error_code ec) {
    if (ec)
      return;
    w.sweep(opts.upstream_idle_timeout);
    schedule_sweep(w);
  });
}

proxy_server::proxy_server(proxy_options opts) : impl_(std::make_shared<impl>(std::move(opts))) {
  auto n = std::max(1, impl_->opts.io_threads);
  for (int i = 0; i < n; ++i)
    impl_->workers.push_back(std::make_unique<worker>());
}

proxy_server::~proxy_server() {
  stop();
}

void proxy_server::start() {
  auto& px = *impl_;
  {
    std::lock_guard<std::mutex> g{px.listen_mtx};
    px.shared_listener = px.listen(px.opts.host, px.opts.port, 0);
    px.bound_port = px.shared_listener->acc.local_endpoint().port();
  }
  px.running = true;
  for (auto& w : px.workers) {
    px.schedule_sweep(*w);
    w->thread = std::thread([&ioc = w->ioc] {
      auto guard = net::make_work_guard(ioc);
      ioc.run();
    });
  }
  log()->info("proxy listening on {}:{} ({} io threads)", px.opts.host, px.bound_port,
              px.workers.size());
}

void proxy_server::stop() {
  auto& px = *impl_;
  if (!px.running)
    return;
  px.running = false;
  for (auto& w : px.workers)
    w->ioc.stop();
  for (auto& w : px.workers)
    if (w->thread.joinable())
      w->thread.join();
  std::lock_guard<std::mutex> g{px.listen_mtx};
  beast::error_code ec;
  if (px.shared_listener)
    px.shared_listener->acc.close(ec);
  for (auto& [app, l] : px.app_listeners)
    l->acc.close(ec);
  px.shared_listener.reset();
  px.app_listeners.clear();
  // Pending handlers, and the connections they hold, go with the contexts.
  px.workers.clear();
}

uint16_t proxy_server::port() const {
  return impl_->bound_port;
}

void proxy_server::set_app(const std::string& app, const std::optional<expose_rule>& rule,
                           const std::vector<balancer::endpoint>& ready,
                           std::optional<activation_options> activation) {
  auto& px = *impl_;
  std::deque<waiter> woken;
  std::lock_guard<std::mutex> lg{px.listen_mtx};
  {
    // A conflict throws here, before anything changes.
    std::lock_guard<std::mutex> g{px.mtx};
    auto trial = px.routes;
    trial.set(app, rule);
  }
  uint16_t want = rule ? rule->port : 0;
  auto have = px.app_listeners.find(app);
  std::shared_ptr<impl::listener> fresh;
  if (want != 0 && (have == px.app_listeners.end() || have->second->app_port != want))
    fresh = px.listen(px.opts.host, want, want); // throws: nothing changed
  {
    std::lock_guard<std::mutex> g{px.mtx};
    px.routes.set(app, rule);
    auto i = px.apps.find(app);
    if (i == px.apps.end())
      i = px.apps.emplace(app, app_entry{px.opts.balancing}).first;
    i->second.bal.set_ready(ready);
    i->second.ready = ready.size();
    i->second.activation = activation;
    // Held requests go on, oldest first, once an instance is ready (or are
    // answered when the app no longer holds requests).
    if (!ready.empty() || !activation)
      woken.swap(i->second.waiting);
  }
  for (auto& x : woken)
    x.wake();
  if (fresh) {
    if (have != px.app_listeners.end())
      have->second->close();
    px.app_listeners[app] = fresh;
    log()->info("proxy: app {} listens on {}:{}", app, px.opts.host, want);
  } else if (want == 0 && have != px.app_listeners.end()) {
    have->second->close();
    px.app_listeners.erase(have);
  }
}

void proxy_server::remove_app(const std::string& app) {
  auto& px = *impl_;
  std::lock_guard<std::mutex> lg{px.listen_mtx};
  std::deque<waiter> woken;
  {
    std::lock_guard<std::mutex> g{px.mtx};
    px.routes.remove(app);
    if (auto i = px.apps.find(app); i != px.apps.end()) {
      woken.swap(i->second.waiting);
      px.apps.erase(i);
    }
  }
  for (auto& x : woken)
    x.wake(); // answered 503: the app is gone
  if (auto i = px.app_listeners.find(app); i != px.app_listeners.end()) {
    i->second->close();
    px.app_listeners.erase(i);
  }
}

uint32_t proxy_server::in_flight(const std::string& app, const std::string& instance) const {
  std::lock_guard<std::mutex> g{impl_->mtx};
  auto i = impl_->apps.find(app);
  if (i == impl_->apps.end())
    return 0;
  auto& b = i->second.bal;
  return b.in_flight(instance) + (b.routable(instance) ? 1 : 0);
}

std::optional<proxy_app_view> proxy_server::app_view(const std::string& app) const {
  std::lock_guard<std::mutex> g{impl_->mtx};
  auto i = impl_->apps.find(app);
  if (i == impl_->apps.end())
    return std::nullopt;
  proxy_app_view v;
  v.app = app;
  v.active_connections = i->second.active;
  v.instances = i->second.bal.loads(steady::now());
  v.last_request_ns = i->second.last_request_ns;
  v.pending = i->second.waiting.size();
  return v;
}

std::vector<std::string> proxy_server::apps() const {
  std::lock_guard<std::mutex> g{impl_->mtx};
  std::vector<std::string> out;
  for (auto& [name, e] : impl_->apps)
    out.push_back(name);
  return out;
}

size_t proxy_server::connections() const {
  return impl_->open.load();
}

std::vector<uint16_t> proxy_server::app_ports() const {
  std::lock_guard<std::mutex> g{impl_->listen_mtx};
  std::vector<uint16_t> out;
  for (auto& [app, l] : impl_->app_listeners)
    out.push_back(l->app_port);
  return out;
}

} // namespace troupe::http
