#pragma once

// Resource limits of app instances: cgroup v2 where the unified hierarchy is
// writable and has the cpu and memory controllers, else cgroup v1 (writable
// cpu and memory hierarchies), else rlimits (RLIMIT_AS for memory; no CPU
// cap), else none. Groups live below troupe's own group
// (<own>/troupe/<app>/<instance>), so troupe needs no rights above it.
//
// Placement: a process is put into its group by the child itself, between
// fork and exec (process::spawn_options::cgroup_procs). Moving it after
// spawn would race: until the move it (and any child it forks meanwhile,
// which stays behind) runs unlimited and is charged to troupe.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace troupe::process {
struct spawn_options;
} // namespace troupe::process

namespace troupe::apps {

enum class limit_mechanism : uint8_t { cgroup_v2, cgroup_v1, rlimit, none };

/// "cgroup-v2", "cgroup-v1", "rlimit" or "none" (the status shows it).
const char* to_string(limit_mechanism x);

/// Parses the names to_string gives; nullopt otherwise.
std::optional<limit_mechanism> parse_limit_mechanism(std::string_view text);

/// What an instance may use (0 = unlimited).
struct resource_limits {
  /// CPU in thousandths of a core (spec `cpu: 0.5` = 500).
  uint64_t cpu_millis = 0;
  uint64_t memory_bytes = 0;
};

/// Where this host puts instance groups (found once per node).
struct limit_host {
  limit_mechanism mechanism = limit_mechanism::none;
  /// cgroup-v2: <troupe's group>/troupe in the unified hierarchy.
  std::string v2_base;
  /// cgroup-v1: <troupe's group>/troupe in each hierarchy (cpuacct may be
  /// the cpu one when they are mounted together, or empty when absent).
  std::string cpu_base;
  std::string cpuacct_base;
  std::string memory_base;
  /// Why better mechanisms were passed over (for the start-up log).
  std::string note;
};

/// Files detection reads (tests point them at a fake tree).
struct limit_sources {
  std::string proc_self_cgroup = "/proc/self/cgroup";
  std::string mountinfo = "/proc/self/mountinfo";
};

/// Finds the best mechanism no better than `ceiling` (cgroup_v2 = try all)
/// and creates the base groups it needs. rlimit is always possible.
limit_host detect_limit_host(limit_mechanism ceiling = limit_mechanism::cgroup_v2,
                             const limit_sources& sources = {});

/// An instance's usage as its group counts it.
struct limit_usage {
  /// False without a cgroup (rlimit, none): sample the process group instead.
  bool available = false;
  /// Memory charged to the group (page cache included).
  uint64_t memory_bytes = 0;
  /// Anonymous memory (RSS) of the group.
  uint64_t rss_bytes = 0;
  /// CPU time of every process that ran in the group (when has_cpu: v1
  /// needs the cpuacct hierarchy).
  uint64_t cpu_ns = 0;
  bool has_cpu = false;
  /// Processes the kernel killed for the memory limit ("killed for memory").
  uint64_t oom_kills = 0;
};

/// One instance's limits: its cgroup(s), or the rlimits to apply. A value
/// (paths only): copy it freely; remove() when its processes are gone.
class limit_group {
public:
  limit_group() = default;

  /// Creates <base>/<app>/<instance> and sets the limits. Throws
  /// std::invalid_argument naming `app` or `instance` for a name that is no
  /// single path component, std::system_error naming the file that failed.
  static limit_group create(const limit_host& host, const std::string& app,
                            const std::string& instance, const resource_limits& limits);

  limit_mechanism mechanism() const { return mechanism_; }

  /// Makes a spawn join the group before exec (cgroups) or carry the rlimits.
  void apply(process::spawn_options& opts) const;

  /// Moves an already running process in (adoption after a restart);
  /// false if that failed or there is no cgroup.
  bool place(pid_t pid) const;

  /// Processes in the group now (empty without a cgroup).
  std::vector<pid_t> pids() const;

  limit_usage usage() const;

  /// Removes the group; false while processes remain in it. Without a
  /// cgroup there is nothing to remove (true).
  bool remove() const;

  /// The group's directories (the memory one first); empty without a cgroup.
  const std::vector<std::string>& dirs() const { return dirs_; }

private:
  limit_mechanism mechanism_ = limit_mechanism::none;
  resource_limits limits_;
  /// One directory per hierarchy (v1: memory, cpu, cpuacct; v2: one).
  std::vector<std::string> dirs_;
};

} // namespace troupe::apps
