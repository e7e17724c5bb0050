#include "actors/jobs/archive_memory.hpp"

#include <algorithm>
#include <functional>

#include "actors/jobs/archive.hpp"

namespace troupe {
namespace {

// -- bytes ----------------------------------------------------------------------

uint8_t byte_at(std::string_view s, size_t i) {
  return static_cast<uint8_t>(s[i]);
}

/// Little-endian unsigned integer of `n` bytes at `i`.
uint64_t le(std::string_view s, size_t i, size_t n) {
  uint64_t v = 0;
  for (size_t k = n; k > 0; --k)
    v = (v << 8) | byte_at(s, i + k - 1);
  return v;
}

uint32_t le32(std::string_view s, size_t i) {
  return static_cast<uint32_t>(le(s, i, 4));
}

/// A name from the archive made safe for a message.
std::string printable(std::string_view s) {
  constexpr size_t limit = 80;
  std::string out{s.substr(0, limit)};
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = '?';
  return s.size() > limit ? out + "..." : out;
}

/// Where in the upload a stream sits, for messages ("xz data", "zip entry 'a'").
struct stream_ref {
  std::string context;
  /// What needs the memory, e.g. "the xz dictionary".
  std::string what;

  [[noreturn]] void malformed(const std::string& reason) const {
    throw archive_error(context + " is malformed: " + reason);
  }
};

void take_max(memory_need& need, uint64_t bytes, const std::string& what) {
  if (bytes > need.bytes) {
    need.bytes = bytes;
    need.what = what;
  }
}

// -- xz -------------------------------------------------------------------------

const std::string_view xz_magic{"\xFD"
                                "7zXZ\0",
                                6};
constexpr size_t xz_header_bytes = 12; // stream header and footer alike
constexpr uint64_t xz_filter_lzma1 = 0x4000000000000001;
constexpr uint64_t xz_filter_lzma1ext = 0x4000000000000002;
constexpr uint64_t xz_filter_lzma2 = 0x21;

/// An xz variable-length integer at `pos` (moved past it), before `end`.
uint64_t read_vli(std::string_view s, size_t& pos, size_t end, const stream_ref& ref,
                  const char* field) {
  uint64_t v = 0;
  for (unsigned i = 0; i < 9; ++i) {
    if (pos >= end)
      ref.malformed(std::string{field} + " runs past its end");
    auto b = byte_at(s, pos++);
    v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0)
      return v;
  }
  ref.malformed(std::string{field} + " is longer than 9 bytes");
}

/// The dictionary an LZMA2 properties byte declares.
uint64_t lzma2_dictionary(uint8_t bits, const stream_ref& ref) {
  if (bits > 40)
    ref.malformed("LZMA2 dictionary size byte " + std::to_string(bits) + " is over 40");
  if (bits == 40)
    return 0xffffffffu;
  return static_cast<uint64_t>(2 | (bits & 1)) << (bits / 2 + 11);
}

/// The largest dictionary of the filters in the block header at `at`; the
/// header must end before `limit` (the stream's index).
uint64_t block_dictionary(std::string_view s, size_t at, size_t limit, const stream_ref& ref) {
  if (at >= limit || byte_at(s, at) == 0)
    ref.malformed("a block header is missing where the index places it");
  size_t size = (static_cast<size_t>(byte_at(s, at)) + 1) * 4;
  if (size > limit - at)
    ref.malformed("a block header runs into the index");
  auto flags = byte_at(s, at + 1);
  if ((flags & 0x3c) != 0)
    ref.malformed("a block header has reserved flags set");
  size_t end = at + size - 4; // before its CRC32
  size_t pos = at + 2;
  if ((flags & 0x40) != 0)
    read_vli(s, pos, end, ref, "a block's compressed size");
  if ((flags & 0x80) != 0)
    read_vli(s, pos, end, ref, "a block's uncompressed size");
  uint64_t dictionary = 0;
  for (unsigned i = 0; i <= (flags & 3u); ++i) {
    auto id = read_vli(s, pos, end, ref, "a filter id");
    auto props = read_vli(s, pos, end, ref, "a filter's properties size");
    if (props > end - pos)
      ref.malformed("a filter's properties run past the block header");
    if (id == xz_filter_lzma2) {
      if (props != 1)
        ref.malformed("LZMA2 properties are not 1 byte");
      dictionary = std::max(dictionary, lzma2_dictionary(byte_at(s, pos), ref));
    } else if (id == xz_filter_lzma1 || id == xz_filter_lzma1ext) {
      if (props != 5)
        ref.malformed("LZMA1 properties are not 5 bytes");
      dictionary = std::max<uint64_t>(dictionary, le32(s, pos + 1));
    }
    pos += props;
  }
  return dictionary;
}

/// Calls `fn` with the unpadded size of every block an index in
/// [begin, end) lists.
void for_each_block(std::string_view s, size_t begin, size_t end, const stream_ref& ref,
                    const std::function<void(uint64_t)>& fn) {
  if (begin >= end || byte_at(s, begin) != 0)
    ref.malformed("no index where the stream footer places it");
  size_t pos = begin + 1;
  auto count = read_vli(s, pos, end, ref, "the index");
  // Every record takes at least two bytes, so a false count ends early.
  for (uint64_t i = 0; i < count; ++i) {
    auto unpadded = read_vli(s, pos, end, ref, "the index");
    read_vli(s, pos, end, ref, "the index");
    fn(unpadded);
  }
}

/// One stream ending at `end` (its footer's end); returns where it begins.
size_t xz_stream(std::string_view s, size_t end, const stream_ref& ref, memory_need& need) {
  if (end < 2 * xz_header_bytes || s.substr(end - 2, 2) != "YZ")
    ref.malformed("no stream footer at its end");
  size_t footer = end - xz_header_bytes;
  uint64_t index_bytes = (static_cast<uint64_t>(le32(s, footer + 4)) + 1) * 4;
  if (index_bytes > footer - xz_header_bytes)
    ref.malformed("the footer declares an index larger than the stream");
  size_t index = footer - static_cast<size_t>(index_bytes);
  uint64_t blocks = 0;
  for_each_block(s, index, footer, ref, [&](uint64_t unpadded) {
    if (unpadded > index || blocks + ((unpadded + 3) & ~uint64_t{3}) > index - xz_header_bytes)
      ref.malformed("the index lists more block bytes than the stream holds");
    blocks += (unpadded + 3) & ~uint64_t{3};
  });
  size_t begin = index - static_cast<size_t>(blocks) - xz_header_bytes;
  if (s.substr(begin, xz_magic.size()) != xz_magic)
    ref.malformed("no stream header where its index says the stream begins");
  size_t block = begin + xz_header_bytes;
  for_each_block(s, index, footer, ref, [&](uint64_t unpadded) {
    take_max(need, block_dictionary(s, block, index, ref), ref.what);
    block += static_cast<size_t>((unpadded + 3) & ~uint64_t{3});
  });
  return begin;
}

/// Every stream of concatenated .xz data, from the last one back (each
/// stream's index, before its footer, is what locates its blocks).
void xz_need(std::string_view s, const stream_ref& ref, memory_need& need) {
  size_t end = s.size();
  for (;;) {
    // Stream padding: groups of four zero bytes after a stream.
    while (end >= 4 && le32(s, end - 4) == 0)
      end -= 4;
    if (end == 0)
      return;
    end = xz_stream(s, end, ref, need);
  }
}

// -- .lzma ----------------------------------------------------------------------

constexpr size_t lzma_header_bytes = 13;

/// libarchive's lzma bidder (archive_read_support_filter_xz.c): a properties
/// byte of at most 224 and a dictionary size the lzma tools write.
bool looks_like_lzma(std::string_view s) {
  if (s.size() < lzma_header_bytes + 1 || byte_at(s, 0) > (4 * 5 + 4) * 9 + 8)
    return false;
  int bits = byte_at(s, 0) == 0x5d || byte_at(s, 0) == 0x5e ? 8 : 0;
  if (le(s, 5, 8) == UINT64_MAX)
    bits += 64;
  auto dictionary = le32(s, 1);
  if (dictionary >= 0x1000 && dictionary <= 0x08000000 && (dictionary & (dictionary - 1)) == 0)
    return true;
  return dictionary >= 0x00300000 && dictionary <= 0x03f00000 && (dictionary & 0xfffff) == 0 &&
         bits == 8 + 64;
}

// -- zstd -----------------------------------------------------------------------

constexpr uint32_t zstd_magic = 0xfd2fb528;
constexpr uint32_t zstd_skippable_magic = 0x184d2a50;
constexpr uint32_t zstd_skippable_mask = 0xfffffff0;

bool is_skippable(uint32_t magic) {
  return (magic & zstd_skippable_mask) == zstd_skippable_magic;
}

/// Reads a frame header at `pos` (past the magic); returns its window size.
uint64_t zstd_window(std::string_view s, size_t& pos, size_t end, const stream_ref& ref,
                     bool& checksum) {
  if (pos >= end)
    ref.malformed("a frame header runs past its end");
  auto descriptor = byte_at(s, pos++);
  if ((descriptor & 0x08) != 0)
    ref.malformed("a frame header has its reserved bit set");
  bool single_segment = (descriptor & 0x20) != 0;
  checksum = (descriptor & 0x04) != 0;
  uint64_t window = 0;
  if (!single_segment) {
    if (pos >= end)
      ref.malformed("a frame header runs past its end");
    auto w = byte_at(s, pos++);
    uint64_t base = uint64_t{1} << (10 + (w >> 3));
    window = base + (base / 8) * (w & 7);
  }
  static constexpr size_t dictionary_id_bytes[] = {0, 1, 2, 4};
  static constexpr size_t content_size_bytes[] = {0, 2, 4, 8};
  auto fcs_bytes = content_size_bytes[descriptor >> 6];
  if (fcs_bytes == 0 && single_segment)
    fcs_bytes = 1;
  size_t header_rest = dictionary_id_bytes[descriptor & 3] + fcs_bytes;
  if (header_rest > end - pos)
    ref.malformed("a frame header runs past its end");
  pos += dictionary_id_bytes[descriptor & 3];
  if (single_segment) // the window is the whole content
    window = le(s, pos, fcs_bytes) + (fcs_bytes == 2 ? 256 : 0);
  pos += fcs_bytes;
  return window;
}

/// Moves `pos` past a frame's blocks and checksum.
void skip_zstd_blocks(std::string_view s, size_t& pos, size_t end, bool checksum,
                      const stream_ref& ref) {
  for (bool last = false; !last;) {
    if (end - pos < 3)
      ref.malformed("a block header runs past its end");
    auto header = static_cast<uint32_t>(le(s, pos, 3));
    pos += 3;
    last = (header & 1) != 0;
    auto type = (header >> 1) & 3;
    if (type == 3)
      ref.malformed("a block has the reserved type");
    size_t size = type == 1 ? 1 : header >> 3; // RLE blocks hold one byte
    if (size > end - pos)
      ref.malformed("a block runs past its end");
    pos += size;
  }
  if (checksum && end - pos < 4)
    ref.malformed("a frame checksum runs past its end");
  pos += checksum ? 4 : 0;
}

/// Every frame from `pos` on; decoding (libzstd) stops where no frame
/// follows, and so does this.
void zstd_need(std::string_view s, size_t pos, size_t end, const stream_ref& ref,
               memory_need& need) {
  for (bool first = true; end - pos >= 4; first = false) {
    auto magic = le32(s, pos);
    pos += 4;
    if (is_skippable(magic)) {
      if (end - pos < 4 || le32(s, pos) > end - pos - 4)
        ref.malformed("a skippable frame runs past its end");
      pos += 4 + le32(s, pos);
      continue;
    }
    if (magic != zstd_magic) {
      if (first)
        ref.malformed("no zstd frame at its start");
      return;
    }
    bool checksum = false;
    take_max(need, zstd_window(s, pos, end, ref, checksum), ref.what);
    skip_zstd_blocks(s, pos, end, checksum, ref);
  }
}

// -- zip ------------------------------------------------------------------------

constexpr size_t zip_local_header_bytes = 30;
enum zip_method : uint8_t { zip_lzma = 14, zip_zstd = 93, zip_xz = 95, zip_ppmd = 98 };

/// The compressed size a local header states, or 0 if it leaves it to a
/// data descriptor.
uint64_t zip_compressed_size(std::string_view s, size_t at, size_t extra, size_t extra_end) {
  if ((le(s, at + 6, 2) & 8) != 0)
    return 0;
  uint64_t size = le32(s, at + 18);
  if (size != 0xffffffffu)
    return size;
  // Zip64: the extra field 0x0001 holds the sizes the header could not.
  while (extra_end - extra >= 4) {
    auto id = le(s, extra, 2);
    auto len = static_cast<size_t>(le(s, extra + 2, 2));
    extra += 4;
    if (len > extra_end - extra)
      return 0;
    size_t skip = le32(s, at + 22) == 0xffffffffu ? 8 : 0; // the uncompressed size first
    if (id == 1 && len >= skip + 8)
      return le(s, extra + skip, 8);
    extra += len;
  }
  return 0;
}

/// One local file header at `at` whose method needs a sizeable decoder.
/// Matches the scan finds inside other entries' data are not headers: data
/// that no decoder would start on (libarchive refuses it first) is skipped,
/// so only a real entry can refuse the archive.
void zip_entry_need(std::string_view s, size_t at, memory_need& need) {
  auto name_len = static_cast<size_t>(le(s, at + 26, 2));
  auto extra_len = static_cast<size_t>(le(s, at + 28, 2));
  size_t extra = at + zip_local_header_bytes + name_len;
  size_t data = extra + extra_len;
  if (data > s.size())
    return; // truncated: libarchive stops here
  auto name = printable(s.substr(at + zip_local_header_bytes, name_len));
  stream_ref ref{"zip entry '" + name + "'", "zip entry '" + name + "'"};
  auto method = byte_at(s, at + 8);
  auto left = s.size() - data;
  if (method == zip_lzma) {
    // libarchive wants version bytes, then 5 bytes of properties.
    if (left >= 9 && byte_at(s, data + 2) == 5 && byte_at(s, data + 3) == 0)
      take_max(need, le32(s, data + 5), ref.what + " (its LZMA dictionary)");
    return;
  }
  if (method == zip_ppmd) {
    // libarchive refuses an order below 2 and a restore method above 2.
    auto params = left >= 2 ? le(s, data, 2) : 0;
    if ((params & 15) + 1 >= 2 && (params >> 12) <= 2)
      take_max(need, (((params >> 4) & 0xff) + 1) << 20, ref.what + " (its PPMd model)");
    return;
  }
  auto size = zip_compressed_size(s, at, extra, data);
  if (size > left)
    return;
  auto end = size == 0 ? s.size() : data + size;
  if (method == zip_zstd) {
    if (end - data >= 4 && (le32(s, data) == zstd_magic || is_skippable(le32(s, data)))) {
      ref.what += " (its zstd window)";
      zstd_need(s, data, end, ref, need);
    }
    return;
  }
  if (s.substr(data, xz_magic.size()) != xz_magic)
    return; // liblzma stops at once
  // Only the index at its end locates an xz stream's blocks.
  if (size == 0)
    ref.malformed("it is xz-compressed without stating its compressed size in its local "
                  "header, so its decoder memory cannot be checked");
  ref.what += " (its xz dictionary)";
  xz_need(s.substr(data, size), ref, need);
}

/// Whether libarchive may read `s` as a zip: its zip readers want a
/// signature at the start (streaming) or an end of central directory record
/// in the last 64 KiB (seeking).
bool may_be_zip(std::string_view s) {
  constexpr size_t eocd_search = 22 + 65535;
  auto tail = s.size() > eocd_search ? s.substr(s.size() - eocd_search) : s;
  return s.substr(0, 2) == "PK" ||
         tail.find(std::string_view{"PK\5\6", 4}) != std::string_view::npos;
}

/// Every local file header: libarchive reads the ones the central directory
/// points at, or all of them in order, and takes the method from there.
void zip_need(std::string_view s, memory_need& need) {
  if (!may_be_zip(s))
    return;
  const std::string_view signature{"PK\3\4", 4};
  for (auto at = s.find(signature); at != std::string_view::npos; at = s.find(signature, at + 1)) {
    if (s.size() - at < zip_local_header_bytes)
      return;
    auto encrypted = (le(s, at + 6, 2) & 1) != 0; // undecodable without a passphrase
    auto method = byte_at(s, at + 8);             // libarchive keeps the low byte only
    if (!encrypted &&
        (method == zip_lzma || method == zip_zstd || method == zip_xz || method == zip_ppmd))
      zip_entry_need(s, at, need);
  }
}

} // namespace

const char* to_string(compression c) {
  switch (c) {
  case compression::gzip:
    return "gzip";
  case compression::bzip2:
    return "bzip2";
  case compression::xz:
    return "xz";
  case compression::lzma:
    return "lzma";
  case compression::zstd:
    return "zstd";
  default:
    return "none";
  }
}

compression detect_compression(std::string_view s) {
  if (s.size() >= 3 && s.substr(0, 3) == "\x1f\x8b\x08")
    return compression::gzip;
  if (s.size() >= 4 && s.substr(0, 3) == "BZh" && s[3] >= '1' && s[3] <= '9')
    return compression::bzip2;
  if (s.substr(0, xz_magic.size()) == xz_magic)
    return compression::xz;
  if (s.size() >= 4 && (le32(s, 0) == zstd_magic || is_skippable(le32(s, 0))))
    return compression::zstd;
  if (looks_like_lzma(s))
    return compression::lzma;
  return compression::none;
}

memory_need decoder_memory(std::string_view data) {
  memory_need need;
  switch (detect_compression(data)) {
  case compression::xz:
    xz_need(data, {"the xz data", "the xz dictionary"}, need);
    break;
  case compression::lzma:
    take_max(need, le32(data, 1), "the lzma dictionary");
    break;
  case compression::zstd:
    zstd_need(data, 0, data.size(), {"the zstd data", "the zstd window"}, need);
    break;
  case compression::none:
    zip_need(data, need);
    break;
  default:
    break;
  }
  return need;
}

std::string describe_bytes(uint64_t n) {
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  std::string exact = std::to_string(n) + " bytes";
  int unit = -1;
  uint64_t v = n;
  while (v >= 1024 && v % 1024 == 0 && unit < 3) {
    v /= 1024;
    ++unit;
  }
  if (unit < 0)
    return exact;
  return std::to_string(v) + " " + units[unit] + " (" + exact + ")";
}

} // namespace troupe
