#pragma once

// troupe and its host: who jobs run as (jobs.user / jobs.group), and the
// modes and owners of the directories that hold the store and the jobs'
// workspaces. Ground floor: no actors, no store.

#include <optional>
#include <string>
#include <system_error>

#include <sys/types.h>

#include "runtime/ground/config.hpp"

namespace troupe::host {

/// Resolves jobs.user / jobs.group for a troupe running as `euid`/`egid`;
/// unset when `user` is empty. Throws config_error naming the key: an unknown
/// user or group, a group without a user, and — since only root can switch —
/// any user or group but troupe's own while it is not root.
std::optional<job_identity> resolve_job_identity(const std::string& user, const std::string& group,
                                                 uid_t euid, gid_t egid);

/// Mode and group of the data dir and DATA_DIR/workspaces: troupe's alone
/// (0700), or, while jobs run as another user, also searchable but not
/// listable by the jobs' group (0710) so a job reaches its own workspace by
/// path; the store below stays 0700.
struct dir_access {
  mode_t mode = 0700;
  std::optional<gid_t> group;
};
dir_access shared_dir_access(const std::optional<job_identity>& jobs);

/// Creates `dir` (and missing parents) with `access`; an existing one gets
/// exactly that mode and group. Returns the mode it had when it had to
/// change (for the caller to log). Throws std::system_error naming the dir.
std::optional<mode_t> ensure_dir(const std::string& dir, const dir_access& access);

/// Creates a job's workspace (its parent must exist): 0700, owned by the
/// jobs' user when they run as another one. For the submit path.
void create_workspace(const std::string& path, const jobs_config& cfg, std::error_code& ec);

/// Makes `path` the job's own before an attempt starts: the workspace 0700
/// and, when jobs run as another user, every entry in it (an extracted
/// archive, leftovers of earlier attempts) owned by that user. Walks by
/// descriptor, never follows a symlink and leaves files with further hard
/// links alone, so a job cannot point it at anything outside its workspace.
/// Throws std::system_error.
void hand_over_workspace(const std::string& path, const std::optional<job_identity>& jobs);

/// The first directory on the way to `dir` (itself included) that `who`
/// may not search by its mode bits, or empty when it can reach `dir`.
std::string blocked_on_the_way(const std::string& dir, const job_identity& who);

/// A mode as four octal digits, e.g. "0700" (for logs and errors).
std::string octal(mode_t mode);

} // namespace troupe::host
