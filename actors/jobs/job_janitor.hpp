#pragma once

// The job controller's blocking chores (scanning /proc to kill a job's
// processes, deleting workspace trees) on a thread of their own.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>

#include "actors/interfaces.hpp"

namespace troupe {

/// Does the controller's blocking chores; ends with `controller`.
job_janitor_actor::behavior_type job_janitor(job_janitor_actor::pointer self,
                                             caf::actor controller);

/// Kills every process that carries TROUPE_JOB_ID=`id` in its environment,
/// and the process group `pgid` if it still belongs to the job. Returns the
/// number of processes signalled. Blocks on /proc: the janitor calls it.
size_t kill_job_processes(const std::string& id, int64_t pgid);

/// The same for several jobs in one pass over /proc (`pgids` parallel to
/// `ids`); the number of processes signalled per job.
std::vector<uint64_t> kill_jobs_processes(const std::vector<std::string>& ids,
                                          const std::vector<int64_t>& pgids);

} // namespace troupe
