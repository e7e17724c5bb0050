#include "actors/jobs/archive.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "actors/jobs/archive_memory.hpp"

namespace troupe {
namespace {

/// Deeper paths are rejected: cleanup holds one descriptor per level.
constexpr size_t max_path_depth = 256;
constexpr size_t max_path_length = 4095;

/// Owns a file descriptor.
class unique_fd {
public:
  explicit unique_fd(int fd = -1) : fd_(fd) {}
  ~unique_fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

private:
  int fd_;
};

using path_parts = std::vector<std::string>;
using reader_ptr = std::unique_ptr<archive, decltype(&archive_read_free)>;

[[noreturn]] void reject(const std::string& entry, const std::string& reason) {
  throw archive_error("entry '" + entry + "': " + reason);
}

std::string errno_text() {
  return std::system_category().message(errno);
}

std::string reader_text(archive* ar) {
  const char* msg = archive_error_string(ar);
  return msg ? msg : "unknown error";
}

/// The non-empty components of a slash-separated path.
path_parts split(const std::string& path) {
  path_parts parts;
  size_t pos = 0;
  while (pos < path.size()) {
    auto slash = path.find('/', pos);
    if (slash == std::string::npos)
      slash = path.size();
    if (slash > pos)
      parts.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return parts;
}

/// The first `n` components joined, for messages.
std::string join(const path_parts& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i)
    out += (i ? "/" : "") + parts[i];
  return out;
}

/// The entry's path relative to dest, without `.` components.
path_parts normalise(const std::string& entry) {
  if (!entry.empty() && entry[0] == '/')
    reject(entry, "absolute paths are not allowed");
  if (entry.size() > max_path_length)
    reject(entry, "path is longer than " + std::to_string(max_path_length) + " bytes");
  path_parts parts;
  for (auto& comp : split(entry)) {
    if (comp == "..")
      reject(entry, "'..' components are not allowed");
    if (comp != ".")
      parts.push_back(std::move(comp));
  }
  if (parts.size() > max_path_depth)
    reject(entry, "path is deeper than " + std::to_string(max_path_depth) + " levels");
  return parts;
}

/// Rejects targets that could lead outside dest. `..` may only lead: after a
/// name it would climb out of wherever that name (possibly a link) went.
void check_link_target(const std::string& entry, const std::string& target, size_t link_depth) {
  if (target.empty())
    reject(entry, "symlink has an empty target");
  if (target[0] == '/')
    reject(entry, "symlink target '" + target + "' is absolute");
  size_t ups = 0;
  bool named = false;
  for (auto& comp : split(target)) {
    if (comp == ".")
      continue;
    if (comp != "..") {
      named = true;
      continue;
    }
    if (named)
      reject(entry, "symlink target '" + target + "' has '..' after a name");
    if (++ups > link_depth)
      reject(entry, "symlink target '" + target + "' points outside the workspace");
  }
}

/// Expanded bytes, counted as they are written.
struct byte_budget {
  uint64_t max;
  uint64_t used = 0;

  uint64_t left() const { return max - used; }

  void check(const std::string& entry, uint64_t n) const {
    if (n > left())
      reject(entry, "expands the archive past the limit of " + std::to_string(max) + " bytes");
  }

  void take(const std::string& entry, uint64_t n) {
    check(entry, n);
    used += n;
  }
};

/// Why `parts[0..i]` could not be opened as a directory.
std::string open_failure(int at, const path_parts& parts, size_t i) {
  auto err = errno_text();
  auto path = join(parts, i + 1);
  bool last = i + 1 == parts.size();
  struct stat st;
  if (::fstatat(at, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return "cannot open directory '" + path + "': " + err;
  if (S_ISLNK(st.st_mode))
    return last ? "already exists as a symlink" : "path passes through symlink '" + path + "'";
  if (!S_ISDIR(st.st_mode))
    return last ? "already exists and is not a directory"
                : "path passes through '" + path + "', which is not a directory";
  return "cannot open directory '" + path + "': " + err;
}

/// Opens directory `parts[i]` below `at`, creating it if missing. Never
/// follows a symlink.
unique_fd open_dir(int at, const std::string& entry, const path_parts& parts, size_t i) {
  const char* name = parts[i].c_str();
  bool created = ::mkdirat(at, name, 0700) == 0;
  if (!created && errno != EEXIST)
    reject(entry, "cannot create directory '" + join(parts, i + 1) + "': " + errno_text());
  unique_fd fd(::openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd)
    reject(entry, open_failure(at, parts, i));
  if (created && ::fchmod(fd.get(), 0755) != 0)
    reject(entry, "cannot set mode of '" + join(parts, i + 1) + "': " + errno_text());
  return fd;
}

/// The directory that will hold the entry's last component.
unique_fd open_parent(int root, const std::string& entry, const path_parts& parts) {
  unique_fd dir(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!dir)
    reject(entry, "cannot open workspace: " + errno_text());
  for (size_t i = 0; i + 1 < parts.size(); ++i)
    dir = open_dir(dir.get(), entry, parts, i);
  return dir;
}

void write_all(int fd, const char* buf, size_t size, uint64_t offset, const std::string& entry) {
  while (size > 0) {
    auto n = ::pwrite(fd, buf, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      reject(entry, "cannot write: " + errno_text());
    buf += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

/// Copies the entry's data into `fd`, counting holes as written.
void copy_data(archive* ar, archive_entry* e, int fd, const std::string& entry,
               byte_budget& budget) {
  uint64_t end = 0;
  for (;;) {
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int rc = archive_read_data_block(ar, &buf, &size, &offset);
    if (rc == ARCHIVE_EOF)
      break;
    if (rc != ARCHIVE_OK)
      reject(entry, "corrupt data: " + reader_text(ar));
    if (offset < 0)
      reject(entry, "corrupt data: negative offset");
    uint64_t block_end = static_cast<uint64_t>(offset) + size;
    if (block_end > end) {
      budget.take(entry, block_end - end);
      end = block_end;
    }
    write_all(fd, static_cast<const char*>(buf), size, static_cast<uint64_t>(offset), entry);
  }
  // A sparse file may end in a hole that no data block reaches.
  auto declared = archive_entry_size(e);
  if (archive_entry_size_is_set(e) && declared > 0 && static_cast<uint64_t>(declared) > end) {
    budget.take(entry, static_cast<uint64_t>(declared) - end);
    end = static_cast<uint64_t>(declared);
    if (::ftruncate(fd, static_cast<off_t>(end)) != 0)
      reject(entry, "cannot write: " + errno_text());
  }
}

void extract_file(archive* ar, archive_entry* e, int parent, const std::string& entry,
                  const path_parts& parts, byte_budget& budget) {
  // The header is only a hint for failing early; copy_data counts what is written.
  auto declared = archive_entry_size(e);
  if (archive_entry_size_is_set(e) && declared > 0)
    budget.check(entry, static_cast<uint64_t>(declared));
  mode_t mode = (archive_entry_perm(e) & 0111) ? 0755 : 0644;
  unique_fd fd(::openat(parent, parts.back().c_str(),
                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd)
    reject(entry, errno == EEXIST ? "already exists" : "cannot create: " + errno_text());
  if (::fchmod(fd.get(), mode) != 0)
    reject(entry, "cannot set mode: " + errno_text());
  copy_data(ar, e, fd.get(), entry, budget);
}

void extract_dir(archive_entry* e, int parent, const std::string& entry, const path_parts& parts) {
  auto fd = open_dir(parent, entry, parts, parts.size() - 1);
  mode_t mode = (archive_entry_perm(e) & 0755) | 0700;
  if (::fchmod(fd.get(), mode) != 0)
    reject(entry, "cannot set mode: " + errno_text());
}

void extract_symlink(archive_entry* e, int parent, const std::string& entry,
                     const path_parts& parts) {
  const char* raw = archive_entry_symlink(e);
  if (!raw)
    raw = archive_entry_symlink_utf8(e);
  std::string target = raw ? raw : "";
  check_link_target(entry, target, parts.size() - 1);
  if (::symlinkat(target.c_str(), parent, parts.back().c_str()) != 0)
    reject(entry, errno == EEXIST ? "already exists" : "cannot create symlink: " + errno_text());
}

/// Rejects every entry type but files, directories and symlinks.
void check_type(archive_entry* e, const std::string& entry) {
  if (archive_entry_hardlink(e) || archive_entry_hardlink_utf8(e))
    reject(entry, "hardlinks are not allowed");
  switch (archive_entry_filetype(e)) {
  case AE_IFREG:
  case AE_IFDIR:
  case AE_IFLNK:
    return;
  case AE_IFCHR:
  case AE_IFBLK:
    reject(entry, "device files are not allowed");
  case AE_IFIFO:
    reject(entry, "FIFOs are not allowed");
  case AE_IFSOCK:
    reject(entry, "sockets are not allowed");
  default:
    reject(entry, "unsupported entry type");
  }
}

/// The entry's path as stored in the archive.
std::string entry_path(archive_entry* e, uint64_t index) {
  const char* raw = archive_entry_pathname(e);
  if (!raw)
    raw = archive_entry_pathname_utf8(e);
  if (!raw)
    throw archive_error("entry #" + std::to_string(index) + ": path cannot be read");
  return raw;
}

void extract_entry(archive* ar, archive_entry* e, const std::string& entry, int root,
                   byte_budget& budget) {
  check_type(e, entry);
  auto parts = normalise(entry);
  auto type = archive_entry_filetype(e);
  if (parts.empty()) {
    if (type == AE_IFDIR)
      return; // `./` in tarballs made with `tar -C dir .`: dest itself
    reject(entry, "empty path");
  }
  auto parent = open_parent(root, entry, parts);
  if (type == AE_IFREG)
    extract_file(ar, e, parent.get(), entry, parts, budget);
  else if (type == AE_IFDIR)
    extract_dir(e, parent.get(), entry, parts);
  else
    extract_symlink(e, parent.get(), entry, parts);
}

/// Enables the one filter `data` was detected to need: libarchive would
/// otherwise pick any, and unwrap compression inside compression too.
void enable_filter(archive* ar, compression c) {
  switch (c) {
  case compression::gzip:
    archive_read_support_filter_gzip(ar);
    break;
  case compression::bzip2:
    archive_read_support_filter_bzip2(ar);
    break;
  case compression::xz:
    archive_read_support_filter_xz(ar);
    break;
  case compression::lzma:
    archive_read_support_filter_lzma(ar);
    break;
  case compression::zstd:
    archive_read_support_filter_zstd(ar);
    break;
  case compression::none:
    break;
  }
}

reader_ptr open_reader(std::string_view data) {
  reader_ptr ar(archive_read_new(), &archive_read_free);
  if (!ar)
    throw std::bad_alloc();
  auto c = detect_compression(data);
  enable_filter(ar.get(), c);
  archive_read_support_format_tar(ar.get());
  // A compressed zip would hide its entries' methods from the memory check.
  if (c == compression::none)
    archive_read_support_format_zip(ar.get());
  if (archive_read_open_memory(ar.get(), data.data(), data.size()) != ARCHIVE_OK)
    throw archive_error("not a zip or tar archive: " + reader_text(ar.get()));
  // One filter (the one checked) and the raw bytes below it. A second layer
  // of the same kind is only seen once it has been unwrapped.
  if (archive_filter_count(ar.get()) > 2)
    throw archive_error(std::string{"the archive is compressed more than once ("} + to_string(c) +
                        " inside " + to_string(c) + "); compress it once");
  return ar;
}

/// Refuses data whose decoder would need more memory than allowed.
void check_memory(std::string_view data, const archive_limits& limits) {
  auto need = decoder_memory(data);
  if (need.bytes <= limits.max_memory_bytes)
    return;
  throw archive_memory_error(need.what + " needs " + describe_bytes(need.bytes) +
                                 " of memory to decode, more than the " +
                                 describe_bytes(limits.max_memory_bytes) + " allowed",
                             need.bytes, limits.max_memory_bytes);
}

/// Flushes the file system holding `fd`: the job is acknowledged after this.
void flush(int fd, const std::string& dest) {
  if (::syncfs(fd) != 0)
    throw std::system_error(errno, std::system_category(), "flushing workspace '" + dest + "'");
}

extract_stats extract_into(std::string_view data, int root, const archive_limits& limits) {
  auto ar = open_reader(data);
  extract_stats stats;
  byte_budget budget{limits.max_expanded_bytes};
  std::string last;
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(ar.get(), &e);
    if (rc == ARCHIVE_EOF)
      break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      if (stats.entries == 0)
        throw archive_error("not a zip or tar archive: " + reader_text(ar.get()));
      throw archive_error("corrupt archive after entry '" + last + "': " + reader_text(ar.get()));
    }
    if (++stats.entries > limits.max_entries)
      throw archive_error("archive has more than " + std::to_string(limits.max_entries) +
                          " entries");
    last = entry_path(e, stats.entries);
    extract_entry(ar.get(), e, last, root, budget);
  }
  stats.bytes = budget.used;
  return stats;
}

/// Names in the directory, without `.` and `..`.
std::vector<std::string> list_dir(int dirfd) {
  std::vector<std::string> names;
  // A fresh open description: a dup would share (and move) the read offset.
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (!dir) {
    if (fd >= 0)
      ::close(fd);
    return names;
  }
  while (auto* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name != "." && name != "..")
      names.push_back(std::move(name));
  }
  ::closedir(dir);
  return names;
}

/// Empties a directory without following symlinks.
void remove_contents(int dirfd) {
  for (auto& name : list_dir(dirfd)) {
    if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno != EISDIR)
      continue;
    unique_fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub)
      remove_contents(sub.get());
    ::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR);
  }
}

unique_fd open_empty_dest(const std::string& dest) {
  unique_fd fd(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd)
    throw archive_error("workspace '" + dest + "' cannot be opened: " + errno_text());
  if (!list_dir(fd.get()).empty())
    throw archive_error("workspace '" + dest + "' is not empty");
  return fd;
}

} // namespace

extract_stats extract_archive(std::string_view data, const std::string& dest,
                              const archive_limits& limits) {
  if (data.size() > limits.max_archive_bytes)
    throw archive_error("archive is " + std::to_string(data.size()) + " bytes, over the limit of " +
                        std::to_string(limits.max_archive_bytes) + " bytes");
  check_memory(data, limits);
  auto root = open_empty_dest(dest);
  try {
    auto stats = extract_into(data, root.get(), limits);
    flush(root.get(), dest);
    return stats;
  } catch (...) {
    remove_contents(root.get());
    throw;
  }
}

} // namespace troupe
