#include "support/e2e.hpp"

#include "support/child.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace troupe::e2e {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;

// -- small utilities ----------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::optional<std::string> find_pair(const string_pairs& xs, std::string_view name) {
  for (auto& [k, v] : xs)
    if (iequals(k, name))
      return v;
  return std::nullopt;
}

std::string troupe_bin() {
  auto bin = std::getenv("TROUPE_BIN");
  if (bin == nullptr || *bin == '\0')
    throw std::runtime_error("TROUPE_BIN is not set: run the e2e tests "
                             "through ctest, or export the path of troupe");
  return bin;
}

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

/// PATH, HOME and the sanitizers' options from our environment, then the caller's
/// variables (which win). Nothing else leaks in: not TROUPE_BIN, not a developer's TROUPE_*.
environment clean_environment(const environment& extra, const std::string& fallback_home) {
  auto from_parent = [](const char* name, std::string fallback) {
    auto value = std::getenv(name);
    return value != nullptr ? std::string{value} : fallback;
  };
  environment env{
      {"PATH", from_parent("PATH", "/usr/local/bin:/usr/bin:/bin")},
      {"HOME", from_parent("HOME", fallback_home)},
  };
  // A sanitizer build's settings (suppressions, halt_on_error) reach the daemon.
  for (auto name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"})
    if (auto value = std::getenv(name))
      env.emplace_back(name, value);
  for (auto& [name, value] : extra) {
    // (C++17: a structured binding cannot be captured, so by way of a reference.)
    auto& key = name;
    auto i = std::find_if(env.begin(), env.end(), [&](auto& kv) { return kv.first == key; });
    if (i != env.end())
      i->second = value;
    else
      env.emplace_back(name, value);
  }
  return env;
}

/// A pipe whose ends are close-on-exec, so that other children never inherit
/// them (which would delay end-of-file).
struct pipe_fds {
  int read = -1;
  int write = -1;

  pipe_fds() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error(errno_text("pipe2"));
    read = fds[0];
    write = fds[1];
  }
  ~pipe_fds() {
    close_read();
    close_write();
  }
  pipe_fds(const pipe_fds&) = delete;
  pipe_fds& operator=(const pipe_fds&) = delete;

  void close_read() {
    if (read >= 0)
      ::close(read);
    read = -1;
  }
  void close_write() {
    if (write >= 0)
      ::close(write);
    write = -1;
  }
};

/// Starts `args` in `cwd` with exactly `env` (see test::launch_child); throws
/// if it cannot be started.
pid_t spawn(const std::vector<std::string>& args, const environment& env, const std::string& cwd,
            int out_fd, int err_fd) {
  std::vector<std::string> env_strings;
  for (auto& [name, value] : env)
    env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& str : env_strings)
    envp.push_back(const_cast<char*>(str.c_str()));
  envp.push_back(nullptr);
  std::string error;
  auto pid = test::launch_child(args, envp.data(), cwd, out_fd, err_fd, &error);
  if (pid < 0)
    throw std::runtime_error(error);
  return pid;
}

exit_status to_exit_status(int status) {
  if (WIFSIGNALED(status))
    return {true, WTERMSIG(status)};
  return {false, WEXITSTATUS(status)};
}

/// Polls waitpid (10 ms granularity) until `pid` exits or `deadline` passes.
std::optional<exit_status> poll_exit(pid_t pid, steady::time_point deadline) {
  for (;;) {
    int status = 0;
    auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return to_exit_status(status);
    if (r < 0 && errno != EINTR)
      throw std::runtime_error(errno_text("waitpid"));
    if (steady::now() >= deadline)
      return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

// -- output capture -----------------------------------------------------------

/// Lines read from a child's output, shared with a reader thread.
class line_log {
public:
  void append(const char* data, size_t size) {
    std::lock_guard<std::mutex> guard{mtx_};
    partial_.append(data, size);
    size_t start = 0;
    for (auto nl = partial_.find('\n'); nl != std::string::npos; nl = partial_.find('\n', start)) {
      auto line = partial_.substr(start, nl - start);
      if (!line.empty() && line.back() == '\r')
        line.pop_back();
      lines_.push_back(std::move(line));
      start = nl + 1;
    }
    partial_.erase(0, start);
    cv_.notify_all();
  }

  void finish() {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!partial_.empty())
      lines_.push_back(std::move(partial_));
    partial_.clear();
    eof_ = true;
    cv_.notify_all();
  }

  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return lines_;
  }

  bool wait_eof(steady::time_point deadline) const {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_until(guard, deadline, [this] { return eof_; });
  }

  std::optional<std::string> wait_for(const std::function<bool(const std::string&)>& pred,
                                      steady::time_point deadline, size_t from) const {
    std::unique_lock<std::mutex> guard{mtx_};
    for (auto i = from;;) {
      for (; i < lines_.size(); ++i)
        if (pred(lines_[i]))
          return lines_[i];
      auto more = [&] { return eof_ || lines_.size() > i; };
      if (!cv_.wait_until(guard, deadline, more) || lines_.size() <= i)
        return std::nullopt; // timeout, or end of output with nothing new
    }
  }

private:
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::vector<std::string> lines_;
  std::string partial_;
  bool eof_ = false;
};

/// Reads an fd (which it owns) into a line_log on its own thread until
/// end-of-file or stop().
class output_reader {
public:
  output_reader(int fd, line_log& log) : fd_(fd) {
    thread_ = std::thread{[this, &log] { run(log); }};
  }
  ~output_reader() {
    stop();
    ::close(fd_);
  }
  output_reader(const output_reader&) = delete;
  output_reader& operator=(const output_reader&) = delete;

  /// Drains what is readable right now, then ends the thread.
  void stop() {
    if (!thread_.joinable())
      return;
    char byte = 1;
    [[maybe_unused]] auto n = ::write(wake_.write, &byte, 1);
    thread_.join();
  }

private:
  void run(line_log& log) {
    std::array<char, 4096> buf;
    for (;;) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_.read, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR)
          continue;
        break;
      }
      if (fds[0].revents != 0) {
        auto n = ::read(fd_, buf.data(), buf.size());
        if (n > 0) {
          log.append(buf.data(), static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR)
          continue;
        break; // end of file or error
      }
      if (fds[1].revents != 0) {
        ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
        ssize_t n;
        while ((n = ::read(fd_, buf.data(), buf.size())) > 0)
          log.append(buf.data(), static_cast<size_t>(n));
        break;
      }
    }
    log.finish();
  }

  int fd_;
  pipe_fds wake_;
  std::thread thread_;
};

std::string join_lines(const std::vector<std::string>& lines) {
  std::string result;
  for (auto& line : lines) {
    result += line;
    result += '\n';
  }
  return result;
}

/// The port of a `{"message":"listening on 127.0.0.1:PORT", ...}` line.
std::optional<uint16_t> listening_port(const std::string& line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("message") || !j["message"].is_string())
    return std::nullopt;
  auto message = j["message"].get<std::string>();
  static const std::string prefix = "listening on ";
  if (message.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  auto address = message.substr(prefix.size());
  if (auto i = j.find("address"); i != j.end() && i->is_string())
    address = i->get<std::string>();
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    return std::nullopt;
  try {
    auto port = std::stoul(address.substr(colon + 1));
    if (port == 0 || port > 65535)
      return std::nullopt;
    return static_cast<uint16_t>(port);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

} // namespace

// -- scratch_dir --------------------------------------------------------------

scratch_dir::scratch_dir(const std::string& prefix) {
  auto tmp = std::getenv("TMPDIR");
  std::string base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  std::string templ = base + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr)
    throw std::runtime_error(errno_text("mkdtemp " + templ));
  path_ = templ;
}

scratch_dir::~scratch_dir() {
  if (keep_)
    return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// -- exit status and run_troupe -----------------------------------------------

std::string exit_status::to_string() const {
  if (signaled)
    return "killed by signal " + std::to_string(value) + " (" + ::strsignal(value) + ")";
  return "exit code " + std::to_string(value);
}

std::string startup_refusal_problem(const run_result& res, const std::string& message,
                                    const std::string& data_dir) {
  std::string problem;
  if (!res.status)
    problem += "did not exit; ";
  else if (res.status->to_string() != "exit code 2")
    problem += res.status->to_string() + " instead of exit code 2; ";
  if (!contains(res.err, message))
    problem += "stderr lacks \"" + message + "\"; ";
  if (contains(res.out + res.err, "listening on"))
    problem += "it listened; ";
  if (std::filesystem::exists(data_dir))
    problem += "it created the data dir; ";
  if (!problem.empty())
    problem += "stderr:\n" + res.err;
  return problem;
}

run_result run_troupe(const std::vector<std::string>& args, const environment& env,
                      duration timeout) {
  scratch_dir cwd{"troupe-e2e-cwd"};
  std::vector<std::string> argv{troupe_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  pipe_fds out;
  pipe_fds err;
  auto pid = spawn(argv, clean_environment(env, cwd.path()), cwd.path(), out.write, err.write);
  out.close_write();
  err.close_write();
  run_result result;
  auto deadline = steady::now() + timeout;
  // Read both pipes until both reach end-of-file or the deadline passes.
  std::array<char, 4096> buf;
  while (out.read >= 0 || err.read >= 0) {
    auto left = std::chrono::duration_cast<duration>(deadline - steady::now());
    if (left.count() <= 0)
      break;
    pollfd fds[2] = {{out.read, POLLIN, 0}, {err.read, POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    auto drain = [&](pollfd& p, pipe_fds& pipe, std::string& into) {
      if (p.fd < 0 || p.revents == 0)
        return;
      auto n = ::read(p.fd, buf.data(), buf.size());
      if (n > 0)
        into.append(buf.data(), static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        pipe.close_read();
    };
    drain(fds[0], out, result.out);
    drain(fds[1], err, result.err);
  }
  result.status = poll_exit(pid, deadline);
  if (!result.status) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
  }
  return result;
}

// -- daemon -------------------------------------------------------------------

namespace {

std::mutex tokens_mtx;
std::map<uint16_t, std::string> tokens_by_port;

std::string random_token() {
  std::random_device rd;
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 8; ++i) {
    auto x = rd();
    for (int j = 0; j < 8; ++j, x >>= 4)
      out += hex[x & 0xf];
  }
  return out;
}

/// This test process's share of the instance ports (`apps.port_range`).
/// Daemons of suites running at the same time (ctest -j) each check a port
/// free, then start an instance on it: from one shared range two daemons
/// can pick the same port, and one instance fails to bind. So every test
/// process holds one slice of the default range, claimed with an exclusive
/// lock on a file that goes with the process; its daemons share it (they
/// run one at a time, or one daemon's allocator sees the other's instances
/// bound).
std::string apps_port_slice() {
  static const std::string slice = [] {
    constexpr int first = 20000, size = 500, slices = 20;
    auto dir = std::filesystem::temp_directory_path();
    auto start = static_cast<int>(::getpid()) % slices;
    for (int i = 0; i < slices; ++i) {
      int n = (start + i) % slices;
      auto path = dir / ("troupe-e2e-ports-" + std::to_string(n) + ".lock");
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0)
        continue;
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) // held (fd kept open) until exit
        return std::to_string(first + n * size) + "-" + std::to_string(first + n * size + size - 1);
      ::close(fd);
    }
    throw std::runtime_error("no free instance port slice: " + std::to_string(slices) +
                             " test processes hold one each");
  }();
  return slice;
}

} // namespace

std::string token_for(uint16_t port) {
  std::lock_guard<std::mutex> guard{tokens_mtx};
  auto i = tokens_by_port.find(port);
  return i == tokens_by_port.end() ? std::string{} : i->second;
}

struct daemon::state {
  // The destructor kills the process and stops the reader; only then do the
  // members go, the directories last (the reader writes into `log`).
  std::unique_ptr<scratch_dir> cwd;
  std::unique_ptr<scratch_dir> owned_data_dir;
  std::string data_dir;
  line_log log;
  std::unique_ptr<output_reader> reader;
  pid_t pid = -1;
  std::optional<exit_status> status;
  uint16_t port = 0;
  std::string token;

  ~state() {
    if (port != 0 && !token.empty()) {
      std::lock_guard<std::mutex> guard{tokens_mtx};
      tokens_by_port.erase(port);
    }
    if (pid > 0 && !status) {
      // The group first, while the zombie leader still reserves the pgid.
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      int raw;
      while (::waitpid(pid, &raw, 0) < 0 && errno == EINTR) {
        // retry
      }
    }
    reader.reset();
  }

  bool reap_nonblocking() {
    if (status)
      return true;
    int raw = 0;
    if (::waitpid(pid, &raw, WNOHANG) == pid)
      status = to_exit_status(raw);
    return status.has_value();
  }
};

daemon::daemon(daemon_options opts) : state_(std::make_unique<state>()) {
  auto& st = *state_;
  st.cwd = std::make_unique<scratch_dir>("troupe-e2e-cwd");
  if (opts.data_dir.empty()) {
    st.owned_data_dir = std::make_unique<scratch_dir>("troupe-e2e-data");
    st.data_dir = st.owned_data_dir->path();
  } else {
    st.data_dir = opts.data_dir;
  }
  // The proxy on a port of its own too (the default 8080 is shared by all).
  std::vector<std::string> argv{troupe_bin(),     "serve",      "--listen",     "127.0.0.1:0",
                                "--data-dir",     st.data_dir,  "--log-format", "json",
                                "--proxy-listen", "127.0.0.1:0"};
  argv.insert(argv.end(), opts.args.begin(), opts.args.end());
  argv.insert(argv.begin(), opts.wrapper.begin(), opts.wrapper.end());
  auto sets_auth = std::any_of(opts.env.begin(), opts.env.end(),
                               [](auto& kv) { return kv.first.rfind("TROUPE_AUTH__", 0) == 0; });
  auto sets_ports = std::any_of(opts.env.begin(), opts.env.end(),
                                [](auto& kv) { return kv.first == "TROUPE_APPS__PORT_RANGE"; });
  if (!sets_ports)
    opts.env.emplace_back("TROUPE_APPS__PORT_RANGE", apps_port_slice());
  if (opts.default_token && !sets_auth) {
    st.token = "e2e-" + random_token();
    opts.env.emplace_back("TROUPE_AUTH__TOKENS",
                          R"([{"name":"e2e","token":")" + st.token + R"(","roles":["admin"]}])");
  }
  pipe_fds output;
  st.pid = spawn(argv, clean_environment(opts.env, st.cwd->path()), st.cwd->path(), output.write,
                 output.write);
  output.close_write();
  st.reader = std::make_unique<output_reader>(output.read, st.log);
  output.read = -1; // now owned by the reader
  auto deadline = steady::now() + opts.startup_timeout;
  auto line = st.log.wait_for([](const std::string& l) { return listening_port(l).has_value(); },
                              deadline, 0);
  if (!line) {
    // The end of output usually means the process is exiting.
    if (st.log.wait_eof(steady::now()))
      st.status = poll_exit(st.pid, steady::now() + 2s);
    else
      st.reap_nonblocking();
    std::string why;
    if (st.status)
      why = "troupe exited (" + st.status->to_string() +
            ") before logging 'listening on 127.0.0.1:PORT'";
    else
      why = "troupe did not log 'listening on 127.0.0.1:PORT' within " +
            std::to_string(opts.startup_timeout.count()) + " ms";
    throw std::runtime_error(why + "; output:\n" + join_lines(st.log.lines()));
  }
  st.port = *listening_port(*line);
  if (!st.token.empty()) {
    std::lock_guard<std::mutex> guard{tokens_mtx};
    tokens_by_port[st.port] = st.token;
  }
}

const std::string& daemon::token() const {
  return state_->token;
}

daemon::~daemon() = default;

uint16_t daemon::port() const {
  return state_->port;
}

pid_t daemon::pid() const {
  return state_->pid;
}

const std::string& daemon::data_dir() const {
  return state_->data_dir;
}

void daemon::keep_data_dir() {
  if (state_->owned_data_dir)
    state_->owned_data_dir->keep();
}

void daemon::terminate() {
  if (!state_->reap_nonblocking())
    ::kill(state_->pid, SIGTERM);
}

void daemon::kill9() {
  if (!state_->reap_nonblocking())
    ::kill(state_->pid, SIGKILL);
}

bool daemon::running() {
  return !state_->reap_nonblocking();
}

std::optional<exit_status> daemon::wait_exit(duration timeout) {
  auto& st = *state_;
  auto deadline = steady::now() + timeout;
  if (!st.status)
    st.status = poll_exit(st.pid, deadline);
  if (st.status) {
    // Lines written just before exit may still sit in the pipe.
    st.log.wait_eof(steady::now() + 2s);
  }
  return st.status;
}

std::vector<std::string> daemon::output() const {
  return state_->log.lines();
}

std::string daemon::output_text() const {
  return join_lines(state_->log.lines());
}

std::optional<std::string>
daemon::wait_for_line(const std::function<bool(const std::string&)>& pred, duration timeout,
                      size_t from) const {
  return state_->log.wait_for(pred, steady::now() + timeout, from);
}

std::optional<std::string> daemon::wait_for_line(const std::regex& re, duration timeout,
                                                 size_t from) const {
  return wait_for_line([&re](const std::string& line) { return std::regex_search(line, re); },
                       timeout, from);
}

// -- HTTP ---------------------------------------------------------------------

std::optional<std::string> response::header(std::string_view name) const {
  return find_pair(headers, name);
}

nlohmann::json response::json() const {
  return nlohmann::json::parse(body, nullptr, false);
}

std::string response::to_string() const {
  if (status == 0)
    return "<no response: " + error + ">";
  std::string result = "HTTP " + std::to_string(status) + "\n";
  for (auto& [name, value] : headers)
    result += name + ": " + value + "\n";
  result += "\n" + body;
  return result;
}

namespace {

/// Runs one asynchronous operation to completion on `ioc` and returns its
/// error code; tcp_stream's expiry bounds it.
template <class Initiate> beast::error_code run_op(net::io_context& ioc, Initiate&& initiate) {
  beast::error_code result;
  bool done = false;
  initiate([&](beast::error_code ec, auto&&...) {
    result = ec;
    done = true;
  });
  ioc.restart();
  ioc.run();
  if (!done)
    return net::error::operation_aborted;
  return result;
}

template <class Body> response to_response(http::response<Body>& msg) {
  response result;
  result.status = static_cast<int>(msg.result_int());
  for (auto& field : msg)
    result.headers.emplace_back(std::string{field.name_string()}, std::string{field.value()});
  result.body = std::move(msg.body());
  return result;
}

http::request<http::string_body> make_request(uint16_t port, const std::string& method,
                                              const std::string& target, const header_list& headers,
                                              const std::string& body) {
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  req.set(http::field::user_agent, "troupe-e2e");
  bool own_auth = false;
  for (auto& [name, value] : headers) {
    if (beast::iequals(name, "Authorization")) {
      own_auth = true;
      if (value.empty())
        continue;
    }
    req.set(name, value);
  }
  if (auto token = token_for(port); !own_auth && !token.empty())
    req.set(http::field::authorization, "Bearer " + token);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    req.body() = body;
    req.prepare_payload();
  }
  return req;
}

tcp::endpoint loopback(uint16_t port) {
  return {net::ip::make_address_v4("127.0.0.1"), port};
}

std::string describe(const beast::error_code& ec, const char* during) {
  return std::string{during} + ": " + ec.message();
}

} // namespace

struct connection::impl {
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  uint16_t port;
  duration timeout;
  bool open = false;
  std::string error;

  impl(uint16_t port, duration timeout) : port(port), timeout(timeout) {
    stream.expires_after(timeout);
    auto ec = run_op(
        ioc, [&](auto handler) { stream.async_connect(loopback(port), std::move(handler)); });
    if (ec) {
      error = describe(ec, "connect");
      return;
    }
    open = true;
  }

  void fail(const beast::error_code& ec, const char* during) {
    error = describe(ec, during);
    open = false;
    beast::error_code ignored;
    stream.socket().close(ignored);
  }

  bool write(const std::string& bytes) {
    if (!open)
      return false;
    stream.expires_after(timeout);
    auto ec = run_op(ioc, [&](auto handler) {
      net::async_write(stream, net::buffer(bytes), std::move(handler));
    });
    if (ec) {
      // Keep the socket: the server may have answered before closing.
      error = describe(ec, "write");
      return false;
    }
    return true;
  }

  template <class Message> bool write(Message& msg) {
    if (!open)
      return false;
    stream.expires_after(timeout);
    auto ec =
        run_op(ioc, [&](auto handler) { http::async_write(stream, msg, std::move(handler)); });
    if (ec) {
      error = describe(ec, "write");
      return false;
    }
    return true;
  }

  response read(bool head_request) {
    response result;
    if (!stream.socket().is_open()) {
      result.error = error.empty() ? "connection closed" : error;
      return result;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    parser.skip(head_request);
    stream.expires_after(timeout);
    auto ec = run_op(
        ioc, [&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
    if (ec) {
      fail(ec, "read");
      result.error = error;
      return result;
    }
    auto& msg = parser.get();
    if (!msg.keep_alive())
      open = false;
    return to_response(msg);
  }
};

connection::connection(uint16_t port, duration timeout)
    : impl_(std::make_unique<impl>(port, timeout)) {
  // nop
}

connection::~connection() = default;

response connection::request(const std::string& method, const std::string& target,
                             const header_list& headers, const std::string& body) {
  if (!impl_->open) {
    response result;
    result.error = impl_->error.empty() ? "connection closed" : impl_->error;
    return result;
  }
  auto req = make_request(impl_->port, method, target, headers, body);
  impl_->write(req); // on failure, still try to read an early answer
  return impl_->read(method == "HEAD");
}

bool connection::send_raw(const std::string& bytes) {
  return impl_->write(bytes);
}

response connection::read_response(bool head_request) {
  return impl_->read(head_request);
}

bool connection::is_open() const {
  return impl_->open;
}

const std::string& connection::error() const {
  return impl_->error;
}

response request(uint16_t port, const std::string& method, const std::string& target,
                 const header_list& headers, const std::string& body, duration timeout) {
  connection conn{port, timeout};
  return conn.request(method, target, headers, body);
}

response get(uint16_t port, const std::string& target, const header_list& headers,
             duration timeout) {
  return request(port, "GET", target, headers, {}, timeout);
}

raw_result raw_exchange(uint16_t port, const std::string& bytes, duration timeout) {
  raw_result result;
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  stream.expires_after(timeout);
  auto ec =
      run_op(ioc, [&](auto handler) { stream.async_connect(loopback(port), std::move(handler)); });
  if (ec) {
    result.error = describe(ec, "connect");
    return result;
  }
  ec = run_op(
      ioc, [&](auto handler) { net::async_write(stream, net::buffer(bytes), std::move(handler)); });
  if (ec)
    result.error = describe(ec, "write"); // the answer may still be readable
  std::array<char, 4096> buf;
  for (;;) {
    size_t n = 0;
    ec = run_op(ioc, [&](auto handler) {
      stream.async_read_some(net::buffer(buf), [&n, handler = std::move(handler)](
                                                   beast::error_code ec, size_t bytes) mutable {
        n = bytes;
        handler(ec);
      });
    });
    result.data.append(buf.data(), n);
    if (!ec)
      continue;
    if (ec == beast::error::timeout)
      result.timed_out = true;
    else if (ec == net::error::eof || ec == net::error::connection_reset)
      result.closed = true;
    else
      result.error = describe(ec, "read");
    return result;
  }
}

std::vector<response> parse_responses(const std::string& bytes) {
  std::vector<response> result;
  std::string_view rest = bytes;
  while (!rest.empty()) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(boost::none);
    beast::error_code ec;
    size_t used = 0;
    while (!parser.is_done()) {
      auto n = parser.put(net::buffer(rest.data() + used, rest.size() - used), ec);
      used += n;
      if (ec == http::error::need_more && used == rest.size()) {
        // No more input: a close-delimited body ends here.
        if (parser.is_header_done())
          parser.put_eof(ec);
        break;
      }
      if (ec && ec != http::error::need_more)
        break;
      if (n == 0 && ec)
        break;
    }
    if (!parser.is_done())
      break;
    result.push_back(to_response(parser.get()));
    rest.remove_prefix(used);
  }
  return result;
}

// -- SSE ----------------------------------------------------------------------

nlohmann::json sse_event::json() const {
  return nlohmann::json::parse(data, nullptr, false);
}

std::vector<sse_event> sse_parser::feed(std::string_view bytes) {
  std::vector<sse_event> out;
  for (char c : bytes) {
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n')
        continue; // the LF of a CRLF
    }
    if (c == '\r') {
      after_cr_ = true;
      on_line(out);
    } else if (c == '\n') {
      on_line(out);
    } else {
      line_ += c;
    }
  }
  return out;
}

void sse_parser::on_line(std::vector<sse_event>& out) {
  std::string line;
  line.swap(line_);
  if (line.empty()) {
    // Blank line: dispatch, unless no data arrived (WHATWG).
    if (!data_.empty()) {
      data_.pop_back(); // the trailing LF
      sse_event ev;
      ev.id = last_id_;
      if (!type_.empty())
        ev.type = type_;
      ev.data = std::move(data_);
      out.push_back(std::move(ev));
    }
    data_.clear();
    type_.clear();
    return;
  }
  if (line.front() == ':') {
    ++comments_;
    return;
  }
  std::string field = line;
  std::string value;
  if (auto colon = line.find(':'); colon != std::string::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ')
      value.erase(0, 1);
  }
  if (field == "event")
    type_ = value;
  else if (field == "data")
    data_ += value + "\n";
  else if (field == "id" && value.find('\0') == std::string::npos)
    last_id_ = value;
  // "retry" and unknown fields are ignored.
}

struct sse_stream::impl {
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  std::array<char, 8192> chunk;
  sse_parser sse;
  std::deque<sse_event> ready;
  std::vector<sse_event> history;
  int status = 0;
  header_list headers;
  bool chunked = false;
  bool reading = false;
  bool ended = false;
  bool timed_out = false;
  std::string error;

  void start_read() {
    auto& body = parser.get().body();
    body.data = chunk.data();
    body.size = chunk.size();
    body.more = true;
    reading = true;
    http::async_read_some(stream, buffer, parser,
                          [this](beast::error_code ec, size_t) { on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    reading = false;
    auto n = chunk.size() - parser.get().body().size;
    if (n > 0)
      for (auto& ev : sse.feed({chunk.data(), n}))
        ready.push_back(std::move(ev));
    if (ec == http::error::need_buffer)
      ec = {};
    if (ec) {
      ended = true;
      if (ec != net::error::eof && ec != http::error::end_of_stream)
        error = describe(ec, "read");
      return;
    }
    if (parser.is_done())
      ended = true;
  }

  /// Runs handlers until an event is ready, the stream ends, or `deadline`.
  void pump(steady::time_point deadline) {
    while (ready.empty() && !ended) {
      if (!reading)
        start_read();
      if (ioc.stopped())
        ioc.restart();
      if (ioc.run_one_until(deadline) == 0 && steady::now() >= deadline)
        return;
    }
  }
};

sse_stream::sse_stream(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {
  // nop
}

sse_stream::sse_stream(sse_stream&&) noexcept = default;

sse_stream& sse_stream::operator=(sse_stream&&) noexcept = default;

sse_stream::~sse_stream() = default;

int sse_stream::status() const {
  return impl_->status;
}

const header_list& sse_stream::headers() const {
  return impl_->headers;
}

std::optional<std::string> sse_stream::header(std::string_view name) const {
  return find_pair(impl_->headers, name);
}

bool sse_stream::chunked() const {
  return impl_->chunked;
}

std::optional<sse_event> sse_stream::next(duration timeout) {
  auto& st = *impl_;
  st.timed_out = false;
  st.pump(steady::now() + timeout);
  if (!st.ready.empty()) {
    auto ev = std::move(st.ready.front());
    st.ready.pop_front();
    st.history.push_back(ev);
    return ev;
  }
  st.timed_out = !st.ended;
  return std::nullopt;
}

std::optional<sse_event> sse_stream::next_of_type(const std::string& type, duration timeout) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<duration>(deadline - steady::now());
    auto ev = next(std::max(left, duration{0}));
    if (!ev || ev->type == type)
      return ev;
  }
}

bool sse_stream::ended() const {
  return impl_->ended && impl_->ready.empty();
}

bool sse_stream::timed_out() const {
  return impl_->timed_out;
}

const std::string& sse_stream::error() const {
  return impl_->error;
}

const std::vector<sse_event>& sse_stream::received() const {
  return impl_->history;
}

size_t sse_stream::comments() const {
  return impl_->sse.comments();
}

sse_stream open_sse(uint16_t port, const std::string& target, const header_list& headers,
                    duration timeout, int receive_buffer) {
  auto st = std::make_unique<sse_stream::impl>();
  st->parser.body_limit(boost::none);
  if (receive_buffer > 0) {
    beast::error_code ignored;
    st->stream.socket().open(tcp::v4(), ignored);
    st->stream.socket().set_option(net::socket_base::receive_buffer_size(receive_buffer), ignored);
  }
  st->stream.expires_after(timeout);
  auto ec = run_op(
      st->ioc, [&](auto handler) { st->stream.async_connect(loopback(port), std::move(handler)); });
  if (ec) {
    st->error = describe(ec, "connect");
    st->ended = true;
    return sse_stream{std::move(st)};
  }
  header_list all{{"Accept", "text/event-stream"}};
  for (auto& [name, value] : headers)
    all.emplace_back(name, value);
  auto req = make_request(port, "GET", target, all, {});
  ec = run_op(st->ioc,
              [&](auto handler) { http::async_write(st->stream, req, std::move(handler)); });
  if (!ec)
    ec = run_op(st->ioc, [&](auto handler) {
      http::async_read_header(st->stream, st->buffer, st->parser, std::move(handler));
    });
  if (ec) {
    st->error = describe(ec, "request");
    st->ended = true;
    return sse_stream{std::move(st)};
  }
  // Events may be far apart: from here on next() bounds each wait.
  st->stream.expires_never();
  auto& msg = st->parser.get();
  st->status = static_cast<int>(msg.result_int());
  for (auto& field : msg)
    st->headers.emplace_back(std::string{field.name_string()}, std::string{field.value()});
  st->chunked = st->parser.chunked();
  if (st->parser.is_done())
    st->ended = true;
  return sse_stream{std::move(st)};
}

std::optional<sse_event> wait_for_event(uint16_t port, const std::string& type, duration timeout) {
  auto stream = open_sse(port, "/events", {{"Last-Event-ID", "0"}}, timeout);
  if (stream.status() != 200)
    return std::nullopt;
  return stream.next_of_type(type, timeout);
}

// -- helpers ------------------------------------------------------------------

std::string json_field(const nlohmann::json& j, const std::string& pointer) {
  auto missing = [&] { return "<missing " + pointer + " in: " + j.dump() + ">"; };
  if (j.is_discarded())
    return "<missing " + pointer + ": not JSON>";
  try {
    nlohmann::json::json_pointer ptr{pointer};
    if (!j.contains(ptr))
      return missing();
    auto& value = j.at(ptr);
    return value.is_string() ? value.get<std::string>() : value.dump();
  } catch (const nlohmann::json::exception&) {
    return missing();
  }
}

std::string json_field(const response& res, const std::string& pointer) {
  auto j = res.json();
  if (j.is_discarded())
    return "<missing " + pointer + ", not JSON: " + res.to_string() + ">";
  return json_field(j, pointer);
}

std::vector<nlohmann::json> events_of_type(const nlohmann::json& body, const std::string& type) {
  std::vector<nlohmann::json> result;
  if (!body.is_object() || !body.contains("events") || !body["events"].is_array())
    return result;
  for (auto& ev : body["events"])
    if (ev.is_object() && ev.value("type", "") == type)
      result.push_back(ev);
  return result;
}

bool poll_until(const std::function<bool()>& pred, duration timeout, duration period) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(period);
  }
}

} // namespace troupe::e2e
