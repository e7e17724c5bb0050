#pragma once

// The job controller's queue and admission: priority then FIFO, started as
// concurrency slots free up, never while recovering or shutting down.

#include "actors/jobs/job_controller_parts.hpp"

namespace troupe::job_control {

/// Queues `r` (stored as queued already).
void enqueue(self_ptr self, const persistence::job_record& r);

/// Takes a queued job out of the queue and its counts (it starts or is cancelled).
void dequeue(job_controller_state& st, const job_controller_state::entry& e);

/// Starts queued jobs while slots are free (and recovery is done).
void try_start(self_ptr self);

} // namespace troupe::job_control
