#pragma once

// A tiny HTTP/1.1 server on 127.0.0.1 for tests: records every request and
// answers from a script (default 204). It stands in for Loki, which Debian
// does not package; requests are validated against Loki's documented push
// format by the tests.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace troupe::test {

class capture_server {
public:
  struct request {
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers; ///< names lower-cased
    std::string body;
    /// The status it was answered with.
    unsigned answered = 0;
  };

  struct reply {
    unsigned status = 204;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
  };

  capture_server();
  ~capture_server();
  capture_server(const capture_server&) = delete;
  capture_server& operator=(const capture_server&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  /// Answers the next `n` requests with `r` (then back to the default).
  void script(reply r, size_t n = 1);
  /// The answer once the script is used up.
  void set_default(reply r);

  /// Requests received so far.
  std::vector<request> requests() const;
  size_t count() const;
  /// Blocks until at least `n` requests arrived or `timeout` passed.
  bool wait_for(size_t n, std::chrono::milliseconds timeout) const;

private:
  void serve();
  void handle(int fd);

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::deque<reply> script_;
  reply default_;
  std::vector<request> requests_;
};

} // namespace troupe::test
