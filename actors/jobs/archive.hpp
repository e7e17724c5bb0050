#pragma once

// Safe extraction of an uploaded project archive into a job workspace. Files
// are written by hand (openat walks with O_NOFOLLOW, O_EXCL creates), never
// through libarchive's archive_write_disk, so every check is enforced here.
//
// Policy, strict by design:
// - accepted: regular files, directories and symlinks; anything else
//   (hardlinks of any kind, devices, FIFOs, sockets) rejects the archive;
// - paths: `.` components (a leading `./`) are dropped, and a `./` directory
//   entry stands for dest itself; absolute paths, `..` components, paths over
//   4095 bytes or 256 levels are rejected; nothing is ever overwritten; no
//   entry may pass through a symlink or a file created by an earlier entry;
// - symlink targets must be relative, and `..` may only appear as leading
//   components, no further up than the link's own directory. Climbing then
//   happens only through real directories, so no chain of links can lead out;
// - modes: files get 0644, or 0755 when any executable bit is set;
//   directories keep their bits masked with 0755 plus 0700 for the owner (so
//   the workspace can always be cleaned up); never setuid/setgid/sticky, no
//   ownership changes;
// - memory: decoders are checked against a limit before anything is decoded
//   (actors/jobs/archive_memory.hpp); only the one compression filter detected is
//   enabled, and compression inside compression (xz in xz) is refused, so no
//   header escapes that check.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace troupe {

/// Bounds on an upload and on what it may expand to.
struct archive_limits {
  uint64_t max_archive_bytes = 256ull << 20; ///< compressed upload size
  uint64_t max_entries = 100'000;
  uint64_t max_expanded_bytes = 2ull << 30; ///< sum of regular file sizes written, holes included
  /// Most memory one decoder may need (xz/lzma dictionary, zstd window, PPMd
  /// model), as the headers declare it.
  uint64_t max_memory_bytes = 256ull << 20;
};

/// A rejected archive; the message names the entry and the reason.
struct archive_error : std::runtime_error {
  using runtime_error::runtime_error;
};

/// An archive whose decoder would need more than archive_limits::max_memory_bytes.
struct archive_memory_error : archive_error {
  archive_memory_error(const std::string& message, uint64_t needed, uint64_t allowed)
      : archive_error(message), needed(needed), allowed(allowed) {}
  uint64_t needed;
  uint64_t allowed;
};

/// What an extraction produced.
struct extract_stats {
  uint64_t entries = 0; ///< archive entries processed
  uint64_t bytes = 0;   ///< bytes of regular files written
};

/// Extracts `data`, a zip or a tar (plain, gzip, bzip2, xz, lzma or zstd;
/// detected from content), into `dest`, which must exist and be empty, then
/// flushes dest's file system (syncfs), so that what was extracted survives a
/// crash once this returns. On rejection throws archive_error (or
/// archive_memory_error) and leaves `dest` empty (but in place); a `dest`
/// that is missing or not empty is reported without touching it. A failed
/// flush throws std::system_error.
extract_stats extract_archive(std::string_view data, const std::string& dest,
                              const archive_limits& limits);

} // namespace troupe
