#include "actors/apps/probes.hpp"

#include <csignal>
#include <deque>
#include <optional>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include "runtime/ground/process.hpp"

namespace troupe::apps {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

std::string show_duration(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0)
    return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

namespace {

probe_outcome healthy() {
  return {probe_verdict::healthy, {}};
}

probe_outcome unhealthy(std::string why) {
  return {probe_verdict::unhealthy, std::move(why)};
}

/// "connection refused" rather than Asio's "Connection refused [system:111]".
std::string describe(const error_code& ec) {
  if (ec == net::error::connection_refused)
    return "connection refused";
  if (ec == net::error::eof || ec == net::error::connection_reset)
    return "connection closed before a response";
  if (ec == net::error::not_found)
    return "response status line too long";
  auto text = ec.message();
  if (!text.empty())
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

/// Reads "HTTP/1.x NNN ..." → healthy for 2xx/3xx, else "HTTP NNN".
probe_outcome judge_status_line(const std::string& line) {
  if (line.rfind("HTTP/", 0) != 0)
    return unhealthy("not an HTTP response");
  auto sp = line.find(' ');
  if (sp == std::string::npos || line.size() < sp + 4)
    return unhealthy("malformed HTTP status line");
  int code = 0;
  for (size_t i = sp + 1; i < sp + 4; ++i) {
    char c = line[i];
    if (c < '0' || c > '9')
      return unhealthy("malformed HTTP status line");
    code = code * 10 + (c - '0');
  }
  if (code >= 200 && code < 400)
    return healthy();
  return unhealthy("HTTP " + std::to_string(code));
}

struct core;

/// One running probe. Lives on the prober's io thread; whatever finishes
/// first (the answer, an error or the timer) decides, the rest is ignored.
struct running_probe : std::enable_shared_from_this<running_probe> {
  running_probe(core& c, probe_request r, std::function<void(probe_outcome)> d);

  void start();
  void finish(probe_outcome out);

  void start_network();
  void on_connected(const error_code& ec);
  void on_status_line(const error_code& ec);
  void start_exec();
  void on_spawned(std::optional<process::child> child, std::string error);
  void on_exit(process::exit_status es);

  core& owner;
  probe_request req;
  std::function<void(probe_outcome)> done;
  tcp::socket socket;
  net::steady_timer timer;
  net::streambuf buffer;
  std::string request_text;
  bool finished = false;
  pid_t pid = -1;
  std::shared_ptr<process::watch> watch;
};

/// The io context and the queue; shared with exec callbacks (weakly) so a
/// late process exit never touches a destroyed prober.
struct core : std::enable_shared_from_this<core> {
  core(process::io& pio, prober_limits lim) : procs(pio), limits(lim) {}

  void submit(probe_request req, std::function<void(probe_outcome)> done) {
    if (running < limits.max_concurrent) {
      launch(std::move(req), std::move(done));
      return;
    }
    if (waiting.size() >= limits.max_waiting) {
      done({probe_verdict::skipped,
            "prober overloaded: " + std::to_string(waiting.size()) + " probes waiting"});
      return;
    }
    waiting.emplace_back(std::move(req), std::move(done));
  }

  void launch(probe_request req, std::function<void(probe_outcome)> done) {
    ++running;
    std::make_shared<running_probe>(*this, std::move(req), std::move(done))->start();
  }

  void finished_one() {
    --running;
    if (waiting.empty())
      return;
    auto next = std::move(waiting.front());
    waiting.pop_front();
    launch(std::move(next.first), std::move(next.second));
  }

  net::io_context ctx{1};
  net::executor_work_guard<net::io_context::executor_type> guard = net::make_work_guard(ctx);
  process::io& procs;
  prober_limits limits;
  uint32_t running = 0;
  std::deque<std::pair<probe_request, std::function<void(probe_outcome)>>> waiting;
};

running_probe::running_probe(core& c, probe_request r, std::function<void(probe_outcome)> d)
    : owner(c), req(std::move(r)), done(std::move(d)), socket(c.ctx), timer(c.ctx),
      buffer(c.limits.max_response_bytes) {}

void running_probe::start() {
  timer.expires_after(req.spec.timeout);
  timer.async_wait([self = shared_from_this()](const error_code& ec) {
    if (ec)
      return;
    self->finish(unhealthy("timeout after " + show_duration(self->req.spec.timeout)));
  });
  if (req.spec.kind == probe_kind::exec)
    start_exec();
  else
    start_network();
}

void running_probe::finish(probe_outcome out) {
  if (finished)
    return;
  finished = true;
  timer.cancel();
  error_code ignored;
  socket.close(ignored);
  // A timed-out exec probe: kill its group; the watch still reaps it.
  if (pid > 0 && watch)
    process::signal_group(pid, SIGKILL);
  auto cb = std::move(done);
  cb(std::move(out));
  owner.finished_one();
}

void running_probe::start_network() {
  error_code ec;
  auto address = net::ip::make_address(req.host, ec);
  if (ec) {
    finish(unhealthy("host: not an IP address: " + req.host));
    return;
  }
  socket.async_connect(
      tcp::endpoint{address, req.spec.port},
      [self = shared_from_this()](const error_code& ec) { self->on_connected(ec); });
}

void running_probe::on_connected(const error_code& ec) {
  if (finished)
    return;
  if (ec) {
    finish(unhealthy(describe(ec)));
    return;
  }
  if (req.spec.kind == probe_kind::tcp) {
    finish(healthy());
    return;
  }
  request_text = "GET " + req.spec.path + " HTTP/1.1\r\nHost: " + req.host + ":" +
                 std::to_string(req.spec.port) +
                 "\r\nUser-Agent: troupe-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  net::async_write(
      socket, net::buffer(request_text), [self = shared_from_this()](const error_code& ec, size_t) {
        if (self->finished)
          return;
        if (ec) {
          self->finish(unhealthy(describe(ec)));
          return;
        }
        // Only the status line matters: the body is never read.
        net::async_read_until(self->socket, self->buffer, "\r\n",
                              [self](const error_code& ec, size_t) { self->on_status_line(ec); });
      });
}

void running_probe::on_status_line(const error_code& ec) {
  if (finished)
    return;
  if (ec) {
    finish(unhealthy(describe(ec)));
    return;
  }
  std::istream in(&buffer);
  std::string line;
  std::getline(in, line);
  finish(judge_status_line(line));
}

/// Kills a child nobody waits for and reaps it through a watch of its own.
void reap_only(process::io& procs, const process::child& child) {
  process::signal_group(child.pid, SIGKILL);
  auto w = procs.start(child, 4096,
                       process::callbacks{[](process::output) {}, [](process::exit_status) {}});
  w->close();
}

void running_probe::start_exec() {
  process::spawn_options opts;
  opts.argv = req.spec.command;
  opts.env = req.env;
  opts.cwd = req.cwd;
  std::weak_ptr<core> weak_core = owner.shared_from_this();
  std::weak_ptr<running_probe> weak_self = shared_from_this();
  process::io* procs = &owner.procs;
  // The spawn blocks briefly: it runs on the process code's blocking thread.
  // Only weak references cross threads, so a finished probe or a destroyed
  // prober is never touched from there.
  procs->post_blocking([weak_core, weak_self, procs, opts = std::move(opts)] {
    std::optional<process::child> child;
    std::string error;
    try {
      child = process::spawn(opts);
    } catch (const std::exception& e) {
      error = e.what();
    }
    auto c = weak_core.lock();
    if (!c) {
      if (child)
        reap_only(*procs, *child);
      return;
    }
    net::post(c->ctx, [weak_self, procs, child, error] {
      if (auto self = weak_self.lock())
        self->on_spawned(child, error);
      else if (child)
        reap_only(*procs, *child);
    });
  });
}

void running_probe::on_spawned(std::optional<process::child> child, std::string error) {
  if (!child) {
    finish(unhealthy(error));
    return;
  }
  if (finished) {
    // Timed out while spawning: the probe is decided, the process goes.
    reap_only(owner.procs, *child);
    return;
  }
  pid = child->pid;
  std::weak_ptr<core> weak_core = owner.shared_from_this();
  std::weak_ptr<running_probe> weak_self = shared_from_this();
  auto watch_ref = std::make_shared<std::weak_ptr<process::watch>>();
  process::callbacks cb;
  // Output is not kept: each read is dropped and reading goes on.
  cb.on_output = [watch_ref](process::output out) {
    if (out.eof)
      return;
    if (auto w = watch_ref->lock())
      w->resume(out.stream);
  };
  cb.on_exit = [weak_core, weak_self](process::exit_status es) {
    if (auto c = weak_core.lock())
      net::post(c->ctx, [weak_self, es] {
        if (auto self = weak_self.lock())
          self->on_exit(es);
      });
  };
  watch = owner.procs.prepare(*child, 4096, std::move(cb));
  *watch_ref = watch;
  watch->begin();
}

void running_probe::on_exit(process::exit_status es) {
  pid = -1;
  if (auto w = std::move(watch))
    w->close();
  if (es.signal != 0)
    finish(unhealthy("killed by signal " + std::to_string(es.signal)));
  else if (es.exit_code == 0)
    finish(healthy());
  else
    finish(unhealthy("exit code " + std::to_string(es.exit_code)));
}

class asio_prober final : public prober {
public:
  asio_prober(process::io& io, prober_limits limits) : core_(std::make_shared<core>(io, limits)) {
    thread_ = std::thread([c = core_] { c->ctx.run(); });
  }

  ~asio_prober() override {
    core_->guard.reset();
    core_->ctx.stop();
    if (thread_.joinable())
      thread_.join();
  }

  void probe(probe_request req, std::function<void(probe_outcome)> done) override {
    net::post(core_->ctx,
              [c = core_.get(), req = std::move(req), done = std::move(done)]() mutable {
                c->submit(std::move(req), std::move(done));
              });
  }

private:
  std::shared_ptr<core> core_;
  std::thread thread_;
};

} // namespace

std::shared_ptr<prober> make_prober(process::io& io, prober_limits limits) {
  return std::make_shared<asio_prober>(io, limits);
}

} // namespace troupe::apps
