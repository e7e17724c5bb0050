#include "actors/jobs/job_janitor.hpp"

#include <filesystem>

#include <caf/typed_event_based_actor.hpp>

#include "runtime/ground/logging.hpp"
#include "runtime/ground/orphans.hpp"

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
  return orphans::kill_tagged("TROUPE_JOB_ID", ids, pgids);
}

} // namespace troupe
