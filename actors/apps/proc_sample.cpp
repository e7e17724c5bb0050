#include "actors/apps/proc_sample.hpp"

#include <ctime>
#include <fstream>
#include <sstream>

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

proc_sample sample_process_group(pid_t pgid, const std::string& proc_root) {
  static const uint64_t tick_ns = 1'000'000'000ull / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  proc_sample s;
  s.at_ns = monotonic_ns();
  if (pgid <= 0)
    return s;
  DIR* dir = ::opendir(proc_root.c_str());
  if (dir == nullptr)
    return s;
  while (auto* ent = ::readdir(dir)) {
    if (!numeric(ent->d_name))
      continue;
    std::ifstream in(proc_root + "/" + ent->d_name + "/stat");
    std::string text;
    // A process that ended meanwhile has no stat any more: skip it.
    if (!std::getline(in, text))
      continue;
    stat_fields f;
    if (!parse_stat(text, f) || f.pgrp != pgid)
      continue;
    s.cpu_ns += f.ticks * tick_ns;
    s.rss_bytes += f.rss_pages * page;
    ++s.processes;
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
