#include "runtime/ground/orphans.hpp"

#include <algorithm>
#include <csignal>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "runtime/ground/process.hpp"

namespace troupe::orphans {

namespace {

/// Calls `fn(pid, NAME=VALUE)` for each environment entry starting with
/// `prefix` of each process; `fn` returns false to go to the next process.
void scan(const std::string& proc_root, const std::string& prefix,
          const std::function<bool(pid_t, const std::string&)>& fn) {
  std::unique_ptr<DIR, int (*)(DIR*)> proc{::opendir(proc_root.c_str()), ::closedir};
  if (!proc)
    return;
  std::string var;
  while (auto* ent = ::readdir(proc.get())) {
    std::string pid = ent->d_name;
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit))
      continue;
    // Each process's environment is read once, whatever the number of ids.
    std::ifstream in(proc_root + "/" + pid + "/environ", std::ios::binary);
    while (in && std::getline(in, var, '\0'))
      if (var.compare(0, prefix.size(), prefix) == 0 &&
          !fn(static_cast<pid_t>(std::stol(pid)), var))
        break;
  }
}

} // namespace

std::vector<uint64_t> kill_tagged(const std::string& var, const std::vector<std::string>& ids,
                                  const std::vector<int64_t>& pgids, const std::string& proc_root) {
  std::vector<uint64_t> killed(ids.size(), 0);
  std::vector<bool> group_is_ours(ids.size(), false);
  std::map<std::string, size_t, std::less<>> index;
  for (size_t i = 0; i < ids.size(); ++i)
    index.emplace(var + "=" + ids[i], i);
  scan(proc_root, var + "=", [&](pid_t p, const std::string& entry) {
    auto i = index.find(entry);
    if (i == index.end())
      return true;
    auto n = i->second;
    if (n < pgids.size() && p == pgids[n])
      group_is_ours[n] = true;
    if (::kill(p, SIGKILL) == 0)
      ++killed[n];
    return false;
  });
  // The group leader may be gone while members live on; a group id is only
  // trusted when a process of this work proved it ours.
  for (size_t i = 0; i < ids.size(); ++i)
    if (group_is_ours[i] && process::signal_group(static_cast<pid_t>(pgids[i]), SIGKILL))
      ++killed[i];
  return killed;
}

std::vector<std::string> find_tagged(const std::string& var, const std::string& proc_root) {
  std::set<std::string> found;
  auto prefix = var + "=";
  scan(proc_root, prefix, [&](pid_t, const std::string& entry) {
    found.insert(entry.substr(prefix.size()));
    return false;
  });
  return {found.begin(), found.end()};
}

} // namespace troupe::orphans
