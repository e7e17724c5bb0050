#pragma once

// The job controller's gauges and observations for the metrics registry:
// queue depth, pressure and slot use on the gauge board, queue-wait and
// run-time histograms.

#include <string>

#include "actors/jobs/job_controller_parts.hpp"

namespace troupe::job_control {

/// Queue depth, pressure and slot use as gauges of the metrics registry.
void report_gauges(self_ptr self);

/// Job `id` left the queue now: its queue wait is observed and its run time
/// starts.
void observe_start(self_ptr self, const std::string& id);

/// The attempt of job `id` ended now: its run time is observed.
void observe_end(self_ptr self, const std::string& id);

} // namespace troupe::job_control
