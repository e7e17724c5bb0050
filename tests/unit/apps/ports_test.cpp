#define CAF_SUITE ports
#include "support/dsl.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <string>

#include "actors/apps/ports.hpp"

using namespace troupe;

namespace {

/// A listening socket on 127.0.0.1 (a port some other program holds).
struct listener {
  int fd = -1;
  uint16_t port = 0;
  listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd, 1);
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~listener() { ::close(fd); }
};

bool starts_with(const std::string& s, const std::string& p) {
  return s.compare(0, p.size(), p) == 0;
}

auto all_free = [](uint16_t) { return true; };

std::string exhausted_message(port_allocator& a, size_t n) {
  try {
    a.allocate(n);
    return "allocated";
  } catch (const port_exhausted& e) {
    return e.what();
  }
}

} // namespace

CAF_TEST(ports come from the range one per instance port next - fit) {
  port_allocator a{{20000, 20003}, all_free};
  auto first = a.allocate(2);
  CAF_CHECK_EQUAL(first, (std::vector<uint16_t>{20000, 20001}));
  CAF_CHECK_EQUAL(a.allocate_one(), 20002);
  a.release(first);
  // A released port is reused last.
  CAF_CHECK_EQUAL(a.allocate_one(), 20003);
  CAF_CHECK_EQUAL(a.allocate_one(), 20000);
  CAF_CHECK_EQUAL(a.held(), 3u);
}

CAF_TEST(an exhausted range is a clear error and a partial allocation is undone) {
  port_allocator a{{20000, 20002}, [](uint16_t p) { return p != 20001; }};
  CAF_CHECK_EQUAL(a.allocate_one(), 20000);
  CAF_CHECK_EQUAL(exhausted_message(a, 2),
                  "apps.port_range 20000-20002 has no free port: 2 held by troupe's instances, 1 "
                  "bound by other processes; widen apps.port_range or run fewer instances");
  // The port taken before the failure went back.
  CAF_CHECK_EQUAL(a.held(), 1u);
  CAF_CHECK(!a.holds(20002));
  CAF_CHECK_EQUAL(a.allocate_one(), 20002);
}

CAF_TEST(adopted ports are reserved and never handed out twice) {
  port_allocator a{{20000, 20001}, all_free};
  CAF_CHECK(a.reserve(20000));
  CAF_CHECK(!a.reserve(20000));
  CAF_CHECK(!a.reserve(19999));
  CAF_CHECK_EQUAL(a.allocate_one(), 20001);
  CAF_CHECK(starts_with(exhausted_message(a, 1), "apps.port_range 20000-20001 has no free port"));
}

CAF_TEST(a port bound on loopback by another process is skipped) {
  listener taken;
  CAF_REQUIRE(taken.port != 0);
  CAF_CHECK(!bindable_on_loopback(taken.port));
  port_allocator a{{taken.port, taken.port}};
  CAF_CHECK(starts_with(exhausted_message(a, 1), "apps.port_range"));
  // Once it is closed, the same port is handed out.
  auto port = taken.port;
  ::close(taken.fd);
  taken.fd = -1;
  CAF_CHECK(bindable_on_loopback(port));
  CAF_CHECK_EQUAL(a.allocate_one(), port);
}
