#include "actors/apps/limits.hpp"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ground/process.hpp"

namespace troupe::apps {

namespace {

constexpr uint64_t cfs_period_us = 100'000;

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// Writes `value` to an existing control file; 0 or an errno.
int write_control(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return errno;
  auto n = ::write(fd, value.data(), value.size());
  int err = n == static_cast<ssize_t>(value.size()) ? 0 : (n < 0 ? errno : EIO);
  ::close(fd);
  return err;
}

void must_write(const std::string& path, const std::string& value) {
  if (int err = write_control(path, value))
    throw std::system_error(err, std::generic_category(), "cannot write " + value + " to " + path);
}

/// mkdir that accepts an existing directory; 0 or an errno.
int make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST)
    return 0;
  return errno;
}

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

uint64_t to_u64(std::string_view text) {
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      break;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

/// The value of `key` in a flat "key value" file (memory.stat, cpu.stat,
/// memory.events, memory.oom_control); 0 if absent.
uint64_t keyed_value(const std::optional<std::string>& text, std::string_view key) {
  if (!text)
    return 0;
  std::istringstream in(*text);
  std::string k, v;
  while (in >> k >> v)
    if (k == key)
      return to_u64(v);
  return 0;
}

uint64_t number_file(const std::string& path) {
  auto t = read_text(path);
  return t ? to_u64(*t) : 0;
}

/// mountinfo escapes spaces and the like as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      auto oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string_view::npos) {
        out += static_cast<char>((oct[0] - '0') * 64 + (oct[1] - '0') * 8 + (oct[2] - '0'));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

struct cgroup_mount {
  std::string root;
  std::string point;
  bool v2 = false;
  std::vector<std::string> controllers;
};

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    auto next = s.find(sep, pos);
    if (next == std::string_view::npos)
      next = s.size();
    out.emplace_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

std::vector<cgroup_mount> cgroup_mounts(const std::string& mountinfo) {
  std::vector<cgroup_mount> out;
  std::istringstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos)
      continue;
    std::istringstream left(line.substr(0, dash));
    std::istringstream right(line.substr(dash + 3));
    std::string id, parent, dev, root, point, fstype, source, options;
    if (!(left >> id >> parent >> dev >> root >> point) || !(right >> fstype >> source >> options))
      continue;
    if (fstype != "cgroup" && fstype != "cgroup2")
      continue;
    cgroup_mount m{unescape(root), unescape(point), fstype == "cgroup2", {}};
    if (!m.v2)
      m.controllers = split(options, ',');
    out.push_back(std::move(m));
  }
  return out;
}

/// /proc/self/cgroup: hierarchy → our path ("" for the unified one).
std::map<std::string, std::string> own_groups(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':');
    auto b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos)
      continue;
    auto controllers = line.substr(a + 1, b - a - 1);
    auto path = line.substr(b + 1);
    if (controllers.empty())
      out[""] = path;
    for (auto& c : split(controllers, ','))
      if (!c.empty())
        out[c] = path;
  }
  return out;
}

bool has(const std::vector<std::string>& v, std::string_view x) {
  for (auto& s : v)
    if (s == x)
      return true;
  return false;
}

/// Our group's directory in mount `m`, or "" if the mount does not show it.
std::string dir_in(const cgroup_mount& m, const std::string& path) {
  if (m.root == "/")
    return m.point + (path == "/" ? "" : path);
  if (path.rfind(m.root, 0) != 0)
    return {};
  return m.point + path.substr(m.root.size());
}

/// Creates <dir>/troupe and returns it, or "" with `why` set.
std::string make_base(const std::string& own, std::string& why) {
  auto base = own + "/troupe";
  if (int err = make_dir(base)) {
    why = base + ": " + std::generic_category().message(err);
    return {};
  }
  return base;
}

bool try_v2(limit_host& host, const std::vector<cgroup_mount>& mounts,
            const std::map<std::string, std::string>& own, std::string& why) {
  auto path = own.find("");
  const cgroup_mount* mount = nullptr;
  for (auto& m : mounts)
    if (m.v2)
      mount = &m;
  if (mount == nullptr || path == own.end()) {
    why = "cgroup-v2: no unified hierarchy";
    return false;
  }
  auto dir = dir_in(*mount, path->second);
  auto controllers = split(read_text(dir + "/cgroup.controllers").value_or(""), ' ');
  for (auto& c : controllers)
    while (!c.empty() && (c.back() == '\n' || c.back() == ' '))
      c.pop_back();
  if (!has(controllers, "cpu") || !has(controllers, "memory")) {
    why = "cgroup-v2: cpu and memory controllers not available in " + dir;
    return false;
  }
  // Delegating needs our group's subtree_control; the kernel refuses it
  // (EBUSY) while processes sit in a non-root group, which then rules v2 out.
  if (int err = write_control(dir + "/cgroup.subtree_control", "+cpu +memory")) {
    why = "cgroup-v2: cannot enable cpu and memory below " + dir + ": " +
          std::generic_category().message(err);
    return false;
  }
  auto base = make_base(dir, why);
  if (base.empty() || write_control(base + "/cgroup.subtree_control", "+cpu +memory") != 0) {
    why = "cgroup-v2: " + (why.empty() ? base + " cannot delegate cpu and memory" : why);
    return false;
  }
  host.v2_base = base;
  return true;
}

bool try_v1(limit_host& host, const std::vector<cgroup_mount>& mounts,
            const std::map<std::string, std::string>& own, std::string& why) {
  auto find = [&](std::string_view controller) -> std::string {
    auto path = own.find(std::string{controller});
    if (path == own.end())
      return {};
    for (auto& m : mounts)
      if (!m.v2 && has(m.controllers, controller))
        return dir_in(m, path->second);
    return {};
  };
  auto memory = find("memory");
  auto cpu = find("cpu");
  if (memory.empty() || cpu.empty()) {
    why = "cgroup-v1: no cpu and memory hierarchies";
    return false;
  }
  auto memory_base = make_base(memory, why);
  auto cpu_base = memory_base.empty() ? std::string{} : make_base(cpu, why);
  if (cpu_base.empty()) {
    why = "cgroup-v1: " + why;
    return false;
  }
  host.memory_base = memory_base;
  host.cpu_base = cpu_base;
  // cpuacct gives CPU usage; optional (sampling falls back to /proc).
  auto cpuacct = find("cpuacct");
  std::string ignored;
  host.cpuacct_base = cpuacct.empty() ? std::string{} : make_base(cpuacct, ignored);
  return true;
}

bool is_component(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.size() <= 200;
}

std::vector<std::string> unique(std::vector<std::string> dirs) {
  std::vector<std::string> out;
  for (auto& d : dirs)
    if (!d.empty() && !has(out, d))
      out.push_back(d);
  return out;
}

void make_group(const std::string& base, const std::string& app, const std::string& instance) {
  for (auto& dir : {base + "/" + app, base + "/" + app + "/" + instance})
    if (int err = make_dir(dir))
      throw std::system_error(err, std::generic_category(), "cannot create cgroup " + dir);
}

} // namespace

const char* to_string(limit_mechanism x) {
  switch (x) {
  case limit_mechanism::cgroup_v2:
    return "cgroup-v2";
  case limit_mechanism::cgroup_v1:
    return "cgroup-v1";
  case limit_mechanism::rlimit:
    return "rlimit";
  case limit_mechanism::none:
    return "none";
  }
  return "none";
}

std::optional<limit_mechanism> parse_limit_mechanism(std::string_view text) {
  for (auto m : {limit_mechanism::cgroup_v2, limit_mechanism::cgroup_v1, limit_mechanism::rlimit,
                 limit_mechanism::none})
    if (text == to_string(m))
      return m;
  return std::nullopt;
}

limit_host detect_limit_host(limit_mechanism ceiling, const limit_sources& sources) {
  limit_host host;
  if (ceiling == limit_mechanism::none)
    return host;
  auto mounts = cgroup_mounts(read_text(sources.mountinfo).value_or(""));
  auto own = own_groups(read_text(sources.proc_self_cgroup).value_or(""));
  std::string why;
  if (ceiling == limit_mechanism::cgroup_v2) {
    if (try_v2(host, mounts, own, why)) {
      host.mechanism = limit_mechanism::cgroup_v2;
      return host;
    }
    host.note = why;
  }
  if (ceiling == limit_mechanism::cgroup_v2 || ceiling == limit_mechanism::cgroup_v1) {
    why.clear();
    if (try_v1(host, mounts, own, why)) {
      host.mechanism = limit_mechanism::cgroup_v1;
      return host;
    }
    host.note += (host.note.empty() ? "" : "; ") + why;
  }
  host.mechanism = limit_mechanism::rlimit;
  return host;
}

limit_group limit_group::create(const limit_host& host, const std::string& app,
                                const std::string& instance, const resource_limits& limits) {
  if (!is_component(app))
    throw std::invalid_argument("app: not usable as a cgroup name: " + app);
  if (!is_component(instance))
    throw std::invalid_argument("instance: not usable as a cgroup name: " + instance);
  limit_group g;
  g.mechanism_ = host.mechanism;
  g.limits_ = limits;
  auto leaf = "/" + app + "/" + instance;
  if (host.mechanism == limit_mechanism::cgroup_v2) {
    make_group(host.v2_base, app, instance);
    auto app_dir = host.v2_base + "/" + app;
    must_write(app_dir + "/cgroup.subtree_control", "+cpu +memory");
    auto dir = app_dir + "/" + instance;
    g.dirs_ = {dir};
    must_write(dir + "/memory.max",
               limits.memory_bytes ? std::to_string(limits.memory_bytes) : "max");
    // Without swap a limit ends in the OOM killer, which is what status reports.
    if (limits.memory_bytes && exists(dir + "/memory.swap.max"))
      must_write(dir + "/memory.swap.max", "0");
    auto quota =
        limits.cpu_millis
            ? std::to_string(std::max<uint64_t>(limits.cpu_millis * cfs_period_us / 1000, 1000))
            : std::string{"max"};
    must_write(dir + "/cpu.max", quota + " " + std::to_string(cfs_period_us));
  } else if (host.mechanism == limit_mechanism::cgroup_v1) {
    for (auto* base : {&host.memory_base, &host.cpu_base, &host.cpuacct_base})
      if (!base->empty())
        make_group(*base, app, instance);
    g.dirs_ = unique({host.memory_base + leaf, host.cpu_base + leaf,
                      host.cpuacct_base.empty() ? std::string{} : host.cpuacct_base + leaf});
    auto mem = host.memory_base + leaf;
    auto bytes = limits.memory_bytes ? std::to_string(limits.memory_bytes) : std::string{"-1"};
    must_write(mem + "/memory.limit_in_bytes", bytes);
    if (exists(mem + "/memory.memsw.limit_in_bytes"))
      must_write(mem + "/memory.memsw.limit_in_bytes", bytes);
    auto cpu = host.cpu_base + leaf;
    must_write(cpu + "/cpu.cfs_period_us", std::to_string(cfs_period_us));
    must_write(cpu + "/cpu.cfs_quota_us", limits.cpu_millis
                                              ? std::to_string(std::max<uint64_t>(
                                                    limits.cpu_millis * cfs_period_us / 1000, 1000))
                                              : std::string{"-1"});
  }
  return g;
}

void limit_group::apply(process::spawn_options& opts) const {
  if (!dirs_.empty()) {
    for (auto& d : dirs_)
      opts.cgroup_procs.push_back(d + "/cgroup.procs");
    return;
  }
  if (mechanism_ == limit_mechanism::rlimit && limits_.memory_bytes)
    opts.rlimits.memory_mb = (limits_.memory_bytes + (1u << 20) - 1) >> 20;
}

bool limit_group::place(pid_t pid) const {
  if (dirs_.empty())
    return false;
  for (auto& d : dirs_)
    if (write_control(d + "/cgroup.procs", std::to_string(pid)) != 0)
      return false;
  return true;
}

std::vector<pid_t> limit_group::pids() const {
  std::vector<pid_t> out;
  if (dirs_.empty())
    return out;
  std::istringstream in(read_text(dirs_.front() + "/cgroup.procs").value_or(""));
  pid_t pid;
  while (in >> pid)
    out.push_back(pid);
  return out;
}

limit_usage limit_group::usage() const {
  limit_usage u;
  if (dirs_.empty())
    return u;
  u.available = true;
  auto& mem = dirs_.front();
  if (mechanism_ == limit_mechanism::cgroup_v2) {
    u.memory_bytes = number_file(mem + "/memory.current");
    u.rss_bytes = keyed_value(read_text(mem + "/memory.stat"), "anon");
    u.oom_kills = keyed_value(read_text(mem + "/memory.events"), "oom_kill");
    u.cpu_ns = keyed_value(read_text(mem + "/cpu.stat"), "usage_usec") * 1000;
    u.has_cpu = true;
    return u;
  }
  u.memory_bytes = number_file(mem + "/memory.usage_in_bytes");
  auto stat = read_text(mem + "/memory.stat");
  u.rss_bytes = keyed_value(stat, "total_rss");
  u.oom_kills = keyed_value(read_text(mem + "/memory.oom_control"), "oom_kill");
  for (auto& d : dirs_)
    if (exists(d + "/cpuacct.usage")) {
      u.cpu_ns = number_file(d + "/cpuacct.usage");
      u.has_cpu = true;
    }
  return u;
}

bool limit_group::remove() const {
  bool all = true;
  for (auto& d : dirs_) {
    if (::rmdir(d.c_str()) != 0 && errno != ENOENT) {
      all = false;
      continue;
    }
    // The app's directory goes with its last instance (busy otherwise: fine).
    auto app_dir = d.substr(0, d.rfind('/'));
    ::rmdir(app_dir.c_str());
  }
  return all;
}

} // namespace troupe::apps
