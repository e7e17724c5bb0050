#include "http/server.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "runtime/logging.hpp"

namespace troupe::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr size_t header_limit = 16 * 1024;

std::string generate_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (size_t i = 0; i < id.size(); i += 16) {
    auto x = rng();
    for (size_t j = 0; j < 16; ++j, x >>= 4)
      id[i + j] = hex[x & 0xf];
  }
  return id;
}

/// Accepts the client's id when it is short printable ASCII, else makes one.
std::string request_id_for(std::string_view client) {
  if (client.empty() || client.size() > 200)
    return generate_request_id();
  for (unsigned char c : client)
    if (c < 0x21 || c > 0x7e)
      return generate_request_id();
  return std::string{client};
}

void append_chunk(std::string& out, std::string_view payload) {
  char size[20];
  auto n = std::snprintf(size, sizeof(size), "%zx\r\n", payload.size());
  out.append(size, static_cast<size_t>(n));
  out.append(payload);
  out += "\r\n";
}

} // namespace

class session;

// -- server::impl -----------------------------------------------------------------

class server::impl {
public:
  impl(server_options opts, std::shared_ptr<const router> routes)
    : opts_(std::move(opts)),
      routes_(std::move(routes)),
      log_(logging::get("http")),
      ioc_(opts_.io_threads),
      acceptor_(net::make_strand(ioc_)) {
  }

  std::string bind(const std::string& host, uint16_t port) {
    beast::error_code ec;
    auto addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + host + ": not an IP address");
    tcp::endpoint ep{addr, port};
    acceptor_.open(ep.protocol(), ec);
    if (!ec)
      acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec)
      acceptor_.bind(ep, ec);
    if (!ec)
      acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": "
                               + ec.message());
    auto bound = acceptor_.local_endpoint();
    auto a = bound.address().to_string();
    if (bound.address().is_v6())
      a = "[" + a + "]";
    return a + ":" + std::to_string(bound.port());
  }

  void start() {
    do_accept();
    sweep();
    threads_.reserve(static_cast<size_t>(opts_.io_threads));
    for (int i = 0; i < opts_.io_threads; ++i)
      threads_.emplace_back([this] { ioc_.run(); });
  }

  void stop(std::chrono::milliseconds grace);

  void do_accept() {
    if (opts_.io_threads == 1)
      acceptor_.async_accept(ioc_, beast::bind_front_handler(&impl::on_accept, this));
    else
      acceptor_.async_accept(net::make_strand(ioc_),
                             beast::bind_front_handler(&impl::on_accept, this));
  }

  /// One io thread needs no strand per connection: its handlers never run
  /// concurrently anyway.
  tcp::socket new_socket() {
    if (opts_.io_threads == 1)
      return tcp::socket{ioc_};
    return tcp::socket{net::make_strand(ioc_)};
  }

  void on_accept(beast::error_code ec, tcp::socket socket);
  void serve(tcp::socket socket);

  /// Once a second: connections past their read/write deadline are closed.
  void sweep() {
    sweep_timer_.expires_after(std::chrono::seconds(1));
    sweep_timer_.async_wait([this](beast::error_code ec) {
      if (ec || stopping_)
        return;
      auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   clock_type::now().time_since_epoch())
                   .count();
      std::vector<std::shared_ptr<session>> live;
      {
        std::lock_guard<std::mutex> guard{mtx_};
        live.reserve(sessions_.size());
        for (auto& [ptr, weak] : sessions_)
          if (auto s = weak.lock())
            live.push_back(std::move(s));
      }
      for (auto& s : live)
        expire(*s, now);
      sweep();
    });
  }

  static void expire(session& s, int64_t now);

  void register_session(const std::shared_ptr<session>& s) {
    std::lock_guard<std::mutex> guard{mtx_};
    sessions_.emplace(s.get(), s);
  }

  void unregister_session(session* s) {
    std::lock_guard<std::mutex> guard{mtx_};
    sessions_.erase(s);
    if (sessions_.empty())
      cv_.notify_all();
  }

  void request_started() { ++in_flight_; }

  void request_finished() {
    if (--in_flight_ == 0) {
      std::lock_guard<std::mutex> guard{mtx_};
      cv_.notify_all();
    }
  }

  server_options opts_;
  std::shared_ptr<const router> routes_;
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<size_t> in_flight_{0};
  std::atomic<size_t> sse_streams_{0};
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::unordered_map<session*, std::weak_ptr<session>> sessions_;
  // Declared last, destroyed first: pending handlers (and the sessions they
  // own) go away while the members above still exist.
  net::io_context ioc_;
  /// Keeps the io threads running while stop() still posts work to sessions
  /// (without it run() returns once the last socket closed, and the posted
  /// shutdown steps never run).
  net::executor_work_guard<net::io_context::executor_type> work_{ioc_.get_executor()};
  tcp::acceptor acceptor_;
  net::steady_timer sweep_timer_{acceptor_.get_executor()};
  net::steady_timer accept_retry_{acceptor_.get_executor()};
  std::vector<std::thread> threads_;
};

// -- sse --------------------------------------------------------------------------

class sse_impl final : public sse_stream {
public:
  sse_impl(std::weak_ptr<session> s, size_t limit, size_t limit_bytes)
    : session_(std::move(s)), limit_(limit), limit_bytes_(limit_bytes) {}

  bool send(std::string_view id, std::string_view event, std::string_view data) override;
  bool comment(std::string_view text) override;
  bool write(std::string_view bytes) override {
    return bytes.empty() || enqueue(std::string{bytes});
  }
  void close() override;
  void abort() override;
  bool closed() const override { return closed_.load(); }
  size_t backlog() const override { return queued_.load(); }
  size_t capacity() const override { return limit_; }
  size_t backlog_bytes() const override { return queued_bytes_.load(); }
  size_t capacity_bytes() const override { return limit_bytes_; }
  void on_close(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (!closed_) {
        callbacks_.push_back(std::move(fn));
        return;
      }
    }
    fn();
  }

  /// Marks the stream closed and runs the callbacks (once).
  void mark_closed() {
    std::vector<std::function<void()>> cbs;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (closed_.exchange(true))
        return;
      cbs.swap(callbacks_);
    }
    for (auto& f : cbs)
      f();
  }

  void written(size_t bytes) {
    --queued_;
    queued_bytes_ -= bytes;
  }

private:
  bool enqueue(std::string payload);

  std::weak_ptr<session> session_;
  size_t limit_;
  size_t limit_bytes_;
  std::atomic<bool> closed_{false};
  std::atomic<size_t> queued_{0};
  std::atomic<size_t> queued_bytes_{0};
  std::mutex mtx_;
  std::vector<std::function<void()>> callbacks_;
};

// -- session ----------------------------------------------------------------------

class session : public std::enable_shared_from_this<session> {
public:
  session(server::impl& srv, tcp::socket&& socket) : srv_(srv), stream_(std::move(socket)) {}

  /// Closes the connection if its read/write deadline passed (called by the
  /// server's once-a-second sweep; cheaper than a timer per operation).
  void close_if_expired(int64_t now) {
    auto d = deadline_.load(std::memory_order_relaxed);
    if (d != 0 && d < now)
      net::dispatch(stream_.get_executor(), [self = shared_from_this(), now] {
        auto d = self->deadline_.load(std::memory_order_relaxed);
        if (d != 0 && d < now)
          self->do_close();
      });
  }

  ~session() { srv_.unregister_session(this); }

  void run() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&session::do_read, shared_from_this()));
  }

  /// Called on shutdown: closes idle connections, ends SSE streams, and lets
  /// a request being served finish before closing.
  void shutdown() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->closing_ = true;
      if (self->sse_) {
        // An event stream ends cleanly (clients resume with Last-Event-ID);
        // a download cut short must not look complete.
        if (self->plain_stream_ && !self->sse_->closed())
          self->sse_->abort(); // a download that has not ended
        else
          self->sse_->close();
      } else if (!self->busy_) {
        self->do_close();
      }
    });
  }

  /// Posts a complete response (any thread).
  void post_response(response res, std::shared_ptr<request> req, clock_type::time_point started,
                     std::string route) {
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this(), res = std::move(res), req = std::move(req), started,
                   route = std::move(route)]() mutable {
                    self->write_response(std::move(res), *req, started, route);
                  });
  }

  /// Starts an SSE response (any thread); returns the stream.
  /// `content_type` empty: SSE; else a plain chunked body (exchange::chunked).
  std::shared_ptr<sse_stream> start_sse(std::shared_ptr<request> req,
                                        std::vector<std::pair<std::string, std::string>> headers,
                                        clock_type::time_point started, std::string route,
                                        std::string content_type = {}) {
    auto stream = std::make_shared<sse_impl>(weak_from_this(), srv_.opts_.sse_queue_limit,
                                             srv_.opts_.sse_queue_bytes);
    net::dispatch(stream_.get_executor(), [self = shared_from_this(), stream, req, started,
                                           headers = std::move(headers), route = std::move(route),
                                           content_type = std::move(content_type)]() mutable {
      self->begin_sse(stream, *req, headers, started, route, content_type);
    });
    return stream;
  }

  /// Closes the connection at once, dropping whatever is queued (slow SSE
  /// clients).
  void abort() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->do_close();
      // The write in flight still reads its buffer until its handler runs
      // (with operation_aborted): keep that one, drop the rest.
      if (self->writing_ && !self->outq_.empty())
        self->outq_.erase(std::next(self->outq_.begin()), self->outq_.end());
      else
        self->outq_.clear();
    });
  }

  /// Queues raw bytes of an SSE stream (already chunk-framed) on the strand.
  /// `counted`: the bytes an sse_impl accounted for (0: not counted).
  void post_sse(std::string bytes, bool last, size_t counted = 0) {
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this(), bytes = std::move(bytes), last, counted]() mutable {
                    self->queue_write(std::move(bytes), counted, last);
                  });
  }

private:
  void do_read() {
    if (closing_) {
      do_close();
      return;
    }
    parser_.emplace();
    parser_->body_limit(srv_.opts_.body_limit);
    parser_->header_limit(header_limit);
    arm_deadline();
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout
        || ec == net::error::eof || ec == net::error::connection_reset
        || ec == net::error::operation_aborted) {
      do_close();
      return;
    }
    if (ec) {
      // Only protocol errors get an answer; socket errors just close.
      if (&ec.category() != &bhttp::make_error_code(bhttp::error::body_limit).category()
          || ec == bhttp::error::partial_message) {
        do_close();
        return;
      }
      unsigned status = 400;
      std::string code = "bad_request";
      std::string msg = "malformed HTTP request: " + ec.message();
      if (ec == bhttp::error::body_limit) {
        status = 413;
        code = "payload_too_large";
        msg = "request body exceeds the limit of " + std::to_string(srv_.opts_.body_limit)
              + " bytes (http.max_body_bytes)";
      } else if (ec == bhttp::error::header_limit) {
        status = 431;
        code = "request_header_fields_too_large";
        msg = "request headers exceed " + std::to_string(header_limit) + " bytes";
      }
      auto req = std::make_shared<request>();
      req->method = "?";
      if (parser_ && parser_->is_header_done()) {
        auto& h = parser_->get();
        req->method = std::string{h.method_string()};
        req->target = std::string{h.target()};
        req->request_id = request_id_for(h["X-Request-ID"]);
      } else {
        req->request_id = generate_request_id();
      }
      closing_ = true;  // the stream is out of sync: answer, then close
      busy_ = true;
      srv_.request_started();
      write_response(response::error(status, code, msg), *req, clock_type::now(), "");
      return;
    }
    dispatch_request(parser_->release());
  }

  void dispatch_request(bhttp::request<bhttp::string_body>&& raw) {
    busy_ = true;
    // A handler may wait on actors; their requests carry their own timeouts.
    deadline_.store(0, std::memory_order_relaxed);
    srv_.request_started();
    auto started = clock_type::now();
    auto req = std::make_shared<request>();
    req->method = std::string{raw.method_string()};
    req->target = std::string{raw.target()};
    parse_target(req->target, req->path, req->query);
    for (auto& field : raw) {
      std::string name{field.name_string()};
      for (auto& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto [it, inserted] = req->headers.emplace(std::move(name), std::string{field.value()});
      if (!inserted) {
        it->second += ", ";
        it->second += field.value();
      }
    }
    req->body = std::move(raw.body());
    req->request_id = request_id_for(raw["X-Request-ID"]);
    keep_alive_ = raw.keep_alive();
    version_ = raw.version();
    logging::request_scope scope{req->request_id};
    if (srv_.stopping_)
      closing_ = true;
    auto m = srv_.routes_->match(req->method, req->path);
    if (!m.fn) {
      auto res = m.allow.empty()
                   ? response::error(404, "not_found", "no route for " + req->path)
                   : response::error(405, "method_not_allowed",
                                     req->method + " is not allowed on " + req->path);
      if (!m.allow.empty())
        res.headers.emplace_back("Allow", m.allow);
      write_response(std::move(res), *req, started, m.route);
      return;
    }
    req->params = std::move(m.params);
    auto ex = std::make_shared<exchange_impl>(shared_from_this(), req, started, m.route);
    try {
      (*m.fn)(ex);
    } catch (const std::exception& e) {
      srv_.log_->error("handler for {} {} failed: {}", req->method, req->path, e.what());
      ex->reply(response::error(500, "internal", e.what()));
    }
  }

  class exchange_impl final : public exchange {
  public:
    exchange_impl(std::shared_ptr<session> s, std::shared_ptr<request> req,
                  clock_type::time_point started, std::string route)
      : session_(std::move(s)), req_(std::move(req)), started_(started), route_(std::move(route)) {}

    ~exchange_impl() override {
      if (!answered_.exchange(true))
        session_->post_response(response::error(500, "internal", "the handler did not answer"),
                                req_, started_, route_);
    }

    const request& req() const override { return *req_; }

    void reply(response res) override {
      if (answered_.exchange(true))
        return;
      session_->post_response(std::move(res), req_, started_, route_);
    }

    std::shared_ptr<sse_stream>
    stream(std::vector<std::pair<std::string, std::string>> headers) override {
      if (answered_.exchange(true))
        throw std::logic_error("exchange answered twice");
      if (req_->method == "HEAD") {
        // Headers only; the producer finds the stream closed and stops.
        response res;
        res.content_type = "text/event-stream";
        session_->post_response(std::move(res), req_, started_, route_);
        auto closed = std::make_shared<sse_impl>(std::weak_ptr<session>{}, 0, 0);
        closed->mark_closed();
        return closed;
      }
      return session_->start_sse(req_, std::move(headers), started_, route_);
    }

    std::shared_ptr<sse_stream> chunked(std::string content_type) override {
      if (answered_.exchange(true))
        throw std::logic_error("exchange answered twice");
      if (req_->method == "HEAD") {
        response res;
        res.content_type = content_type;
        session_->post_response(std::move(res), req_, started_, route_);
        auto closed = std::make_shared<sse_impl>(std::weak_ptr<session>{}, 0, 0);
        closed->mark_closed();
        return closed;
      }
      return session_->start_sse(req_, {}, started_, route_, std::move(content_type));
    }

  private:
    std::shared_ptr<session> session_;
    std::shared_ptr<request> req_;
    clock_type::time_point started_;
    std::string route_;
    std::atomic<bool> answered_{false};
  };

  void access_log(const request& req, unsigned status, clock_type::time_point started,
                  const std::string& route) {
    if (srv_.opts_.on_answered)
      srv_.opts_.on_answered(
        req, route, status, std::chrono::duration<double>(clock_type::now() - started).count());
    auto quiet = std::find(srv_.opts_.quiet_routes.begin(), srv_.opts_.quiet_routes.end(), route)
                 != srv_.opts_.quiet_routes.end();
    auto lvl = quiet ? spdlog::level::debug : spdlog::level::info;
    if (!srv_.log_->should_log(lvl))
      return;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - started);
    logging::request_scope scope{req.request_id};
    srv_.log_->log(lvl, "{} {} {} {:.3f}ms", req.method, req.target, status, us.count() / 1000.0);
  }

  /// Serializes by hand into a buffer reused across the connection's
  /// responses: the hot path (probes) allocates next to nothing.
  void write_response(response res, const request& req, clock_type::time_point started,
                      const std::string& route) {
    auto close = closing_ || !keep_alive_ || srv_.stopping_;
    auto& out = out_;
    out.clear();
    out += version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    out += std::to_string(res.status);
    out += ' ';
    out += bhttp::obsolete_reason(static_cast<bhttp::status>(res.status));
    out += "\r\nServer: troupe\r\nContent-Type: ";
    out += res.content_type;
    out += "\r\nX-Request-ID: ";
    out += req.request_id;
    out += "\r\nContent-Length: ";
    out += std::to_string(res.body.size());
    for (auto& [k, v] : res.headers) {
      out += "\r\n";
      out += k;
      out += ": ";
      out += v;
    }
    if (close)
      out += "\r\nConnection: close";
    else if (version_ == 10)
      out += "\r\nConnection: keep-alive";
    out += "\r\n\r\n";
    if (req.method != "HEAD")
      out += res.body;
    access_log(req, res.status, started, route);
    arm_deadline();
    net::async_write(stream_, net::buffer(out),
                     [self = shared_from_this(), close](beast::error_code ec, size_t) {
                       self->on_write(ec, close);
                     });
  }

  void arm_deadline() {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                (clock_type::now() + srv_.opts_.request_timeout).time_since_epoch())
                .count();
    deadline_.store(ns, std::memory_order_relaxed);
  }

  void on_write(beast::error_code ec, bool close) {
    busy_ = false;
    srv_.request_finished();
    if (ec || close) {
      do_close();
      return;
    }
    do_read();
  }

  void begin_sse(const std::shared_ptr<sse_impl>& stream, const request& req,
                 const std::vector<std::pair<std::string, std::string>>& headers,
                 clock_type::time_point started, const std::string& route,
                 const std::string& content_type) {
    sse_ = stream;
    ++srv_.sse_streams_;
    bool plain = !content_type.empty();
    plain_stream_ = plain;
    std::string head = "HTTP/1.1 200 OK\r\n"
                       "Server: troupe\r\n"
                       "Content-Type: ";
    head += plain ? content_type : std::string{"text/event-stream"};
    head += plain ? "\r\nConnection: close\r\n" : "\r\nCache-Control: no-cache\r\n";
    head += "X-Accel-Buffering: no\r\n"
            "Transfer-Encoding: chunked\r\n"
            "X-Request-ID: ";
    head += req.request_id;
    head += "\r\n";
    for (auto& [k, v] : headers) {
      head += k;
      head += ": ";
      head += v;
      head += "\r\n";
    }
    head += "\r\n";
    access_log(req, 200, started, route);
    // The request is answered; the stream no longer holds up a drain.
    busy_ = false;
    srv_.request_finished();
    deadline_.store(0, std::memory_order_relaxed);
    queue_write(std::move(head), 0, false);
    watch_disconnect();
    if (!plain)
      arm_ping();
    if (closing_) {
      if (plain)
        stream->abort();
      else
        stream->close();
    }
  }

  /// A read on an SSE connection only ever ends with the client going away.
  void watch_disconnect() {
    stream_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec)
                                self->sse_gone();
                              else
                                self->watch_disconnect();
                            });
  }

  void arm_ping() {
    if (!ping_timer_)
      ping_timer_.emplace(stream_.get_executor());
    ping_timer_->expires_after(srv_.opts_.sse_ping_interval);
    ping_timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || !self->sse_ || self->sse_->closed())
        return;
      if (clock_type::now() - self->last_write_ >= self->srv_.opts_.sse_ping_interval / 2)
        self->sse_->comment("ping");
      self->arm_ping();
    });
  }

  void sse_gone() {
    if (sse_)
      sse_->mark_closed();
    if (ping_timer_)
      ping_timer_->cancel();
    do_close();
  }

  void queue_write(std::string bytes, size_t counted, bool last) {
    if (closed_socket_)
      return;
    outq_.push_back({std::move(bytes), counted, last});
    if (!writing_)
      write_next();
  }

  void write_next() {
    if (outq_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    // A client that stops reading must not pin the queue: the sweep closes
    // the connection once a write has not finished within request_timeout.
    arm_deadline();
    auto& front = outq_.front();
    net::async_write(stream_, net::buffer(front.bytes),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->on_sse_write(ec);
                     });
  }

  void on_sse_write(beast::error_code ec) {
    deadline_.store(0, std::memory_order_relaxed);
    if (outq_.empty())  // aborted meanwhile
      return;
    auto item = std::move(outq_.front());
    outq_.pop_front();
    last_write_ = clock_type::now();
    if (item.counted != 0 && sse_)
      sse_->written(item.counted);
    if (ec) {
      sse_gone();
      return;
    }
    if (item.last) {
      sse_gone();
      return;
    }
    write_next();
  }

  void do_close() {
    if (closed_socket_)
      return;
    closed_socket_ = true;
    if (sse_) {
      sse_->mark_closed();
      if (--srv_.sse_streams_ == 0) {
        std::lock_guard<std::mutex> guard{srv_.mtx_};
        srv_.cv_.notify_all();
      }
    }
    if (ping_timer_)
      ping_timer_->cancel();
    deadline_.store(0, std::memory_order_relaxed);
    beast::error_code ec;
    stream_.shutdown(tcp::socket::shutdown_both, ec);
    stream_.close(ec);
  }

  struct pending_write {
    std::string bytes;
    /// Bytes the stream's queue accounted for (0: the head or the end).
    size_t counted;
    bool last;
  };

  server::impl& srv_;
  tcp::socket stream_;
  /// Response bytes being written (reused).
  std::string out_;
  /// steady_clock ns after which the connection is closed; 0 = no deadline.
  std::atomic<int64_t> deadline_{0};
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  bool busy_ = false;
  bool closing_ = false;
  bool closed_socket_ = false;
  std::shared_ptr<sse_impl> sse_;
  /// sse_ is a chunked download, not an event stream.
  bool plain_stream_ = false;
  std::deque<pending_write> outq_;
  bool writing_ = false;
  std::optional<net::steady_timer> ping_timer_;
  clock_type::time_point last_write_ = clock_type::now();
  char discard_[512];
};

bool sse_impl::enqueue(std::string payload) {
  if (closed_)
    return false;
  auto s = session_.lock();
  if (!s) {
    mark_closed();
    return false;
  }
  std::string chunk;
  chunk.reserve(payload.size() + 16);
  append_chunk(chunk, payload);
  auto bytes = chunk.size();
  auto events = ++queued_;
  auto queued_bytes = queued_bytes_ += bytes;
  if (events > limit_ || queued_bytes > limit_bytes_) {
    // A reader this slow resumes with Last-Event-ID instead of holding memory.
    logging::get("http")->warn(
      "SSE client too slow ({} events, {} bytes queued); dropping the connection", events,
      queued_bytes);
    mark_closed();
    s->abort();
    return false;
  }
  s->post_sse(std::move(chunk), false, bytes);
  return true;
}

bool sse_impl::send(std::string_view id, std::string_view event, std::string_view data) {
  std::string payload;
  payload.reserve(data.size() + event.size() + id.size() + 32);
  if (!id.empty()) {
    payload += "id: ";
    payload += id;
    payload += '\n';
  }
  if (!event.empty()) {
    payload += "event: ";
    payload += event;
    payload += '\n';
  }
  // Multi-line data becomes several data: lines (WHATWG).
  size_t pos = 0;
  do {
    auto nl = data.find('\n', pos);
    payload += "data: ";
    payload += data.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
    payload += '\n';
    pos = nl == std::string_view::npos ? data.size() + 1 : nl + 1;
  } while (pos <= data.size());
  payload += '\n';
  return enqueue(std::move(payload));
}

bool sse_impl::comment(std::string_view text) {
  std::string payload = ": ";
  payload += text;
  payload += "\n\n";
  return enqueue(std::move(payload));
}

void sse_impl::abort() {
  auto s = session_.lock();
  mark_closed();
  if (s)
    s->abort();
}

void sse_impl::close() {
  if (closed_)
    return;
  auto s = session_.lock();
  mark_closed();
  if (s)
    s->post_sse("0\r\n\r\n", true);
}

// -- server::impl (continued) --------------------------------------------------------

void server::impl::expire(session& s, int64_t now) {
  s.close_if_expired(now);
}

void server::impl::serve(tcp::socket socket) {
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  auto s = std::make_shared<session>(*this, std::move(socket));
  register_session(s);
  s->run();
}

void server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open())
      return;
    // Out of file descriptors (or similar): retry shortly instead of spinning.
    log_->warn("accept failed: {}; retrying in 100 ms", ec.message());
    accept_retry_.expires_after(std::chrono::milliseconds(100));
    accept_retry_.async_wait([this](beast::error_code e) {
      if (!e && !stopping_)
        do_accept();
    });
    return;
  } else {
    serve(std::move(socket));
    // Drain the rest of the backlog without another trip through the
    // reactor: a burst of new connections is taken at once.
    acceptor_.non_blocking(true, ec);
    for (int i = 0; i < 64 && !stopping_; ++i) {
      auto next = new_socket();
      acceptor_.accept(next, ec);
      if (ec)
        break;
      serve(std::move(next));
    }
  }
  if (!stopping_)
    do_accept();
}

void server::impl::stop(std::chrono::milliseconds grace) {
  if (stopped_)
    return;
  stopped_ = true;
  stopping_ = true;
  auto deadline = clock_type::now() + grace;
  net::dispatch(acceptor_.get_executor(), [this] {
    beast::error_code ec;
    acceptor_.close(ec);
    sweep_timer_.cancel();
    accept_retry_.cancel();
  });
  // In-flight requests finish first (they may still need the actors).
  {
    std::unique_lock<std::mutex> guard{mtx_};
    if (in_flight_ > 0)
      log_->info("waiting up to {} ms for {} in-flight requests", grace.count(),
                 in_flight_.load());
    if (!cv_.wait_until(guard, deadline, [this] { return in_flight_ == 0; }))
      log_->warn("{} requests still in flight after the grace period", in_flight_.load());
  }
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock())
        live.push_back(std::move(s));
  }
  // Give SSE producers a moment to send their last events and end their
  // streams themselves (the event stream ends after node.shutting_down).
  {
    std::unique_lock<std::mutex> guard{mtx_};
    auto sse_deadline = std::min(deadline, clock_type::now() + std::chrono::seconds(2));
    cv_.wait_until(guard, sse_deadline, [this] { return sse_streams_ == 0; });
  }
  for (auto& s : live)
    s->shutdown();
  live.clear();
  {
    std::unique_lock<std::mutex> guard{mtx_};
    cv_.wait_until(guard, deadline + std::chrono::seconds(1),
                   [this] { return sessions_.empty(); });
    if (!sessions_.empty())
      log_->warn("{} connections still open after the grace period; closing them",
                 sessions_.size());
  }
  work_.reset();
  ioc_.stop();
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
}

// -- server ---------------------------------------------------------------------------

server::server(server_options opts, std::shared_ptr<const router> routes)
  : impl_(std::make_unique<impl>(std::move(opts), std::move(routes))) {
}

server::~server() {
  impl_->stop(std::chrono::milliseconds(0));
}

std::string server::bind(const std::string& host, uint16_t port) {
  return impl_->bind(host, port);
}

void server::start() {
  impl_->start();
}

void server::stop(std::chrono::milliseconds grace) {
  impl_->stop(grace);
}

size_t server::in_flight() const {
  return impl_->in_flight_;
}

size_t server::connections() const {
  std::lock_guard<std::mutex> guard{impl_->mtx_};
  return impl_->sessions_.size();
}

size_t server::sse_streams() const {
  return impl_->sse_streams_;
}

} // namespace troupe::http
