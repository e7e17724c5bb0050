#pragma once

// How much memory decoding an upload will take, read from the headers of its
// compressed streams before anything is decoded. libarchive gives liblzma no
// memory limit (UINT64_MAX), so a few hundred bytes of xz can ask for a
// 1.5 GiB dictionary; the headers say so up front:
// - xz: every block header names its LZMA2 dictionary (blocks are found
//   through each stream's index, read backwards from its footer);
// - .lzma: the 13-byte header holds the dictionary size;
// - zstd: every frame header holds its window size;
// - zip entries compressed with LZMA (14), zstd (93), xz (95) or PPMd (98):
//   their own headers, as above (PPMd: the model size).
// gzip, bzip2 and deflate decoders need less than 4 MiB whatever the input.

#include <cstdint>
#include <string>
#include <string_view>

namespace troupe {

/// The outer compression of an upload.
enum class compression : uint8_t { none, gzip, bzip2, xz, lzma, zstd };

/// "none", "gzip", "bzip2", "xz", "lzma", "zstd".
const char* to_string(compression c);

/// Detected from the first bytes by the rules of libarchive's filter bidders,
/// so that the reader enables only the filter this check looked at.
compression detect_compression(std::string_view data);

/// The most memory one decoder of an upload needs.
struct memory_need {
  uint64_t bytes = 0;
  /// What needs it, for messages: "the xz dictionary", "zip entry 'a' (its
  /// PPMd model)"; empty when nothing does.
  std::string what;
};

/// Reads the headers of every compressed stream in `data` (nothing is
/// decoded). Throws archive_error (actors/jobs/archive.hpp) naming the stream
/// when a header needed for the answer is malformed or cannot be located.
memory_need decoder_memory(std::string_view data);

/// "1 GiB (1073741824 bytes)", "300 bytes": sizes in messages.
std::string describe_bytes(uint64_t n);

} // namespace troupe
