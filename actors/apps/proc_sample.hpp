#pragma once

// CPU time and RSS of an instance, from /proc (every process of its process
// group) or from its cgroup (actors/apps/limits.hpp); cpu_percent turns two
// samples into a rate.

#include <cstdint>
#include <string>

#include <sys/types.h>

namespace troupe::apps {

class limit_group;

/// One reading of an instance's usage.
struct proc_sample {
  /// CPU time (user + system), reaped children of the group included, so it
  /// never drops when a process of the group ends.
  uint64_t cpu_ns = 0;
  uint64_t rss_bytes = 0;
  /// Processes counted (0 for a cgroup sample, or if the group is gone).
  uint32_t processes = 0;
  /// Monotonic time of the reading (CLOCK_MONOTONIC, ns).
  int64_t at_ns = 0;
};

/// Sums /proc/<pid>/stat over the processes of process group `pgid`: the
/// leader (pid `pgid`) and its descendants still in the group, found through
/// /proc/<pid>/task/<tid>/children; every process on the host only when the
/// leader is gone. `proc_root` is for tests.
proc_sample sample_process_group(pid_t pgid, const std::string& proc_root = "/proc");

/// The group's own accounting (cpuacct.usage or cpu.stat; anonymous memory),
/// which also counts processes that left the process group. Falls back to
/// the process group for groups without a cgroup.
proc_sample sample_instance(const limit_group& group, pid_t pgid);

/// CPU used between two samples as a percentage of one core (200 = two
/// cores busy); 0 if no time passed or the counter went back.
double cpu_percent(const proc_sample& before, const proc_sample& after);

} // namespace troupe::apps
