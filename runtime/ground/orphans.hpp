#pragma once

// Finding what a previous troupe process left running: every process whose
// environment carries <VAR>=<id> (jobs: TROUPE_JOB_ID, app instances:
// TROUPE_INSTANCE), and the process group that one of them proves is the
// work's. Blocks on /proc: run it off the scheduler (a janitor thread).

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::orphans {

/// Kills (SIGKILL) every process with `var`=ids[i] in its environment, and
/// the process group pgids[i] (0: none) once one of them was found in it.
/// One pass over /proc whatever the number of ids; the number of processes
/// signalled per id. `proc_root` is for tests.
std::vector<uint64_t> kill_tagged(const std::string& var, const std::vector<std::string>& ids,
                                  const std::vector<int64_t>& pgids,
                                  const std::string& proc_root = "/proc");

/// The values of `var` found in any running process's environment (which
/// instances still run, without killing them).
std::vector<std::string> find_tagged(const std::string& var,
                                     const std::string& proc_root = "/proc");

} // namespace troupe::orphans
