#pragma once

// The job controller's recovery on start: what a previous process of this
// node left behind is reconciled before any job starts.

#include "actors/jobs/job_controller_parts.hpp"

namespace troupe::job_control {

/// Counts the stored jobs by state; kills the orphaned processes of jobs left
/// `running` (through the janitor), then re-queues them (retries left) or
/// marks them `lost`, in one write; queued jobs are queued again. Quits the
/// controller if the write fails.
void recover(self_ptr self);

} // namespace troupe::job_control
