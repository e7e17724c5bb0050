#include "support/servers.hpp"

#include "support/child.hpp"

#include "http/http_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

extern char** environ;

namespace troupe::test {

struct server_starter {
  static void set_port(external_server& server, uint16_t port) { server.port_ = port; }
};

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr auto startup_timeout = 15s;
constexpr auto stop_timeout = 10s;
constexpr auto poll_interval = 20ms;

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

bool set_error(std::string* error, std::string text) {
  if (error)
    *error = std::move(text);
  return false;
}

/// set_error for functions answering a pid.
pid_t no_pid(std::string* error, std::string text) {
  set_error(error, std::move(text));
  return -1;
}

/// Size of `path`, 0 if it does not exist yet.
off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

/// What the server wrote to `path` since byte `from`.
std::string read_from(const std::string& path, off_t from) {
  std::ifstream in{path, std::ios::binary};
  in.seekg(from);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The last `n` lines of what the server wrote since `from`.
std::string log_tail(const std::string& path, off_t from, size_t n = 20) {
  auto text = read_from(path, from);
  auto pos = text.size();
  for (size_t lines = 0; pos > 0 && lines <= n; --pos)
    if (text[pos - 1] == '\n')
      ++lines;
  return text.substr(pos);
}

/// `args` in `dir` with stdout/stderr appended to `log` (see launch_child),
/// with troupe's environment plus `extra_env` (NAME=VALUE).
pid_t spawn(const std::vector<std::string>& args, const std::string& dir, const std::string& log,
            std::string* error, const std::vector<std::string>& extra_env = {}) {
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return no_pid(error, errno_text("open " + log));
  std::vector<std::string> env{extra_env};
  for (char** e = environ; *e != nullptr; ++e)
    env.emplace_back(*e); // execve takes the first of duplicate names: extra_env wins
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  auto pid = launch_child(args, envp.data(), dir, log_fd, log_fd, error);
  ::close(log_fd);
  return pid;
}

/// Has `pid` exited? Leaves the zombie in place (WNOWAIT) so the process
/// group id stays reserved until we reap it.
bool exited(pid_t pid, int* status = nullptr) {
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD;
  if (info.si_pid != pid)
    return false;
  if (status)
    *status = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  return true;
}

/// Polls `ready` until it holds; false with `error` set when the server
/// exits first or `startup_timeout` passes.
bool wait_ready(const external_server& server, const std::string& name, off_t log_from,
                const std::function<bool()>& ready, std::string* error) {
  auto deadline = steady::now() + startup_timeout;
  for (;;) {
    int status = 0;
    if (exited(server.pid(), &status))
      return set_error(error, name + " exited (status " + std::to_string(status) +
                                  ") before it was ready; log tail:\n" +
                                  log_tail(server.log(), log_from));
    if (ready())
      return true;
    if (steady::now() >= deadline)
      return set_error(error, name + " not ready within " +
                                  std::to_string(startup_timeout.count()) + " s; log tail:\n" +
                                  log_tail(server.log(), log_from));
    std::this_thread::sleep_for(poll_interval);
  }
}

/// Whether the redis server on `port` is the process `pid` and answers.
bool redis_is(uint16_t port, pid_t pid) {
  timeval tv{0, 200'000};
  auto* ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!ctx)
    return false;
  bool ok = false;
  if (!ctx->err && redisSetTimeout(ctx, tv) == REDIS_OK) {
    auto* r = static_cast<redisReply*>(redisCommand(ctx, "INFO server"));
    if (r && r->type == REDIS_REPLY_STRING) {
      std::string info{r->str, r->len};
      ok = info.find("\nprocess_id:" + std::to_string(pid) + "\r\n") != std::string::npos;
    }
    if (r)
      freeReplyObject(r);
  }
  redisFree(ctx);
  return ok;
}

/// The port from a Go server's `msg="Listening on" address=127.0.0.1:PORT`
/// log line, 0 while there is none.
uint16_t listening_port(const std::string& log, off_t from) {
  auto text = read_from(log, from);
  auto line = text.find("msg=\"Listening on\"");
  if (line == std::string::npos)
    return 0;
  constexpr std::string_view key = "address=127.0.0.1:";
  auto addr = text.find(key, line);
  auto eol = text.find('\n', line);
  if (addr == std::string::npos || addr > eol)
    return 0;
  unsigned port = 0;
  for (auto i = addr + key.size(); i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
    port = port * 10 + static_cast<unsigned>(text[i] - '0');
  return port <= 65535 ? static_cast<uint16_t>(port) : 0;
}

/// The port of the test backend's `listening on 127.0.0.1:PORT` line, 0 while
/// there is none.
uint16_t backend_port(const std::string& log, off_t from) {
  auto text = read_from(log, from);
  constexpr std::string_view key = "troupe-test-backend listening on 127.0.0.1:";
  auto at = text.find(key);
  if (at == std::string::npos || text.find('\n', at) == std::string::npos)
    return 0;
  unsigned port = 0;
  for (auto i = at + key.size(); i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
    port = port * 10 + static_cast<unsigned>(text[i] - '0');
  return port <= 65535 ? static_cast<uint16_t>(port) : 0;
}

std::optional<external_server> start_go_server(const std::string& name,
                                               std::vector<std::string> args,
                                               const std::string& dir, uint16_t port,
                                               std::string* error) {
  auto log = dir + "/" + name + ".log";
  auto from = file_size(log);
  args.push_back("--web.listen-address=127.0.0.1:" + std::to_string(port));
  auto pid = spawn(args, dir, log, error);
  if (pid < 0)
    return std::nullopt;
  external_server server{pid, port, dir, log};
  // The log line proves that this very process listens (and where), so a
  // server of someone else on a requested port cannot pass for it.
  uint16_t bound = 0;
  auto ready = [&] {
    if (bound == 0)
      bound = listening_port(log, from);
    if (bound == 0 || (port != 0 && bound != port))
      return false;
    unsigned status = 0;
    http_get(bound, "/-/ready", &status);
    return status == 200;
  };
  if (!wait_ready(server, args.front(), from, ready, error))
    return std::nullopt;
  server_starter::set_port(server, bound);
  set_error(error, "");
  return server;
}

} // namespace

uint16_t free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error(errno_text("socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    auto text = errno_text("bind 127.0.0.1:0");
    ::close(fd);
    throw std::runtime_error(text);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// -- external_server ----------------------------------------------------------

external_server::external_server(pid_t pid, uint16_t port, std::string dir, std::string log)
    : pid_(pid), port_(port), dir_(std::move(dir)), log_(std::move(log)), reaped_(pid <= 0) {}

external_server::external_server(external_server&& other) noexcept
    : pid_(other.pid_), port_(other.port_), dir_(std::move(other.dir_)),
      log_(std::move(other.log_)), reaped_(other.reaped_) {
  other.pid_ = -1;
  other.reaped_ = true;
}

external_server& external_server::operator=(external_server&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = other.pid_;
    port_ = other.port_;
    dir_ = std::move(other.dir_);
    log_ = std::move(other.log_);
    reaped_ = other.reaped_;
    other.pid_ = -1;
    other.reaped_ = true;
  }
  return *this;
}

external_server::~external_server() {
  stop();
}

std::string external_server::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

void external_server::stop() {
  terminate(SIGTERM);
}

void external_server::kill9() {
  terminate(SIGKILL);
}

bool external_server::running() const {
  return !reaped_ && !exited(pid_);
}

void external_server::terminate(int first_signal) {
  if (reaped_)
    return;
  ::kill(-pid_, first_signal);
  auto deadline = steady::now() + stop_timeout;
  while (!exited(pid_)) {
    if (steady::now() >= deadline) {
      ::kill(-pid_, SIGKILL);
      deadline = steady::time_point::max();
    }
    std::this_thread::sleep_for(5ms);
  }
  // The leader is a zombie still holding the group id: nothing else of the
  // group may outlive it.
  ::kill(-pid_, SIGKILL);
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    // retry
  }
  reaped_ = true;
}

// -- starters -----------------------------------------------------------------

std::optional<external_server> start_redis(const std::string& dir, uint16_t port,
                                           std::string* error) {
  auto log = dir + "/redis.log";
  // A port picked here may be taken before redis binds it: then try another.
  int attempts = port == 0 ? 3 : 1;
  for (int attempt = 1;; ++attempt) {
    uint16_t p = port == 0 ? free_loopback_port() : port;
    auto from = file_size(log);
    auto pid = spawn({"/usr/bin/redis-server", "--port", std::to_string(p), "--bind", "127.0.0.1",
                      "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no"},
                     dir, log, error);
    if (pid < 0)
      return std::nullopt;
    external_server server{pid, p, dir, log};
    if (wait_ready(
            server, "/usr/bin/redis-server", from, [&] { return redis_is(p, pid); }, error)) {
      set_error(error, "");
      return server;
    }
    if (attempt >= attempts || server.running())
      return std::nullopt;
  }
}

std::optional<external_server> start_pushgateway(const std::string& dir, uint16_t port,
                                                 std::string* error) {
  // Debian builds default --persistence.file to /var/lib/prometheus: keep
  // every test gateway in memory, private to its test.
  return start_go_server("pushgateway", {"/usr/bin/prometheus-pushgateway", "--persistence.file="},
                         dir, port, error);
}

std::optional<external_server> start_prometheus(const std::string& dir,
                                                const std::string& config_yaml, uint16_t port,
                                                std::string* error) {
  auto config = dir + "/prometheus.yml";
  {
    std::ofstream out{config, std::ios::trunc};
    out << config_yaml;
    if (!out) {
      set_error(error, "cannot write " + config);
      return std::nullopt;
    }
  }
  return start_go_server(
      "prometheus",
      {"/usr/bin/prometheus", "--config.file=" + config, "--storage.tsdb.path=" + dir + "/data"},
      dir, port, error);
}

std::optional<external_server> start_app_backend(const std::string& dir,
                                                 const std::string& instance, std::string* error) {
  auto log = dir + "/app_backend.log";
  auto from = file_size(log);
  auto pid =
      spawn({TROUPE_TEST_BACKEND, "--port", "0"}, dir, log, error, {"TROUPE_INSTANCE=" + instance});
  if (pid < 0)
    return std::nullopt;
  external_server server{pid, 0, dir, log};
  uint16_t bound = 0;
  auto ready = [&] { return (bound = backend_port(log, from)) != 0; };
  if (!wait_ready(server, "troupe-test-backend", from, ready, error))
    return std::nullopt;
  server_starter::set_port(server, bound);
  set_error(error, "");
  return server;
}

std::string http_get(uint16_t port, const std::string& target, unsigned* status) {
  http::url base{"http", "127.0.0.1", std::to_string(port), "/"};
  auto res = http::fetch(base, "GET", target, {}, {}, 5s);
  if (status)
    *status = res.status;
  return res.status == 0 ? res.error : res.body;
}

} // namespace troupe::test
