#pragma once

// Real servers for tests (redis-server, prometheus-pushgateway, prometheus
// from Debian), each on 127.0.0.1 only, in a process group of its own, with
// stdout/stderr in a log file in its directory. They get SIGKILL when the
// thread that started them dies (PR_SET_PDEATHSIG), so start them from the
// test's main thread. Readiness is polled with a deadline, never slept for.

#include <cstdint>
#include <optional>
#include <string>

#include <sys/types.h>

namespace troupe::test {

/// A port that was free on 127.0.0.1 a moment ago (bind to port 0, read the
/// port, close). Another process may take it before it is used again.
uint16_t free_loopback_port();

/// A started server; the destructor stops it.
class external_server {
public:
  external_server(pid_t pid, uint16_t port, std::string dir, std::string log);
  external_server(external_server&& other) noexcept;
  external_server& operator=(external_server&& other) noexcept;
  external_server(const external_server&) = delete;
  external_server& operator=(const external_server&) = delete;
  ~external_server();

  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  /// The log file the server writes to.
  const std::string& log() const { return log_; }
  /// "http://127.0.0.1:PORT"
  std::string base_url() const;

  /// SIGTERM to the group, SIGKILL after 10 s, then reaped. Idempotent.
  void stop();
  /// SIGKILL to the group and reaped: a crash.
  void kill9();
  /// Not yet stopped and not exited by itself.
  bool running() const;

private:
  friend struct server_starter; // sets the port once a server reports it
  void terminate(int first_signal);

  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string dir_;
  std::string log_;
  mutable bool reaped_ = true;
};

// Each returns nullopt with `error` set (which binary, why, the tail of its
// log) if the server is not ready within 15 s or exits before; `error` is
// cleared on success.

/// redis-server without persistence (--save "" --appendonly no), --dir `dir`,
/// bound to 127.0.0.1. Port 0 picks a free one (and retries with another
/// should it be taken meanwhile). Ready when this very process answers PING.
std::optional<external_server> start_redis(const std::string& dir, uint16_t port = 0,
                                           std::string* error = nullptr);

/// prometheus-pushgateway on 127.0.0.1. Port 0 lets the server bind any port
/// and reads it from its "Listening on" log line. Ready when GET /-/ready is
/// 200.
std::optional<external_server> start_pushgateway(const std::string& dir, uint16_t port = 0,
                                                 std::string* error = nullptr);

/// prometheus with `config_yaml` written to dir/prometheus.yml and its TSDB in
/// dir/data, on 127.0.0.1; port 0 as for the pushgateway. Ready when GET
/// /-/ready is 200.
std::optional<external_server> start_prometheus(const std::string& dir,
                                                const std::string& config_yaml, uint16_t port = 0,
                                                std::string* error = nullptr);

/// The apps' test backend (tests/support/app_backend.cpp, built as
/// troupe-test-backend, path TROUPE_TEST_BACKEND) on a port it picks, with
/// TROUPE_INSTANCE=`instance`. Ready when it logged where it listens (it
/// listens before it logs).
std::optional<external_server> start_app_backend(const std::string& dir,
                                                 const std::string& instance,
                                                 std::string* error = nullptr);

/// GET http://127.0.0.1:port`target`; the body, with the status in `status`
/// (0 on a transport error, the body is then the error text).
std::string http_get(uint16_t port, const std::string& target, unsigned* status = nullptr);

} // namespace troupe::test
