#include "actors/apps/ports.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

namespace troupe {

bool bindable_on_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

port_allocator::port_allocator(port_range range, std::function<bool(uint16_t)> is_free)
    : range_(range), is_free_(std::move(is_free)), next_(range.first) {}

uint16_t port_allocator::allocate_one() {
  uint32_t size = uint32_t{range_.last} - range_.first + 1;
  size_t bound_elsewhere = 0;
  for (uint32_t i = 0; i < size; ++i) {
    auto port = static_cast<uint16_t>(next_);
    next_ = next_ == range_.last ? range_.first : next_ + 1;
    if (held_.count(port) != 0)
      continue;
    if (!is_free_(port)) {
      ++bound_elsewhere;
      continue;
    }
    held_.insert(port);
    return port;
  }
  throw port_exhausted("apps.port_range " + std::to_string(range_.first) + "-" +
                       std::to_string(range_.last) +
                       " has no free port: " + std::to_string(held_.size()) +
                       " held by troupe's instances, " + std::to_string(bound_elsewhere) +
                       " bound by other processes; widen apps.port_range or run fewer instances");
}

std::vector<uint16_t> port_allocator::allocate(size_t count) {
  std::vector<uint16_t> out;
  try {
    while (out.size() < count)
      out.push_back(allocate_one());
  } catch (const port_exhausted&) {
    release(out);
    throw;
  }
  return out;
}

bool port_allocator::reserve(uint16_t port) {
  if (port < range_.first || port > range_.last)
    return false;
  return held_.insert(port).second;
}

void port_allocator::release(const std::vector<uint16_t>& ports) {
  for (auto p : ports)
    release(p);
}

void port_allocator::release(uint16_t port) {
  held_.erase(port);
}

} // namespace troupe
