#include "actors/apps/proc_sample.hpp"

#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include <dirent.h>
#include <unistd.h>

#include "actors/apps/limits.hpp"

namespace troupe::apps {

namespace {

int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct stat_fields {
  pid_t pgrp = 0;
  uint64_t ticks = 0; ///< utime + stime + cutime + cstime
  uint64_t rss_pages = 0;
};

/// Parses /proc/<pid>/stat. The command name may hold spaces and parentheses,
/// so fields are counted from the last ')'.
bool parse_stat(const std::string& text, stat_fields& out) {
  auto close = text.rfind(')');
  if (close == std::string::npos)
    return false;
  std::istringstream in(text.substr(close + 1));
  // Fields 3.. of proc(5): state ppid pgrp session tty_nr tpgid flags minflt
  // cminflt majflt cmajflt utime stime cutime cstime priority nice
  // num_threads itrealvalue starttime vsize rss
  std::string state;
  long long ppid, pgrp, session, tty, tpgid;
  unsigned long long flags, minflt, cminflt, majflt, cmajflt, utime, stime;
  long long cutime, cstime, priority, nice, threads, itreal;
  unsigned long long start, vsize;
  long long rss;
  if (!(in >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags >> minflt >> cminflt >>
        majflt >> cmajflt >> utime >> stime >> cutime >> cstime >> priority >> nice >> threads >>
        itreal >> start >> vsize >> rss))
    return false;
  out.pgrp = static_cast<pid_t>(pgrp);
  out.ticks = utime + stime + static_cast<uint64_t>(cutime > 0 ? cutime : 0) +
              static_cast<uint64_t>(cstime > 0 ? cstime : 0);
  out.rss_pages = rss > 0 ? static_cast<uint64_t>(rss) : 0;
  return true;
}

bool numeric(const char* name) {
  if (*name == '\0')
    return false;
  for (; *name != '\0'; ++name)
    if (*name < '0' || *name > '9')
      return false;
  return true;
}

} // namespace

namespace {

/// Reads /proc/<pid>/stat into `f`; false if the process is gone.
bool read_stat(const std::string& proc_root, const std::string& pid, stat_fields& f) {
  std::ifstream in(proc_root + "/" + pid + "/stat");
  std::string text;
  return std::getline(in, text) && parse_stat(text, f);
}

/// The children of every thread of `pid` (/proc/<pid>/task/<tid>/children).
/// False if the task directory cannot be read.
bool children_of(const std::string& proc_root, const std::string& pid,
                 std::vector<std::string>& out) {
  auto task_dir = proc_root + "/" + pid + "/task";
  DIR* dir = ::opendir(task_dir.c_str());
  if (dir == nullptr)
    return false;
  bool any = false;
  while (auto* ent = ::readdir(dir)) {
    if (!numeric(ent->d_name))
      continue;
    std::ifstream in(task_dir + "/" + ent->d_name + "/children");
    if (!in)
      continue;
    any = true;
    for (std::string child; in >> child;)
      out.push_back(child);
  }
  ::closedir(dir);
  return any;
}

} // namespace

proc_sample sample_process_group(pid_t pgid, const std::string& proc_root) {
  static const uint64_t tick_ns = 1'000'000'000ull / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  proc_sample s;
  s.at_ns = monotonic_ns();
  if (pgid <= 0)
    return s;
  auto count = [&](const stat_fields& f) {
    s.cpu_ns += f.ticks * tick_ns;
    s.rss_bytes += f.rss_pages * page;
    ++s.processes;
  };
  // The group's leader is its first process (an instance's pgid is its
  // pid): walk its tree of children, a few small reads, instead of every
  // process on the host. Only when the leader is gone (or the kernel keeps
  // no children lists) are all processes scanned.
  stat_fields leader;
  std::vector<std::string> pending;
  auto leader_pid = std::to_string(pgid);
  if (read_stat(proc_root, leader_pid, leader) && leader.pgrp == pgid &&
      children_of(proc_root, leader_pid, pending)) {
    count(leader);
    // Bounded: a fork bomb in the group is not followed past this many.
    for (size_t seen = 0; !pending.empty() && seen < 4096; ++seen) {
      auto pid = std::move(pending.back());
      pending.pop_back();
      stat_fields f;
      if (!read_stat(proc_root, pid, f) || f.pgrp != pgid)
        continue;
      count(f);
      children_of(proc_root, pid, pending);
    }
    return s;
  }
  DIR* dir = ::opendir(proc_root.c_str());
  if (dir == nullptr)
    return s;
  while (auto* ent = ::readdir(dir)) {
    if (!numeric(ent->d_name))
      continue;
    stat_fields f;
    // A process that ended meanwhile has no stat any more: skip it.
    if (read_stat(proc_root, ent->d_name, f) && f.pgrp == pgid)
      count(f);
  }
  ::closedir(dir);
  return s;
}

proc_sample sample_instance(const limit_group& group, pid_t pgid) {
  auto u = group.usage();
  if (!u.available)
    return sample_process_group(pgid);
  proc_sample s;
  if (!u.has_cpu)
    s = sample_process_group(pgid);
  else
    s.cpu_ns = u.cpu_ns;
  s.at_ns = monotonic_ns();
  s.rss_bytes = u.rss_bytes;
  s.processes = 0;
  return s;
}

double cpu_percent(const proc_sample& before, const proc_sample& after) {
  if (after.at_ns <= before.at_ns || after.cpu_ns < before.cpu_ns)
    return 0;
  return 100.0 * static_cast<double>(after.cpu_ns - before.cpu_ns) /
         static_cast<double>(after.at_ns - before.at_ns);
}

} // namespace troupe::apps
