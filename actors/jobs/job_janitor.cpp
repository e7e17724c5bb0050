#include "actors/jobs/job_janitor.hpp"

#include <algorithm>
#include <csignal>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include <caf/typed_event_based_actor.hpp>

#include "runtime/ground/logging.hpp"
#include "runtime/ground/process.hpp"

namespace troupe {

job_janitor_actor::behavior_type job_janitor(job_janitor_actor::pointer self,
                                             caf::actor controller) {
  self->monitor(controller);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  return {
      [](kill_atom, const std::vector<std::string>& ids, const std::vector<int64_t>& pgids)
          -> std::vector<uint64_t> { return kill_jobs_processes(ids, pgids); },
      [](caf::delete_atom, const std::vector<std::string>& dirs) -> uint64_t {
        uint64_t removed = 0;
        for (auto& d : dirs) {
          std::error_code ec;
          if (std::filesystem::remove_all(d, ec) > 0)
            ++removed;
          else if (ec)
            logging::get("jobs")->warn("cannot remove workspace {}: {}", d, ec.message());
        }
        return removed;
      },
  };
}

size_t kill_job_processes(const std::string& id, int64_t pgid) {
  return kill_jobs_processes({id}, {pgid}).at(0);
}

std::vector<uint64_t> kill_jobs_processes(const std::vector<std::string>& ids,
                                          const std::vector<int64_t>& pgids) {
  std::vector<uint64_t> killed(ids.size(), 0);
  std::vector<bool> group_is_ours(ids.size(), false);
  std::map<std::string, size_t, std::less<>> index;
  for (size_t i = 0; i < ids.size(); ++i)
    index.emplace("TROUPE_JOB_ID=" + ids[i], i);
  std::unique_ptr<DIR, int (*)(DIR*)> proc{::opendir("/proc"), ::closedir};
  if (!proc)
    return killed;
  std::string var;
  while (auto* ent = ::readdir(proc.get())) {
    std::string pid = ent->d_name;
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit))
      continue;
    // Each process's environment is read once, whatever the number of jobs.
    std::ifstream in("/proc/" + pid + "/environ", std::ios::binary);
    std::optional<size_t> job;
    while (in && !job && std::getline(in, var, '\0'))
      if (auto i = index.find(var); i != index.end())
        job = i->second;
    if (!job)
      continue;
    auto p = static_cast<pid_t>(std::stol(pid));
    if (p == pgids[*job])
      group_is_ours[*job] = true;
    if (::kill(p, SIGKILL) == 0)
      ++killed[*job];
  }
  // The group leader may be gone while members live on; a group id is only
  // trusted when a process of this job proved it ours.
  for (size_t i = 0; i < ids.size(); ++i)
    if (group_is_ours[i] && process::signal_group(static_cast<pid_t>(pgids[i]), SIGKILL))
      ++killed[i];
  return killed;
}

} // namespace troupe
