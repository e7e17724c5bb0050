// Jobs benchmark driver: submits N jobs over HTTP keep-alive connections to a
// running troupe, waits until all have ended, and reports jobs/s plus the
// submit→start latency percentiles taken from the job records. The shell
// script benchmarks/jobs.sh starts troupe and the reference loop around it.
//
//   jobs_bench HOST PORT JOBS CONNECTIONS COMMAND

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/ground/clock.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

/// A minimal blocking HTTP/1.1 keep-alive client (Content-Length bodies only).
class connection {
public:
  connection(const std::string& host, int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      std::perror("connect");
      std::exit(1);
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~connection() { ::close(fd_); }

  /// Returns {status, body}.
  std::pair<int, std::string> call(const std::string& method, const std::string& target,
                                   const std::string& body = {}) {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    // The API needs a token (jobs.sh passes the daemon's DATA_DIR/token).
    if (auto token = std::getenv("TROUPE_BENCH_TOKEN"); token != nullptr && *token != '\0')
      req += std::string{"Authorization: Bearer "} + token + "\r\n";
    if (!body.empty())
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n";
    req += "\r\n" + body;
    for (size_t off = 0; off < req.size();) {
      auto n = ::write(fd_, req.data() + off, req.size() - off);
      if (n <= 0) {
        std::perror("write");
        std::exit(1);
      }
      off += static_cast<size_t>(n);
    }
    for (;;) {
      auto end = buf_.find("\r\n\r\n");
      if (end != std::string::npos) {
        auto cl = buf_.find("Content-Length: ");
        size_t len = cl != std::string::npos && cl < end ? std::stoul(buf_.substr(cl + 16)) : 0;
        if (buf_.size() >= end + 4 + len) {
          int status = std::stoi(buf_.substr(9, 3));
          auto resp = buf_.substr(end + 4, len);
          buf_.erase(0, end + 4 + len);
          return {status, resp};
        }
      }
      char tmp[65536];
      auto n = ::read(fd_, tmp, sizeof(tmp));
      if (n <= 0) {
        std::fprintf(stderr, "connection closed by troupe\n");
        std::exit(1);
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

private:
  int fd_;
  std::string buf_;
};

double percentile(std::vector<double> xs, double q) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto idx = static_cast<size_t>(q * static_cast<double>(xs.size() - 1) + 0.5);
  return xs[std::min(idx, xs.size() - 1)];
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s HOST PORT JOBS CONNECTIONS COMMAND\n", argv[0]);
    return 2;
  }
  std::string host = argv[1];
  int port = std::atoi(argv[2]);
  int jobs = std::atoi(argv[3]);
  int conns = std::max(1, std::atoi(argv[4]));
  std::string body = nlohmann::json{{"command", nlohmann::json::array({argv[5]})}}.dump();
  std::atomic<int> next{0};
  std::atomic<int> rejected{0};
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < conns; ++c)
    threads.emplace_back([&] {
      connection conn{host, port};
      while (next.fetch_add(1) < jobs)
        if (conn.call("POST", "/jobs", body).first != 201)
          ++rejected;
    });
  for (auto& t : threads)
    t.join();
  auto submitted = clock_type::now();
  if (rejected > 0) {
    std::fprintf(stderr, "%d submissions rejected\n", rejected.load());
    return 1;
  }
  // Wait for the controller to report every job ended (bounded).
  connection conn{host, port};
  uint64_t ended = 0;
  auto deadline = t0 + std::chrono::minutes(10);
  while (clock_type::now() < deadline) {
    auto [status, text] = conn.call("GET", "/readyz");
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_discarded() && j.contains("checks") && j["checks"].contains("jobs")) {
      auto& counts = j["checks"]["jobs"]["counts"];
      ended = 0;
      for (auto s : {"succeeded", "failed", "cancelled", "timed_out", "lost"})
        ended += counts.value(s, uint64_t{0});
      if (ended >= static_cast<uint64_t>(jobs))
        break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto done = clock_type::now();
  if (ended < static_cast<uint64_t>(jobs)) {
    std::fprintf(stderr, "only %llu of %d jobs ended within 10 minutes\n",
                 static_cast<unsigned long long>(ended), jobs);
    return 1;
  }
  // Submit→start latency from the stored records.
  std::vector<double> waits;
  size_t failed = 0;
  std::string cursor;
  for (;;) {
    auto target = "/jobs?limit=1000" + (cursor.empty() ? std::string{} : "&cursor=" + cursor);
    auto [status, text] = conn.call("GET", target);
    auto j = nlohmann::json::parse(text);
    for (auto& job : j["jobs"]) {
      if (job["status"] != "succeeded")
        ++failed;
      auto q = troupe::parse_time(job["queued_at"].get<std::string>());
      auto s = troupe::parse_time(job["start_time"].get<std::string>());
      if (q && s)
        waits.push_back(static_cast<double>(*s - *q) / 1e6);
    }
    if (j["next_cursor"].is_null())
      break;
    cursor = j["next_cursor"].get<std::string>();
  }
  auto secs = std::chrono::duration<double>(done - t0).count();
  auto submit_secs = std::chrono::duration<double>(submitted - t0).count();
  std::printf("jobs=%d wall=%.3fs submit=%.3fs jobs_per_s=%.1f not_succeeded=%zu "
              "start_latency_p50_ms=%.1f start_latency_p99_ms=%.1f\n",
              jobs, secs, submit_secs, jobs / secs, failed, percentile(waits, 0.5),
              percentile(waits, 0.99));
  return failed == 0 ? 0 : 1;
}
