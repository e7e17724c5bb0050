#include "http/server.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "http/gate.hpp"
#include "http/request_id.hpp"
#include "runtime/ground/logging.hpp"
#include "runtime/ground/text.hpp"

namespace troupe::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;
using header_pairs = std::vector<std::pair<std::string, std::string>>;

namespace {

constexpr size_t header_limit = 16 * 1024;

void append_chunk(std::string& out, std::string_view payload) {
  char size[20];
  auto n = std::snprintf(size, sizeof(size), "%zx\r\n", payload.size());
  out.append(size, static_cast<size_t>(n));
  out.append(payload);
  out += "\r\n";
}

int64_t ns_of(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

/// A request whose uploaded body file is removed with it.
std::shared_ptr<request> new_request() {
  return std::shared_ptr<request>(new request, [](request* r) {
    if (!r->body_file.empty())
      ::unlink(r->body_file.c_str());
    delete r;
  });
}

/// The answer to a connection past http.max_connections.
const std::string& over_capacity_response() {
  static const std::string res = [] {
    std::string body = R"({"error":{"code":"unavailable","message":"too many open connections )"
                       R"((http.max_connections); retry later"}})";
    return "HTTP/1.1 503 Service Unavailable\r\nServer: troupe\r\nContent-Type: "
           "application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  return res;
}

bool is_loopback(const net::ip::address& a) {
  return a.is_loopback();
}

} // namespace

class session_base;

// -- server::impl -----------------------------------------------------------------

class server::impl {
public:
  impl(server_options opts, std::shared_ptr<const router> routes)
      : opts_(std::move(opts)), routes_(std::move(routes)), log_(logging::get("http")),
        ioc_(opts_.io_threads), acceptor_(net::make_strand(ioc_)) {
    gate_.auth = opts_.auth;
    gate_.allowed_origins = opts_.allowed_origins;
    gate_.allowed_hosts = opts_.allowed_hosts;
    gate_.max_json_bytes = opts_.max_json_bytes;
    gate_.max_upload_bytes = opts_.max_upload_bytes;
    if (opts_.rate_limit > 0)
      gate_.limiter = std::make_shared<rate_limiter>(opts_.rate_limit, opts_.rate_burst);
  }

  std::string bind(const std::string& host, uint16_t port) {
    beast::error_code ec;
    auto addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + host + ": not an IP address");
    if (!opts_.tls_cert_file.empty())
      load_tls();
    gate_.loopback = is_loopback(addr);
    gate_.tls = tls_.has_value();
    tcp::endpoint ep{addr, port};
    acceptor_.open(ep.protocol(), ec);
    if (!ec)
      acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec)
      acceptor_.bind(ep, ec);
    if (!ec)
      acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                               ec.message());
    auto bound = acceptor_.local_endpoint();
    auto a = bound.address().to_string();
    if (bound.address().is_v6())
      a = "[" + a + "]";
    return a + ":" + std::to_string(bound.port());
  }

  void load_tls() {
    tls_.emplace(ssl::context::tls_server);
    tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                      ssl::context::single_dh_use);
    beast::error_code ec;
    tls_->use_certificate_chain_file(opts_.tls_cert_file, ec);
    if (ec)
      throw std::runtime_error("http.tls.cert_file: cannot use " + opts_.tls_cert_file + ": " +
                               ec.message());
    tls_->use_private_key_file(opts_.tls_key_file, ssl::context::pem, ec);
    if (ec)
      throw std::runtime_error("http.tls.key_file: cannot use " + opts_.tls_key_file + ": " +
                               ec.message());
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
  void refuse(tcp::socket& socket);

  /// Once a second: connections past their deadline are closed.
  void sweep() {
    sweep_timer_.expires_after(std::chrono::seconds(1));
    sweep_timer_.async_wait([this](beast::error_code ec) {
      if (ec || stopping_)
        return;
      auto now = ns_of(clock_type::now());
      for (auto& s : live_sessions())
        expire(*s, now);
      if (auto n = refused_.exchange(0); n > 0)
        log_->warn("{} connections refused with 503: http.max_connections ({}) reached", n,
                   opts_.max_connections);
      sweep();
    });
  }

  std::vector<std::shared_ptr<session_base>> live_sessions() {
    std::vector<std::shared_ptr<session_base>> live;
    std::lock_guard<std::mutex> guard{mtx_};
    live.reserve(sessions_.size());
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock())
        live.push_back(std::move(s));
    return live;
  }

  static void expire(session_base& s, int64_t now);

  void register_session(const std::shared_ptr<session_base>& s) {
    std::lock_guard<std::mutex> guard{mtx_};
    sessions_.emplace(s.get(), s);
  }

  void unregister_session(session_base* s) {
    --connections_;
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
  gate_options gate_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<ssl::context> tls_;
  std::atomic<size_t> in_flight_{0};
  std::atomic<size_t> sse_streams_{0};
  std::atomic<size_t> connections_{0};
  std::atomic<size_t> refused_{0};
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::unordered_map<session_base*, std::weak_ptr<session_base>> sessions_;
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

// -- session_base -------------------------------------------------------------------

/// What streams, exchanges and the server need of a connection, whatever its
/// transport (plain TCP or TLS).
class session_base : public std::enable_shared_from_this<session_base> {
public:
  explicit session_base(server::impl& srv) : srv_(srv) {}
  virtual ~session_base() { srv_.unregister_session(this); }
  session_base(const session_base&) = delete;
  session_base& operator=(const session_base&) = delete;

  virtual void run() = 0;
  /// Closes the connection if its deadline passed (called by the sweep).
  virtual void close_if_expired(int64_t now) = 0;
  /// Called on shutdown: closes idle connections, ends SSE streams, and lets
  /// a request being served finish before closing.
  virtual void shutdown() = 0;
  /// Posts a complete response (any thread).
  virtual void post_response(response res, std::shared_ptr<request> req,
                             clock_type::time_point started, std::string route) = 0;
  /// Starts an SSE response (any thread); `content_type` empty: SSE, else a
  /// plain chunked body (exchange::chunked).
  virtual std::shared_ptr<sse_stream> start_sse(std::shared_ptr<request> req, header_pairs headers,
                                                clock_type::time_point started, std::string route,
                                                std::string content_type) = 0;
  /// Closes at once, dropping whatever is queued (slow SSE clients).
  virtual void abort() = 0;
  /// Queues chunk-framed bytes of a stream; `counted`: the bytes an sse_impl
  /// accounted for (0: not counted).
  virtual void post_sse(std::string bytes, bool last, size_t counted) = 0;

protected:
  server::impl& srv_;
};

// -- sse --------------------------------------------------------------------------

class sse_impl final : public sse_stream {
public:
  sse_impl(std::weak_ptr<session_base> s, size_t limit, size_t limit_bytes)
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

  /// A stream that is closed from the start (HEAD requests).
  static std::shared_ptr<sse_impl> closed_stream() {
    auto s = std::make_shared<sse_impl>(std::weak_ptr<session_base>{}, 0, 0);
    s->mark_closed();
    return s;
  }

private:
  bool enqueue(std::string payload);

  std::weak_ptr<session_base> session_;
  size_t limit_;
  size_t limit_bytes_;
  std::atomic<bool> closed_{false};
  std::atomic<size_t> queued_{0};
  std::atomic<size_t> queued_bytes_{0};
  std::mutex mtx_;
  std::vector<std::function<void()>> callbacks_;
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
    s->post_sse("0\r\n\r\n", true, 0);
}

// -- exchange ---------------------------------------------------------------------

class exchange_impl final : public exchange {
public:
  exchange_impl(std::shared_ptr<session_base> s, std::shared_ptr<request> req,
                clock_type::time_point started, std::string route, header_pairs cors)
      : session_(std::move(s)), req_(std::move(req)), started_(started), route_(std::move(route)),
        cors_(std::move(cors)) {}

  ~exchange_impl() override {
    if (!answered_.exchange(true))
      session_->post_response(response::error(500, "internal", "the handler did not answer"), req_,
                              started_, route_);
  }

  const request& req() const override { return *req_; }

  void reply(response res) override {
    if (answered_.exchange(true))
      return;
    res.headers.insert(res.headers.end(), cors_.begin(), cors_.end());
    session_->post_response(std::move(res), req_, started_, route_);
  }

  std::shared_ptr<sse_stream> stream(header_pairs headers) override {
    return begin("", std::move(headers));
  }

  std::shared_ptr<sse_stream> chunked(std::string content_type) override {
    return begin(std::move(content_type), {});
  }

private:
  std::shared_ptr<sse_stream> begin(std::string content_type, header_pairs headers) {
    if (answered_.exchange(true))
      throw std::logic_error("exchange answered twice");
    headers.insert(headers.end(), cors_.begin(), cors_.end());
    if (req_->method == "HEAD") {
      // Headers only; the producer finds the stream closed and stops.
      response res;
      res.content_type = content_type.empty() ? "text/event-stream" : content_type;
      res.headers = std::move(headers);
      session_->post_response(std::move(res), req_, started_, route_);
      return sse_impl::closed_stream();
    }
    return session_->start_sse(req_, std::move(headers), started_, route_, std::move(content_type));
  }

  std::shared_ptr<session_base> session_;
  std::shared_ptr<request> req_;
  clock_type::time_point started_;
  std::string route_;
  header_pairs cors_;
  std::atomic<bool> answered_{false};
};

// -- session ----------------------------------------------------------------------

/// One connection. `Stream` is a tcp::socket or an ssl::stream over one.
template <class Stream> class session final : public session_base {
public:
  static constexpr bool tls = !std::is_same_v<Stream, tcp::socket>;

  template <class... Args>
  session(server::impl& srv, Args&&... args)
      : session_base(srv), stream_(std::forward<Args>(args)...) {}

  tcp::socket& socket() { return beast::get_lowest_layer(stream_); }

  std::shared_ptr<session> self() { return std::static_pointer_cast<session>(shared_from_this()); }

  void run() override {
    beast::error_code ec;
    auto peer = socket().remote_endpoint(ec);
    if (!ec)
      peer_ = peer.address().to_string();
    net::dispatch(stream_.get_executor(), [self = self()] {
      if constexpr (tls) {
        self->set_deadline(self->srv_.opts_.header_timeout);
        self->stream_.async_handshake(ssl::stream_base::server, [self](beast::error_code ec) {
          if (ec) {
            self->do_close();
            return;
          }
          self->do_read();
        });
      } else {
        self->do_read();
      }
    });
  }

  void close_if_expired(int64_t now) override {
    auto d = deadline_.load(std::memory_order_relaxed);
    if (d != 0 && d < now)
      net::dispatch(stream_.get_executor(), [self = self(), now] {
        auto d = self->deadline_.load(std::memory_order_relaxed);
        if (d != 0 && d < now)
          self->do_close();
      });
  }

  void shutdown() override {
    net::dispatch(stream_.get_executor(), [self = self()] {
      self->closing_ = true;
      if (self->sse_) {
        // An event stream ends cleanly (clients resume with Last-Event-ID);
        // a download cut short must not look complete.
        if (self->plain_stream_ && !self->sse_->closed())
          self->sse_->abort();
        else
          self->sse_->close();
      } else if (!self->busy_) {
        self->do_close();
      }
    });
  }

  void post_response(response res, std::shared_ptr<request> req, clock_type::time_point started,
                     std::string route) override {
    net::dispatch(stream_.get_executor(),
                  [self = self(), res = std::move(res), req = std::move(req), started,
                   route = std::move(route)]() mutable {
                    self->write_response(std::move(res), *req, started, route);
                  });
  }

  std::shared_ptr<sse_stream> start_sse(std::shared_ptr<request> req, header_pairs headers,
                                        clock_type::time_point started, std::string route,
                                        std::string content_type) override {
    auto stream = std::make_shared<sse_impl>(weak_from_this(), srv_.opts_.sse_queue_limit,
                                             srv_.opts_.sse_queue_bytes);
    net::dispatch(stream_.get_executor(),
                  [self = self(), stream, req, started, headers = std::move(headers),
                   route = std::move(route), content_type = std::move(content_type)]() mutable {
                    self->begin_sse(stream, *req, headers, started, route, content_type);
                  });
    return stream;
  }

  void abort() override {
    net::dispatch(stream_.get_executor(), [self = self()] {
      self->do_close();
      // The write in flight still reads its buffer until its handler runs
      // (with operation_aborted): keep that one, drop the rest.
      if (self->writing_ && !self->outq_.empty())
        self->outq_.erase(std::next(self->outq_.begin()), self->outq_.end());
      else
        self->outq_.clear();
    });
  }

  void post_sse(std::string bytes, bool last, size_t counted) override {
    net::dispatch(stream_.get_executor(),
                  [self = self(), bytes = std::move(bytes), last, counted]() mutable {
                    self->queue_write(std::move(bytes), counted, last);
                  });
  }

private:
  // -- reading a request ------------------------------------------------------------
  //
  // Idle (waiting for a request's first byte): http.request_timeout. Headers:
  // http.header_timeout from that byte on. Body: http.request_timeout between
  // reads, and http.max_request_duration overall. The gate's checks run once
  // the header is in, so a refused request never has its body read.

  void do_read() {
    if (closing_) {
      do_close();
      return;
    }
    if (buffer_.size() > 0) { // pipelined: the next request is already here
      read_header();
      return;
    }
    set_deadline(srv_.opts_.request_timeout);
    auto space = buffer_.prepare(4096);
    stream_.async_read_some(space, [self = self()](beast::error_code ec, size_t n) {
      self->buffer_.commit(n);
      if (ec) {
        self->do_close();
        return;
      }
      self->read_header();
    });
  }

  void read_header() {
    read_started_ = clock_type::now();
    set_deadline(srv_.opts_.header_timeout);
    header_parser_.emplace();
    header_parser_->header_limit(header_limit);
    // Sizes are checked by the gate against the route's limit.
    header_parser_->body_limit(boost::none);
    bhttp::async_read_header(
        stream_, buffer_, *header_parser_,
        [self = self()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) {
      on_read_error(ec);
      return;
    }
    auto& h = header_parser_->get();
    auto req = new_request();
    req->method = std::string{h.method_string()};
    req->target = std::string{h.target()};
    parse_target(req->target, req->path, req->query);
    auto token = take_access_token(*req);
    for (auto& field : h) {
      std::string name{field.name_string()};
      ascii_lower_in_place(name);
      auto [it, inserted] = req->headers.emplace(std::move(name), std::string{field.value()});
      if (!inserted) {
        it->second += ", ";
        it->second += field.value();
      }
    }
    req->request_id = request_id_for(h["X-Request-ID"]);
    req->peer = peer_;
    keep_alive_ = h.keep_alive();
    version_ = h.version();
    if (srv_.stopping_)
      closing_ = true;
    bool has_body = !header_parser_->is_done();
    logging::request_scope scope{req->request_id};
    header_pairs cors;
    if (auto refused = check_origin(srv_.gate_, *req, cors)) {
      respond_early(std::move(*refused), *req, has_body, "");
      return;
    }
    auto raw_path = std::string_view{req->target}.substr(0, req->target.find('?'));
    auto m = srv_.routes_->match(req->method, raw_path);
    if (!m.fn) {
      auto res = m.allow.empty() ? response::error(404, "not_found", "no route for " + req->path)
                                 : response::error(405, "method_not_allowed",
                                                   req->method + " is not allowed on " + req->path);
      if (!m.allow.empty())
        res.headers.emplace_back("Allow", m.allow);
      res.headers.insert(res.headers.end(), cors.begin(), cors.end());
      respond_early(std::move(res), *req, has_body, m.route);
      return;
    }
    std::optional<uint64_t> length;
    if (auto n = header_parser_->content_length())
      length = *n;
    auto v = admit(srv_.gate_, *req, m.opts, token, length, has_body);
    if (v.answer) {
      v.answer->headers.insert(v.answer->headers.end(), cors.begin(), cors.end());
      respond_early(std::move(*v.answer), *req, has_body, m.route);
      return;
    }
    req->params = std::move(m.params);
    pending_ = {req, m.fn, m.route, std::move(cors)};
    if (!has_body) {
      header_parser_.reset();
      dispatch_request();
      return;
    }
    if (v.body.to_file) {
      if (!start_file_body(*req, v.body.limit))
        return;
    } else {
      string_parser_.emplace(std::move(*header_parser_));
      string_parser_->body_limit(v.body.limit);
    }
    header_parser_.reset();
    body_limit_ = v.body.limit;
    if (version_ == 11 && iequals(req->header("expect"), "100-continue")) {
      // The client waits for this before sending the body: only now, with
      // the request admitted.
      static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
      set_deadline(srv_.opts_.request_timeout);
      net::async_write(stream_, net::buffer(cont), [self = self()](beast::error_code ec, size_t) {
        if (ec) {
          self->do_close();
          return;
        }
        self->read_body();
      });
      return;
    }
    read_body();
  }

  /// Streams the body into a private file of the upload dir.
  bool start_file_body(request& req, uint64_t limit) {
    file_parser_.emplace(std::move(*header_parser_));
    file_parser_->body_limit(limit);
    auto path = srv_.opts_.upload_dir + "/upload-" + random_hex();
    beast::error_code ec;
    file_parser_->get().body().open(path.c_str(), beast::file_mode::write_new, ec);
    if (!ec && ::fchmod(file_parser_->get().body().file().native_handle(), 0600) != 0)
      ec.assign(errno, beast::system_category());
    if (ec) {
      srv_.log_->error("cannot create upload file {}: {}", path, ec.message());
      file_parser_.reset();
      ::unlink(path.c_str());
      respond_early(response::error(503, "unavailable", "cannot store the upload right now"), req,
                    true, pending_.route);
      return false;
    }
    req.body_file = path;
    return true;
  }

  void read_body() {
    auto now = clock_type::now();
    auto idle = now + srv_.opts_.request_timeout;
    auto cap = read_started_ + srv_.opts_.max_request_duration;
    deadline_.store(ns_of(std::min(idle, cap)), std::memory_order_relaxed);
    auto on_some = [self = self()](beast::error_code ec, size_t) { self->on_body(ec); };
    if (file_parser_)
      bhttp::async_read_some(stream_, buffer_, *file_parser_, std::move(on_some));
    else
      bhttp::async_read_some(stream_, buffer_, *string_parser_, std::move(on_some));
  }

  void on_body(beast::error_code ec) {
    if (ec) {
      on_read_error(ec);
      return;
    }
    bool done = file_parser_ ? file_parser_->is_done() : string_parser_->is_done();
    if (!done) {
      read_body();
      return;
    }
    auto& req = *pending_.req;
    if (file_parser_) {
      file_parser_->get().body().close();
      file_parser_.reset();
    } else {
      req.body = std::move(string_parser_->get().body());
      string_parser_.reset();
    }
    dispatch_request();
  }

  void on_read_error(beast::error_code ec) {
    auto req = pending_.req;
    auto route = pending_.route;
    pending_ = {};
    header_parser_.reset();
    string_parser_.reset();
    file_parser_.reset();
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted ||
        ec == bhttp::error::partial_message ||
        &ec.category() != &bhttp::make_error_code(bhttp::error::body_limit).category()) {
      // Socket errors (and a client gone mid-request) just close.
      do_close();
      return;
    }
    unsigned status = 400;
    std::string code = "bad_request";
    std::string msg = "malformed HTTP request: " + ec.message();
    if (ec == bhttp::error::body_limit) {
      status = 413;
      code = "payload_too_large";
      msg = "request body exceeds the limit of " + std::to_string(body_limit_) + " bytes";
    } else if (ec == bhttp::error::header_limit) {
      status = 431;
      code = "request_header_fields_too_large";
      msg = "request headers exceed " + std::to_string(header_limit) + " bytes";
    }
    if (!req) {
      req = new_request();
      req->method = "?";
      req->request_id = random_hex();
    }
    respond_early(response::error(status, code, msg), *req, true, route);
  }

  /// Answers without running a handler; the connection closes afterwards if
  /// a body was announced but not read (the stream is out of sync).
  void respond_early(response res, const request& req, bool body_unread, const std::string& route) {
    if (body_unread)
      closing_ = true;
    busy_ = true;
    srv_.request_started();
    write_response(std::move(res), req, clock_type::now(), route);
  }

  void dispatch_request() {
    busy_ = true;
    // A handler may wait on actors; their requests carry their own timeouts.
    deadline_.store(0, std::memory_order_relaxed);
    srv_.request_started();
    auto p = std::move(pending_);
    pending_ = {};
    logging::request_scope scope{p.req->request_id};
    auto ex = std::make_shared<exchange_impl>(shared_from_this(), p.req, read_started_, p.route,
                                              std::move(p.cors));
    try {
      (*p.fn)(ex);
    } catch (const std::exception& e) {
      srv_.log_->error("handler for {} {} failed: {}", p.req->method, p.req->path, e.what());
      ex->reply(response::error(500, "internal", e.what()));
    }
  }

  // -- writing ----------------------------------------------------------------------

  void access_log(const request& req, unsigned status, clock_type::time_point started,
                  const std::string& route) {
    if (srv_.opts_.on_answered)
      srv_.opts_.on_answered(req, route, status,
                             std::chrono::duration<double>(clock_type::now() - started).count());
    auto quiet = std::find(srv_.opts_.quiet_routes.begin(), srv_.opts_.quiet_routes.end(), route) !=
                 srv_.opts_.quiet_routes.end();
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
    set_deadline(srv_.opts_.request_timeout);
    net::async_write(
        stream_, net::buffer(out),
        [self = self(), close](beast::error_code ec, size_t) { self->on_write(ec, close); });
  }

  void set_deadline(std::chrono::milliseconds after) {
    deadline_.store(ns_of(clock_type::now() + after), std::memory_order_relaxed);
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
                 const header_pairs& headers, clock_type::time_point started,
                 const std::string& route, const std::string& content_type) {
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
    stream_.async_read_some(net::buffer(discard_), [self = self()](beast::error_code ec, size_t) {
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
    ping_timer_->async_wait([self = self()](beast::error_code ec) {
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
    set_deadline(srv_.opts_.request_timeout);
    auto& front = outq_.front();
    net::async_write(stream_, net::buffer(front.bytes),
                     [self = self()](beast::error_code ec, size_t) { self->on_sse_write(ec); });
  }

  void on_sse_write(beast::error_code ec) {
    deadline_.store(0, std::memory_order_relaxed);
    if (outq_.empty()) // aborted meanwhile
      return;
    auto item = std::move(outq_.front());
    outq_.pop_front();
    last_write_ = clock_type::now();
    if (item.counted != 0 && sse_)
      sse_->written(item.counted);
    if (ec || item.last) {
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
    socket().shutdown(tcp::socket::shutdown_both, ec);
    socket().close(ec);
  }

  struct pending_write {
    std::string bytes;
    /// Bytes the stream's queue accounted for (0: the head or the end).
    size_t counted;
    bool last;
  };

  /// A request admitted by the gate whose body is being read.
  struct pending_request {
    std::shared_ptr<request> req;
    const handler* fn = nullptr;
    std::string route;
    header_pairs cors;
  };

  Stream stream_;
  std::string peer_;
  /// Response bytes being written (reused).
  std::string out_;
  /// steady_clock ns after which the connection is closed; 0 = no deadline.
  std::atomic<int64_t> deadline_{0};
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::empty_body>> header_parser_;
  std::optional<bhttp::request_parser<bhttp::string_body>> string_parser_;
  std::optional<bhttp::request_parser<bhttp::file_body>> file_parser_;
  pending_request pending_;
  uint64_t body_limit_ = 0;
  clock_type::time_point read_started_ = clock_type::now();
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

// -- server::impl (continued) --------------------------------------------------------

void server::impl::expire(session_base& s, int64_t now) {
  s.close_if_expired(now);
}

void server::impl::refuse(tcp::socket& socket) {
  // Answered without a session: nothing of it outlives this call.
  ++refused_;
  beast::error_code ec;
  if (!tls_) {
    socket.non_blocking(true, ec);
    socket.write_some(net::buffer(over_capacity_response()), ec);
  }
  socket.shutdown(tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

void server::impl::serve(tcp::socket socket) {
  if (connections_.load(std::memory_order_relaxed) >= opts_.max_connections) {
    refuse(socket);
    return;
  }
  ++connections_;
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  std::shared_ptr<session_base> s;
  if (tls_)
    s = std::make_shared<session<ssl::stream<tcp::socket>>>(*this, std::move(socket), *tls_);
  else
    s = std::make_shared<session<tcp::socket>>(*this, std::move(socket));
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
  }
  serve(std::move(socket));
  // Drain the rest of the backlog without another trip through the reactor:
  // a burst of new connections is taken at once.
  acceptor_.non_blocking(true, ec);
  for (int i = 0; i < 64 && !stopping_; ++i) {
    auto next = new_socket();
    acceptor_.accept(next, ec);
    if (ec)
      break;
    serve(std::move(next));
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
      log_->info("waiting up to {} ms for {} in-flight requests", grace.count(), in_flight_.load());
    if (!cv_.wait_until(guard, deadline, [this] { return in_flight_ == 0; }))
      log_->warn("{} requests still in flight after the grace period", in_flight_.load());
  }
  auto live = live_sessions();
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
    cv_.wait_until(guard, deadline + std::chrono::seconds(1), [this] { return sessions_.empty(); });
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
    : impl_(std::make_unique<impl>(std::move(opts), std::move(routes))) {}

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
