#define CAF_SUITE proc_sample
#include "support/dsl.hpp"

#include <csignal>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "actors/apps/limits.hpp"
#include "actors/apps/proc_sample.hpp"
#include "runtime/ground/process.hpp"

using namespace troupe;
using namespace troupe::apps;
using namespace std::chrono_literals;

namespace {

/// A child in its own process group, killed and reaped at the end.
struct running_child {
  process::child c;
  explicit running_child(std::string script) {
    process::spawn_options opts;
    opts.argv = {"/bin/sh", "-c", std::move(script)};
    opts.env = {"PATH=/usr/bin:/bin"};
    c = process::spawn(opts);
  }
  ~running_child() {
    process::signal_group(c.pid, SIGKILL);
    ::close(c.out_fd);
    ::close(c.err_fd);
    ::close(c.pidfd);
    ::waitpid(c.pid, nullptr, 0);
  }
  /// Blocks until the child printed its first line.
  void wait_ready() {
    char buf[64];
    CAF_REQUIRE(::read(c.out_fd, buf, sizeof(buf)) > 0);
  }
};

} // namespace

CAF_TEST(cpu percent is cpu time over wall time) {
  proc_sample a{1'000'000'000, 0, 1, 10'000'000'000};
  proc_sample b{1'500'000'000, 0, 1, 11'000'000'000};
  CAF_CHECK_EQUAL(cpu_percent(a, b), 50.0);
  proc_sample two_cores{3'000'000'000, 0, 2, 11'000'000'000};
  CAF_CHECK_EQUAL(cpu_percent(a, two_cores), 200.0);
  // No time passed, or a counter that went back (a new group): no rate.
  CAF_CHECK_EQUAL(cpu_percent(b, b), 0.0);
  CAF_CHECK_EQUAL(cpu_percent(b, proc_sample{0, 0, 0, 12'000'000'000}), 0.0);
}

CAF_TEST(a process group that burns cpu shows cpu time growing) {
  running_child burner("echo ready; while :; do :; done");
  burner.wait_ready();
  auto first = sample_process_group(burner.c.pid);
  CAF_CHECK_EQUAL(first.processes, 1u);
  // Waits for the counter to move (clock ticks are 10 ms); bounded by the deadline.
  auto later = first;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (later.cpu_ns <= first.cpu_ns && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    later = sample_process_group(burner.c.pid);
  }
  CAF_CHECK(later.cpu_ns > first.cpu_ns);
  CAF_CHECK(cpu_percent(first, later) > 0.0);
}

CAF_TEST(rss sums every process of the group) {
  // The shell holds 32 MiB in a variable while its child (forked before
  // `ready`) sleeps in the group.
  running_child holder(
      "x=$(head -c 33554432 /dev/zero | tr '\\0' a); sleep 60 & echo ready; wait; echo ${#x}");
  holder.wait_ready();
  auto s = sample_process_group(holder.c.pid);
  CAF_CHECK_EQUAL(s.processes, 2u); // sh and sleep
  CAF_CHECK(s.rss_bytes >= (32ull << 20));
  // Another group's processes are not counted.
  auto none = sample_process_group(holder.c.pid + 1'000'000);
  CAF_CHECK_EQUAL(none.processes, 0u);
  CAF_CHECK_EQUAL(none.rss_bytes, 0u);
}

CAF_TEST(an instance without a cgroup is sampled through its process group) {
  // No exec after "ready": mid-exec a process shows no memory (the race the
  // first version of this case lost under load).
  running_child burner("echo ready; while :; do :; done");
  burner.wait_ready();
  limit_host host;
  host.mechanism = limit_mechanism::rlimit;
  auto g = limit_group::create(host, "web", "web-1", {});
  auto s = sample_instance(g, burner.c.pid);
  CAF_CHECK_EQUAL(s.processes, 1u);
  CAF_CHECK(s.rss_bytes > 0);
}
