#define CAF_SUITE limits
#include "support/dsl.hpp"

#include <csignal>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "actors/apps/limits.hpp"
#include "runtime/ground/process.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace troupe::apps;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

/// A unique instance name, so parallel runs never share a group.
std::string instance_name() {
  return "limits-test-" + std::to_string(::getpid());
}

/// The host's real cgroup v1 set-up, or nothing (the caller skips).
std::optional<limit_host> real_v1() {
  if (::geteuid() != 0) {
    CAF_MESSAGE("skipped: cgroups need root here");
    return std::nullopt;
  }
  auto host = detect_limit_host(limit_mechanism::cgroup_v1);
  if (host.mechanism != limit_mechanism::cgroup_v1) {
    CAF_MESSAGE("skipped: no writable cgroup v1 cpu and memory hierarchies (" << host.note << ")");
    return std::nullopt;
  }
  return host;
}

process::child spawn_in(const limit_group& g, std::vector<std::string> argv) {
  process::spawn_options opts;
  opts.argv = std::move(argv);
  opts.env = {"PATH=/usr/bin:/bin"};
  g.apply(opts);
  return process::spawn(opts);
}

/// Waits for the child (it is ours: no watch here) and closes its fds.
int wait_status(const process::child& c) {
  ::close(c.out_fd);
  ::close(c.err_fd);
  ::close(c.pidfd);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  return status;
}

} // namespace

CAF_TEST(mechanism names round trip) {
  for (auto m : {limit_mechanism::cgroup_v2, limit_mechanism::cgroup_v1, limit_mechanism::rlimit,
                 limit_mechanism::none})
    CAF_CHECK(parse_limit_mechanism(to_string(m)) == m);
  CAF_CHECK(!parse_limit_mechanism("cgroups"));
}

CAF_TEST(v1 groups are found below troupes own group through mountinfo) {
  test::temp_dir dir;
  for (auto* sub : {"/memory/process_api/abc", "/cpu", "/cpuacct"})
    std::filesystem::create_directories(dir.path() + sub);
  write(dir / "cgroup", "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n");
  write(dir / "mountinfo",
        "30 25 0:27 / " + dir.path() + "/memory rw,relatime - cgroup cgroup rw,memory\n" +
            "31 25 0:28 / " + dir.path() + "/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
            "32 25 0:29 / " + dir.path() + "/cpuacct rw - cgroup cgroup rw,cpuacct\n" +
            "33 25 0:30 / " + dir.path() + "/unified rw - cgroup2 cgroup2 rw\n");
  auto host = detect_limit_host(limit_mechanism::cgroup_v2, {dir / "cgroup", dir / "mountinfo"});
  CAF_CHECK(host.mechanism == limit_mechanism::cgroup_v1);
  CAF_CHECK_EQUAL(host.memory_base, dir.path() + "/memory/process_api/abc/troupe");
  CAF_CHECK_EQUAL(host.cpu_base, dir.path() + "/cpu/troupe");
  CAF_CHECK_EQUAL(host.cpuacct_base, dir.path() + "/cpuacct/troupe");
  // Why v2 was passed over is kept for the start-up log.
  CAF_CHECK(host.note.find("cgroup-v2") != std::string::npos);
  CAF_CHECK(std::filesystem::is_directory(host.memory_base));
}

CAF_TEST(v2 is chosen when the unified hierarchy delegates cpu and memory) {
  test::temp_dir dir;
  auto own = dir.path() + "/unified/system.slice/troupe.service";
  std::filesystem::create_directories(own);
  write(own + "/cgroup.controllers", "cpuset cpu io memory pids\n");
  write(own + "/cgroup.subtree_control", "");
  // The fake tree has no kernel behind it: the new group's control file is
  // made here, where the kernel would make it.
  std::filesystem::create_directories(own + "/troupe");
  write(own + "/troupe/cgroup.subtree_control", "");
  write(dir / "cgroup", "0::/system.slice/troupe.service\n");
  write(dir / "mountinfo", "33 25 0:30 / " + dir.path() + "/unified rw - cgroup2 cgroup2 rw\n");
  auto host = detect_limit_host(limit_mechanism::cgroup_v2, {dir / "cgroup", dir / "mountinfo"});
  CAF_CHECK(host.mechanism == limit_mechanism::cgroup_v2);
  CAF_CHECK_EQUAL(host.v2_base, own + "/troupe");
  CAF_CHECK_EQUAL(slurp(own + "/cgroup.subtree_control"), "+cpu +memory");
}

CAF_TEST(without cgroups memory falls back to rlimits and none means none) {
  test::temp_dir dir;
  write(dir / "cgroup", "0::/\n");
  write(dir / "mountinfo", "");
  auto host = detect_limit_host(limit_mechanism::cgroup_v2, {dir / "cgroup", dir / "mountinfo"});
  CAF_CHECK(host.mechanism == limit_mechanism::rlimit);
  auto g = limit_group::create(host, "web", "web-1", {500, 100ull << 20});
  process::spawn_options opts;
  g.apply(opts);
  CAF_CHECK_EQUAL(opts.rlimits.memory_mb, 100u);
  CAF_CHECK(opts.cgroup_procs.empty());
  CAF_CHECK(!g.usage().available);
  CAF_CHECK(g.remove());
  auto none = detect_limit_host(limit_mechanism::none);
  CAF_CHECK(none.mechanism == limit_mechanism::none);
  process::spawn_options untouched;
  limit_group::create(none, "web", "web-1", {500, 100ull << 20}).apply(untouched);
  CAF_CHECK_EQUAL(untouched.rlimits.memory_mb, 0u);
}

CAF_TEST(names that are no single path component are refused with the field) {
  limit_host host;
  host.mechanism = limit_mechanism::rlimit;
  std::string why;
  try {
    limit_group::create(host, "../etc", "x", {});
  } catch (const std::invalid_argument& e) {
    why = e.what();
  }
  CAF_CHECK_EQUAL(why.rfind("app: ", 0), 0u);
  try {
    limit_group::create(host, "web", "a/b", {});
  } catch (const std::invalid_argument& e) {
    why = e.what();
  }
  CAF_CHECK_EQUAL(why.rfind("instance: ", 0), 0u);
}

CAF_TEST(a v1 group sets the cpu quota and the child joins it before exec) {
  auto host = real_v1();
  if (!host)
    return;
  auto g = limit_group::create(*host, "limits-test", instance_name(), {500, 64ull << 20});
  CAF_CHECK_EQUAL(slurp(host->cpu_base + "/limits-test/" + instance_name() + "/cpu.cfs_quota_us"),
                  "50000\n");
  CAF_CHECK_EQUAL(
      slurp(host->memory_base + "/limits-test/" + instance_name() + "/memory.limit_in_bytes"),
      std::to_string(64ull << 20) + "\n");
  // What the program itself sees from its first instruction on.
  auto c = spawn_in(g, {"/bin/cat", "/proc/self/cgroup"});
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(c.out_fd, buf, sizeof(buf))) > 0)
    out.append(buf, static_cast<size_t>(n));
  wait_status(c);
  CAF_CHECK(out.find(":memory:") != std::string::npos);
  CAF_CHECK(out.find("/troupe/limits-test/" + instance_name() + "\n") != std::string::npos);
  CAF_CHECK(g.remove());
  CAF_CHECK(!std::filesystem::exists(g.dirs().front()));
}

CAF_TEST(a child past its memory limit is killed and the oom kill is counted) {
  auto host = real_v1();
  if (!host)
    return;
  auto g = limit_group::create(*host, "limits-test", instance_name() + "-oom", {0, 32ull << 20});
  // tail buffers all of /dev/zero looking for a last line: it only grows.
  auto c = spawn_in(g, {"tail", "/dev/zero"});
  CAF_CHECK_EQUAL(g.pids().size(), 1u);
  // A group with a live process cannot go.
  CAF_CHECK(!g.remove());
  auto status = wait_status(c);
  CAF_REQUIRE(WIFSIGNALED(status));
  CAF_CHECK_EQUAL(WTERMSIG(status), SIGKILL);
  auto u = g.usage();
  CAF_CHECK(u.available);
  CAF_CHECK_EQUAL(u.oom_kills, 1u);
  CAF_CHECK(g.remove());
}

CAF_TEST(a group reports the memory and cpu its processes use) {
  auto host = real_v1();
  if (!host)
    return;
  auto g = limit_group::create(*host, "limits-test", instance_name() + "-use", {});
  auto c = spawn_in(g, {"/bin/sh", "-c",
                        "x=$(head -c 16777216 /dev/zero | tr '\\0' a); echo ready; exec sleep 60"});
  char buf[16];
  CAF_REQUIRE(::read(c.out_fd, buf, sizeof(buf)) > 0);
  auto u = g.usage();
  CAF_CHECK(u.memory_bytes > 0);
  CAF_CHECK(u.has_cpu);
  CAF_CHECK(u.cpu_ns > 0);
  CAF_CHECK_EQUAL(u.oom_kills, 0u);
  process::signal_group(c.pid, SIGKILL);
  wait_status(c);
  CAF_CHECK(g.remove());
}
