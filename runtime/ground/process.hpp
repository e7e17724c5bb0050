#pragma once

// Child processes of jobs (and later app instances): posix_spawn in a process
// group of their own, stdout/stderr through pipes read by asio on a dedicated
// io thread, exit noticed through a pidfd — no SIGCHLD handler, no blocking
// wait in any actor.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace troupe::process {

struct limits {
  uint64_t cpu_seconds = 0; ///< RLIMIT_CPU (0 = unlimited)
  uint64_t memory_mb = 0;   ///< RLIMIT_AS (0 = unlimited)
  uint64_t open_files = 0;  ///< RLIMIT_NOFILE (0 = inherit)
};

/// Who a child runs as (resolved before the spawn: nothing between fork and
/// exec may consult the user database).
struct credentials {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;
};

/// How the fork path keeps troupe's descriptors out of the child.
enum class fd_sweep {
  /// close_range(CLOSE_RANGE_CLOEXEC), falling back to `scan` where it fails.
  close_range,
  /// Marks each descriptor listed in /proc/self/fd close-on-exec (the
  /// fallback; tests select it directly).
  scan,
};

struct spawn_options {
  std::vector<std::string> argv;
  /// The complete environment, NAME=VALUE.
  std::vector<std::string> env;
  std::string cwd;
  limits rlimits;
  /// Switch to this user before exec (troupe must be root); unset: stay.
  std::optional<credentials> user;
  fd_sweep sweep = fd_sweep::close_range;
  /// cgroup.procs files the child joins before exec (app instances' limit
  /// groups): written from the child itself, so nothing it runs ever
  /// escapes the limits. A write that fails fails the spawn.
  std::vector<std::string> cgroup_procs;
};

/// A started child. The pid is also its process group id.
struct child {
  pid_t pid = -1;
  int pidfd = -1;
  int out_fd = -1;
  int err_fd = -1;
};

/// Starts a child in a process group of its own, with only fds 0-2 open;
/// throws std::system_error naming what failed (e.g. the command was not
/// found). Blocks briefly (fork/exec): call it from io::post_blocking, never
/// on an actor's scheduler thread. Without rlimits, user and cgroups it uses
/// posix_spawn; otherwise fork + cgroup join + setrlimit + setuid + exec, so
/// limits and user hold from the child's first instruction.
child spawn(const spawn_options& opts);

/// Signals the whole process group; false if it no longer exists.
bool signal_group(pid_t pgid, int sig);

/// True if any process of the group is still alive.
bool group_alive(pid_t pgid);

struct exit_status {
  int exit_code = -1; ///< set when the process exited normally
  int signal = 0;     ///< set when a signal killed it
};

/// Output of one read, split into complete lines.
struct output {
  uint8_t stream = 1; ///< 1 stdout, 2 stderr
  int64_t ts_ns = 0;
  /// The lines back to back, each a 4-byte little-endian length then its
  /// bytes (troupe::for_each_packed reads them): one buffer per read.
  std::string lines;
  uint32_t count = 0;
  bool eof = false;
};

/// What a watch reports; called on the io thread, must not block.
struct callbacks {
  /// Lines read; reading that stream pauses until watch::resume(stream).
  std::function<void(output)> on_output;
  /// The process ended (reaped). Arrives independently of EOF on the pipes.
  std::function<void(exit_status)> on_exit;
};

class io;

/// Reads a child's pipes and waits for its exit.
class watch {
public:
  virtual ~watch() = default;
  /// The consumer is done with the last batch of `stream`: read on.
  virtual void resume(uint8_t stream) = 0;
  /// Stops watching and closes the fds (the process is not signalled).
  virtual void close() = 0;
  /// Starts reading and waiting for the exit of a watch made by
  /// io::prepare (a no-op once started or closed).
  virtual void begin() = 0;
};

/// The io thread that serves every watch.
class io {
public:
  io();
  ~io();
  io(const io&) = delete;
  io& operator=(const io&) = delete;

  /// Takes ownership of the child's fds. Lines longer than `max_line` bytes
  /// are split into pieces; a partial last line is flushed at EOF.
  std::shared_ptr<watch> start(const child& c, size_t max_line, callbacks cb);

  /// Like start, but nothing is reported before watch::begin(): the caller
  /// can announce the child first, so its report precedes every callback.
  std::shared_ptr<watch> prepare(const child& c, size_t max_line, callbacks cb);

  /// Runs `task` on a thread of its own (one for all tasks, in order) that
  /// may block: spawns, preparing workspaces. Tasks left at destruction are
  /// dropped.
  void post_blocking(std::function<void()> task);

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::process
