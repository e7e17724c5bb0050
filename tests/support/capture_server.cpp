#include "support/capture_server.hpp"

#include <cstring>
#include <stdexcept>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace troupe::test {

capture_server::capture_server() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 64) != 0)
    throw std::runtime_error("capture_server: cannot listen");
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

capture_server::~capture_server() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  if (thread_.joinable())
    thread_.join();
}

void capture_server::script(reply r, size_t n) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (size_t i = 0; i < n; ++i)
    script_.push_back(r);
}

void capture_server::set_default(reply r) {
  std::lock_guard<std::mutex> guard{mtx_};
  default_ = std::move(r);
}

std::vector<capture_server::request> capture_server::requests() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return requests_;
}

size_t capture_server::count() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return requests_.size();
}

bool capture_server::wait_for(size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  return cv_.wait_for(guard, timeout, [&] { return requests_.size() >= n; });
}

void capture_server::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    handle(fd);
    ::close(fd);
  }
}

void capture_server::handle(int fd) {
  std::string buf;
  char tmp[65536];
  size_t header_end = std::string::npos;
  size_t content_length = 0;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0)
      return;
    auto n = ::read(fd, tmp, sizeof(tmp));
    if (n <= 0)
      return;
    buf.append(tmp, static_cast<size_t>(n));
    if (header_end == std::string::npos) {
      header_end = buf.find("\r\n\r\n");
      if (header_end == std::string::npos)
        continue;
    }
    request req;
    auto line_end = buf.find("\r\n");
    auto first = buf.substr(0, line_end);
    auto sp1 = first.find(' ');
    auto sp2 = first.find(' ', sp1 + 1);
    req.method = first.substr(0, sp1);
    req.target = first.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t pos = line_end + 2;
    while (pos < header_end) {
      auto eol = buf.find("\r\n", pos);
      auto colon = buf.find(':', pos);
      if (colon != std::string::npos && colon < eol) {
        std::string name = buf.substr(pos, colon - pos);
        for (auto& c : name)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        auto value = buf.substr(colon + 1, eol - colon - 1);
        while (!value.empty() && value.front() == ' ')
          value.erase(value.begin());
        req.headers[name] = value;
      }
      pos = eol + 2;
    }
    if (auto i = req.headers.find("content-length"); i != req.headers.end())
      content_length = std::stoul(i->second);
    if (buf.size() < header_end + 4 + content_length)
      continue;
    req.body = buf.substr(header_end + 4, content_length);
    reply r;
    {
      // Recorded before the answer is written: a client that got its answer
      // finds its request counted.
      std::lock_guard<std::mutex> guard{mtx_};
      if (!script_.empty()) {
        r = script_.front();
        script_.pop_front();
      } else {
        r = default_;
      }
      req.answered = r.status;
      requests_.push_back(std::move(req));
    }
    cv_.notify_all();
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\nConnection: close\r\n" +
                      "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    for (auto& [k, v] : r.headers)
      out += k + ": " + v + "\r\n";
    out += "\r\n" + r.body;
    (void)!::write(fd, out.data(), out.size());
    return;
  }
}

} // namespace troupe::test
