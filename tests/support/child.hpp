#pragma once

// Starting the processes a test needs (troupe itself, redis-server, nginx …).

#include <string>
#include <vector>

#include <sys/types.h>

namespace troupe::test {

/// Starts `args` in `cwd` with `envp` (a null-terminated NAME=VALUE array),
/// stdin on /dev/null and stdout/stderr on `out_fd`/`err_fd`, in its own
/// process group, with default signal handling and only fds 0-2 open. The
/// child gets SIGKILL if the calling thread dies (a failed CAF_REQUIRE), so
/// no server outlives a failed test run. Returns the pid once execve
/// succeeded, or -1 with `error` naming what failed.
pid_t launch_child(const std::vector<std::string>& args, char* const* envp, const std::string& cwd,
                   int out_fd, int err_fd, std::string* error);

} // namespace troupe::test
