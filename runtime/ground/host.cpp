#include "runtime/ground/host.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

namespace troupe::host {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what, int err) {
  throw std::system_error(err, std::generic_category(), what);
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Calls a getpwnam_r-style function with a buffer grown on ERANGE; false
/// if there is no such entry.
template <class Entry, class Lookup> bool lookup(Entry& out, Lookup fn, std::vector<char>& buf) {
  buf.resize(4096);
  for (;;) {
    Entry* found = nullptr;
    auto rc = fn(&out, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    return rc == 0 && found != nullptr;
  }
}

struct user_entry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
};

/// A user by name, or by number when no name matches.
std::optional<user_entry> find_user(const std::string& name) {
  passwd pw{};
  std::vector<char> buf;
  bool ok = lookup(
      pw,
      [&](passwd* p, char* b, size_t n, passwd** r) {
        return ::getpwnam_r(name.c_str(), p, b, n, r);
      },
      buf);
  if (!ok && all_digits(name)) {
    auto uid = static_cast<uid_t>(std::stoul(name));
    ok = lookup(
        pw, [&](passwd* p, char* b, size_t n, passwd** r) { return ::getpwuid_r(uid, p, b, n, r); },
        buf);
  }
  if (!ok)
    return std::nullopt;
  return user_entry{pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir ? pw.pw_dir : "",
                    pw.pw_shell ? pw.pw_shell : ""};
}

std::optional<gid_t> find_group(const std::string& name) {
  group gr{};
  std::vector<char> buf;
  bool ok = lookup(
      gr,
      [&](group* g, char* b, size_t n, group** r) {
        return ::getgrnam_r(name.c_str(), g, b, n, r);
      },
      buf);
  if (!ok && all_digits(name)) {
    auto gid = static_cast<gid_t>(std::stoul(name));
    ok = lookup(
        gr, [&](group* g, char* b, size_t n, group** r) { return ::getgrgid_r(gid, g, b, n, r); },
        buf);
  }
  if (!ok)
    return std::nullopt;
  return gr.gr_gid;
}

/// The groups initgroups would give `user` with primary group `gid`.
std::vector<uint32_t> supplementary_groups(const std::string& user, gid_t gid) {
  int n = 32;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  while (::getgrouplist(user.c_str(), gid, groups.data(), &n) < 0) {
    if (n <= static_cast<int>(groups.size()))
      n = static_cast<int>(groups.size()) * 2;
    groups.resize(static_cast<size_t>(n));
  }
  groups.resize(static_cast<size_t>(n));
  return {groups.begin(), groups.end()};
}

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f) : fd(f) {}
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
};

bool owned_by(const struct stat& st, const job_identity& who) {
  return st.st_uid == who.uid && st.st_gid == who.gid;
}

/// Deeper than this, directories are left as they are: an archive nests at
/// most 256 levels, and what a job created itself is its own already.
constexpr int max_depth = 256;

/// Gives every entry below the open directory `dir` to `who` (see
/// hand_over_workspace for why it works by descriptor).
void hand_over_entries(int dir, const job_identity& who, int depth) {
  int listing = ::dup(dir);
  if (listing < 0)
    fail("dup", errno);
  std::unique_ptr<DIR, int (*)(DIR*)> d{::fdopendir(listing), ::closedir};
  if (!d) {
    ::close(listing);
    fail("fdopendir", errno);
  }
  while (auto* ent = ::readdir(d.get())) {
    std::string name = ent->d_name;
    if (name == "." || name == "..")
      continue;
    // O_PATH|O_NOFOLLOW: a symlink is opened as itself, never its target.
    fd_guard entry{::openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC)};
    if (entry.fd < 0) {
      if (errno == ENOENT)
        continue; // removed meanwhile
      fail("open " + name, errno);
    }
    struct stat st;
    if (::fstat(entry.fd, &st) != 0)
      fail("stat " + name, errno);
    if (S_ISDIR(st.st_mode)) {
      if (depth >= max_depth)
        continue;
      fd_guard sub{::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
      struct stat sub_st;
      if (sub.fd < 0 || ::fstat(sub.fd, &sub_st) != 0 || sub_st.st_ino != st.st_ino ||
          sub_st.st_dev != st.st_dev)
        continue; // replaced meanwhile (e.g. by a symlink): not ours to follow
      if (!owned_by(sub_st, who) && ::fchown(sub.fd, who.uid, who.gid) != 0)
        fail("chown " + name, errno);
      hand_over_entries(sub.fd, who, depth + 1);
      continue;
    }
    // A file with another name elsewhere may be anyone's (a link a job made
    // to a file it could read): only files that live here alone change hands.
    if (st.st_nlink > 1 || owned_by(st, who))
      continue;
    if (::fchownat(entry.fd, "", who.uid, who.gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
      fail("chown " + name, errno);
  }
}

} // namespace

std::string octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::optional<job_identity> resolve_job_identity(const std::string& user, const std::string& group,
                                                 uid_t euid, gid_t egid) {
  if (user.empty()) {
    if (!group.empty())
      throw config_error("jobs.group", "needs jobs.user (the user jobs run as)");
    return std::nullopt;
  }
  auto pw = find_user(user);
  if (!pw)
    throw config_error("jobs.user", "no such user \"" + user + "\"");
  job_identity id;
  id.user = pw->name;
  id.uid = pw->uid;
  id.gid = pw->gid;
  id.home = pw->home;
  id.shell = pw->shell;
  if (!group.empty()) {
    auto gid = find_group(group);
    if (!gid)
      throw config_error("jobs.group", "no such group \"" + group + "\"");
    id.gid = *gid;
  }
  if (euid != 0) {
    // Without root troupe cannot switch: only its own user (and group) works.
    if (id.uid != euid)
      throw config_error("jobs.user", "troupe is not root (uid " + std::to_string(euid) +
                                          "), so jobs can only run as its own user, not \"" + user +
                                          "\"");
    if (id.gid != egid)
      throw config_error(group.empty() ? "jobs.user" : "jobs.group",
                         "troupe is not root, so jobs can only run with its own group (gid " +
                             std::to_string(egid) + "), not gid " + std::to_string(id.gid));
    return id;
  }
  id.groups = supplementary_groups(id.user, id.gid);
  id.switches = true;
  return id;
}

dir_access shared_dir_access(const std::optional<job_identity>& jobs) {
  dir_access a;
  if (jobs && jobs->switches && jobs->uid != 0) {
    a.mode = 0710;
    a.group = jobs->gid;
  }
  return a;
}

std::optional<mode_t> ensure_dir(const std::string& dir, const dir_access& access) {
  std::error_code ec;
  auto parent = fs::path{dir}.parent_path();
  if (!parent.empty())
    fs::create_directories(parent, ec);
  if (ec)
    fail("cannot create " + parent.string(), ec.value());
  // Created with its final mode: no moment with the umask's wider one.
  if (::mkdir(dir.c_str(), access.mode) != 0 && errno != EEXIST)
    fail("cannot create " + dir, errno);
  fd_guard fd{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (fd.fd < 0)
    fail("cannot open " + dir, errno);
  struct stat st;
  if (::fstat(fd.fd, &st) != 0)
    fail("cannot stat " + dir, errno);
  if (access.group && st.st_gid != *access.group && ::fchown(fd.fd, -1, *access.group) != 0)
    fail("cannot give " + dir + " to group " + std::to_string(*access.group), errno);
  auto had = static_cast<mode_t>(st.st_mode & 07777);
  if (had == access.mode)
    return std::nullopt;
  if (::fchmod(fd.fd, access.mode) != 0)
    fail("cannot change the mode of " + dir + " to " + octal(access.mode), errno);
  return had;
}

void create_workspace(const std::string& path, const jobs_config& cfg, std::error_code& ec) {
  ec.clear();
  if (::mkdir(path.c_str(), 0700) != 0) {
    ec = std::error_code{errno, std::generic_category()};
    return;
  }
  auto& who = cfg.identity;
  if (who && who->switches && ::chown(path.c_str(), who->uid, who->gid) != 0)
    ec = std::error_code{errno, std::generic_category()};
}

void hand_over_workspace(const std::string& path, const std::optional<job_identity>& jobs) {
  fd_guard root{::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (root.fd < 0)
    fail("workspace " + path, errno);
  struct stat st;
  if (::fstat(root.fd, &st) != 0)
    fail("workspace " + path, errno);
  if ((st.st_mode & 07777) != 0700 && ::fchmod(root.fd, 0700) != 0)
    fail("workspace " + path + ": chmod", errno);
  if (!jobs || !jobs->switches)
    return;
  if (!owned_by(st, *jobs) && ::fchown(root.fd, jobs->uid, jobs->gid) != 0)
    fail("workspace " + path + ": chown", errno);
  hand_over_entries(root.fd, *jobs, 0);
}

std::string blocked_on_the_way(const std::string& dir, const job_identity& who) {
  if (who.uid == 0)
    return {};
  std::error_code ec;
  auto path = fs::absolute(dir, ec).lexically_normal();
  fs::path prefix;
  for (auto& part : path) {
    prefix /= part;
    struct stat st;
    if (::stat(prefix.c_str(), &st) != 0)
      return prefix.string();
    bool in_group = st.st_gid == who.gid ||
                    std::find(who.groups.begin(), who.groups.end(), st.st_gid) != who.groups.end();
    mode_t bit = st.st_uid == who.uid ? S_IXUSR : in_group ? S_IXGRP : S_IXOTH;
    if ((st.st_mode & bit) == 0)
      return prefix.string();
  }
  return {};
}

} // namespace troupe::host
