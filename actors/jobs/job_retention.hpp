#pragma once

// The job controller's retention: the periodic sweep purges expired jobs
// (record, log, workspace) and expired workspaces in bounded steps
// (sweep_*_per_step in job_controller.hpp), then trims the global log
// (logs.retention, logs.max_bytes) and the event log (jobs.retention).

#include <string>

#include "actors/jobs/job_controller_parts.hpp"

namespace troupe::job_control {

/// Starts a sweep unless one is still going; the next is due an interval later.
void sweep(self_ptr self);

/// One bounded step of the sweep going on, from job id `from` on.
void sweep_step(self_ptr self, const std::string& from);

} // namespace troupe::job_control
