#define CAF_SUITE archive
#include "support/dsl.hpp"

#include "actors/jobs/archive.hpp"
#include "actors/jobs/archive_memory.hpp"
#include "support/temp_dir.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

using namespace troupe;

namespace fs = std::filesystem;

namespace {

// What extraction flushed: this definition takes the place of libc's syncfs
// in the test binary and passes the call on.
std::atomic<int> syncfs_calls{0};
struct stat synced {};

} // namespace

extern "C" int syncfs(int fd) noexcept {
  using syncfs_fn = int (*)(int);
  static auto real = reinterpret_cast<syncfs_fn>(::dlsym(RTLD_NEXT, "syncfs"));
  ::fstat(fd, &synced);
  ++syncfs_calls;
  return real(fd);
}

namespace {

enum class format { zip, tar, tar_gz, tar_bz2, tar_xz, tar_zst };

/// Builds an archive in memory entry by entry, malicious ones included.
class archive_builder {
public:
  explicit archive_builder(format fmt) : ar_(archive_write_new()) {
    if (fmt == format::zip)
      archive_write_set_format_zip(ar_);
    else
      archive_write_set_format_pax_restricted(ar_);
    if (fmt == format::tar_gz)
      archive_write_add_filter_gzip(ar_);
    if (fmt == format::tar_bz2)
      archive_write_add_filter_bzip2(ar_);
    if (fmt == format::tar_xz)
      archive_write_add_filter_xz(ar_);
    if (fmt == format::tar_zst)
      archive_write_add_filter_zstd(ar_);
    archive_write_set_bytes_in_last_block(ar_, 1); // no padding after a compressed stream
    archive_write_open(ar_, &out_, nullptr, &append, nullptr);
  }

  ~archive_builder() { archive_write_free(ar_); }
  archive_builder(const archive_builder&) = delete;
  archive_builder& operator=(const archive_builder&) = delete;

  archive_builder& file(const std::string& path, const std::string& content, int mode = 0644) {
    auto e = entry(path, AE_IFREG, mode);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(content.size()));
    return add(e.get(), content);
  }

  /// A file whose header claims `size` bytes; the writer pads with zeros.
  archive_builder& declared(const std::string& path, int64_t size) {
    auto e = entry(path, AE_IFREG, 0644);
    archive_entry_set_size(e.get(), size);
    return add(e.get(), "");
  }

  /// A sparse file of `size` bytes with data only in its last four: "tail",
  /// or zeros past 16 MiB. The writer takes the whole logical stream, and
  /// writes the sparse map only once some of it arrives.
  archive_builder& sparse(const std::string& path, int64_t size) {
    auto e = entry(path, AE_IFREG, 0644);
    archive_entry_set_size(e.get(), size);
    archive_entry_sparse_add_entry(e.get(), size - 4, 4);
    if (size > (1 << 24))
      return add(e.get(), std::string(1, '\0'));
    return add(e.get(), std::string(static_cast<size_t>(size - 4), '\0') + "tail");
  }

  archive_builder& dir(const std::string& path, int mode = 0755) {
    auto e = entry(path, AE_IFDIR, mode);
    return add(e.get(), "");
  }

  archive_builder& symlink(const std::string& path, const std::string& target) {
    auto e = entry(path, AE_IFLNK, 0777);
    archive_entry_set_symlink(e.get(), target.c_str());
    return add(e.get(), "");
  }

  archive_builder& hardlink(const std::string& path, const std::string& target) {
    auto e = entry(path, AE_IFREG, 0644);
    archive_entry_set_hardlink(e.get(), target.c_str());
    return add(e.get(), "");
  }

  /// A FIFO, device or other non-file entry.
  archive_builder& special(const std::string& path, unsigned type) {
    auto e = entry(path, type, 0644);
    return add(e.get(), "");
  }

  std::string finish() {
    archive_write_close(ar_);
    return out_;
  }

private:
  using entry_ptr = std::unique_ptr<archive_entry, decltype(&archive_entry_free)>;

  static la_ssize_t append(archive*, void* out, const void* buf, size_t n) {
    static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  }

  static entry_ptr entry(const std::string& path, unsigned type, int mode) {
    entry_ptr e(archive_entry_new(), &archive_entry_free);
    archive_entry_set_pathname(e.get(), path.c_str());
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), static_cast<mode_t>(mode));
    return e;
  }

  archive_builder& add(archive_entry* e, const std::string& content) {
    if (archive_write_header(ar_, e) < ARCHIVE_WARN)
      CAF_FAIL("cannot write header: " << archive_error_string(ar_));
    if (!content.empty())
      archive_write_data(ar_, content.data(), content.size());
    return *this;
  }

  archive* ar_;
  std::string out_;
};

archive_builder tgz() {
  return archive_builder{format::tar_gz};
}

archive_builder zip() {
  return archive_builder{format::zip};
}

/// Rewrites every uncompressed-size field of a small zip so its headers lie.
void set_zip_sizes(std::string& zip, uint32_t size) {
  auto patch = [&](const char* sig, size_t field) {
    for (auto pos = zip.find(sig, 0, 4); pos != std::string::npos; pos = zip.find(sig, pos + 4, 4))
      std::memcpy(&zip[pos + field], &size, sizeof(size)); // zip is little-endian, like x86
  };
  patch("PK\3\4", 22);   // local file header
  patch("PK\7\x08", 12); // data descriptor
  patch("PK\1\2", 24);   // central directory
}

/// Bytes that do not compress.
std::string noise(size_t n) {
  std::string out(n, '\0');
  uint32_t x = 12345;
  for (auto& c : out) {
    x = x * 1103515245 + 12345;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

struct fixture {
  test::temp_dir parent;
  std::string dest = parent / "ws";

  fixture() { fs::create_directory(dest); }

  extract_stats extract(const std::string& data, const archive_limits& limits = {}) {
    return extract_archive(data, dest, limits);
  }

  /// The message an archive is rejected with, or "accepted".
  std::string rejection(const std::string& data, const archive_limits& limits = {}) {
    return rejection_at(dest, data, limits);
  }

  static std::string rejection_at(const std::string& where, const std::string& data,
                                  const archive_limits& limits = {}) {
    try {
      extract_archive(data, where, limits);
    } catch (const archive_error& e) {
      return e.what();
    }
    return "accepted";
  }

  static std::vector<std::string> names(const std::string& dir) {
    std::vector<std::string> out;
    for (auto& ent : fs::directory_iterator(dir))
      out.push_back(ent.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  /// dest is empty and nothing else appeared next to it.
  bool clean() const {
    return names(dest).empty() && names(parent.path()) == std::vector<std::string>{"ws"};
  }

  void empty_dest() {
    for (auto& ent : fs::directory_iterator(dest))
      fs::remove_all(ent.path());
  }

  std::string read(const std::string& rel) const {
    std::ifstream in(dest + "/" + rel, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  unsigned mode(const std::string& rel) const {
    struct stat st {};
    ::lstat((dest + "/" + rel).c_str(), &st);
    return st.st_mode & 07777;
  }

  std::string link_target(const std::string& rel) const {
    std::error_code ec;
    return fs::read_symlink(dest + "/" + rel, ec).string();
  }
};

/// A small project: nested dirs (one implied), an executable script, links.
std::string project(format fmt) {
  return archive_builder{fmt}
      .dir("proj/")
      .file("proj/src/main.c", "int main() { return 0; }\n")
      .file("proj/run.sh", "#!/bin/sh\necho hi\n", 0755)
      .dir("proj/lib/", 0700)
      .file("proj/empty", "")
      .symlink("proj/latest", "src/main.c")
      .symlink("proj/src/up", "../run.sh")
      .finish();
}

void check_project(const fixture& f) {
  CAF_CHECK_EQUAL(f.read("proj/src/main.c"), "int main() { return 0; }\n");
  CAF_CHECK_EQUAL(f.read("proj/run.sh"), "#!/bin/sh\necho hi\n");
  CAF_CHECK_EQUAL(f.read("proj/empty"), "");
  CAF_CHECK_EQUAL(f.mode("proj/run.sh"), 0755u);
  CAF_CHECK_EQUAL(f.mode("proj/src/main.c"), 0644u);
  CAF_CHECK_EQUAL(f.mode("proj"), 0755u);
  CAF_CHECK_EQUAL(f.mode("proj/src"), 0755u);
  CAF_CHECK_EQUAL(f.mode("proj/lib"), 0700u);
  CAF_CHECK_EQUAL(f.link_target("proj/latest"), "src/main.c");
  CAF_CHECK_EQUAL(f.link_target("proj/src/up"), "../run.sh");
  CAF_CHECK_EQUAL(f.read("proj/src/up"), "#!/bin/sh\necho hi\n");
}

constexpr uint64_t project_bytes = 25 + 18;

/// The standard output of a shell command, which must succeed.
std::string command_output(const std::string& cmd) {
  std::string out;
  auto* p = ::popen(cmd.c_str(), "r");
  CAF_REQUIRE(p != nullptr);
  char buf[65536];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0)
    out.append(buf, n);
  CAF_REQUIRE_EQUAL(::pclose(p), 0);
  return out;
}

/// A directory holding a small project to pack with the command line tools.
struct project_dir {
  test::temp_dir dir;
  std::string src = dir / "src";

  project_dir() {
    fs::create_directories(src + "/sub");
    std::ofstream(src + "/run.sh") << "#!/bin/sh\necho hi\n";
    std::ofstream(src + "/sub/data.bin", std::ios::binary) << noise(64 * 1024);
  }

  /// `tar cf - . | <compressor>`, as a user would pack it.
  std::string packed(const std::string& compressor) const {
    return command_output("tar cf - -C '" + src + "' . | " + compressor);
  }

  /// The tar stream cut in two, each half compressed on its own and the
  /// results concatenated (xz and zstd decoders read on across streams).
  std::string packed_in_two(const std::string& first, const std::string& second) const {
    auto tar = command_output("tar cf - -C '" + src + "' .");
    std::ofstream(dir / "a.tar", std::ios::binary) << tar.substr(0, tar.size() / 2);
    std::ofstream(dir / "b.tar", std::ios::binary) << tar.substr(tar.size() / 2);
    return command_output(first + " < '" + dir / "a.tar" + "'") +
           command_output(second + " < '" + dir / "b.tar" + "'");
  }
};

constexpr uint64_t MiB = 1ull << 20;

/// The message of the memory limit for `needed` and `allowed` bytes.
std::string over_memory(const std::string& what, const std::string& needed,
                        const std::string& allowed) {
  return what + " needs " + needed + " of memory to decode, more than the " + allowed + " allowed";
}

void put_le(std::string& s, size_t at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

/// A zip local file header for `name` with `method`, followed by `data`
/// (only the headers matter: the memory check runs before any decoding).
std::string zip_entry(const std::string& name, uint16_t method, const std::string& data,
                      uint16_t flags = 0) {
  std::string h(30, '\0');
  h.replace(0, 4, "PK\3\4");
  put_le(h, 4, 63, 2);
  put_le(h, 6, flags, 2);
  put_le(h, 8, method, 2);
  put_le(h, 18, (flags & 8) ? 0 : data.size(), 4);
  put_le(h, 22, 1000, 4);
  put_le(h, 26, name.size(), 2);
  return h + name + data;
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(archive_tests, fixture)

CAF_TEST(a zip project is extracted with its layout and modes) {
  auto stats = extract(project(format::zip));
  check_project(*this);
  CAF_CHECK_EQUAL(stats.entries, 7u);
  CAF_CHECK_EQUAL(stats.bytes, project_bytes);
}

CAF_TEST(a tar.gz project is extracted with its layout and modes) {
  auto stats = extract(project(format::tar_gz));
  check_project(*this);
  CAF_CHECK_EQUAL(stats.entries, 7u);
  CAF_CHECK_EQUAL(stats.bytes, project_bytes);
}

CAF_TEST(plain and other compressed tars are recognised by content) {
  for (auto fmt : {format::tar, format::tar_bz2, format::tar_xz, format::tar_zst}) {
    CAF_MESSAGE("format #" << static_cast<int>(fmt));
    extract(project(fmt));
    check_project(*this);
    empty_dest();
  }
}

CAF_TEST(a leading dot slash is accepted and a single top directory kept) {
  auto stats = extract(tgz().dir("./").dir("./top/").file("./top/a.txt", "a").finish());
  CAF_CHECK_EQUAL(names(dest), std::vector<std::string>{"top"});
  CAF_CHECK_EQUAL(read("top/a.txt"), "a");
  CAF_CHECK_EQUAL(stats.entries, 3u);
}

CAF_TEST(modes lose setuid setgid sticky and write bits for others) {
  extract(tgz()
              .file("suid", "x", 04777)
              .file("sgid", "x", 02711)
              .file("plain", "x", 0666)
              .dir("sticky/", 01777)
              .dir("readonly/", 0500)
              .dir("group/", 0750)
              .finish());
  CAF_CHECK_EQUAL(mode("suid"), 0755u);
  CAF_CHECK_EQUAL(mode("sgid"), 0755u);
  CAF_CHECK_EQUAL(mode("plain"), 0644u);
  CAF_CHECK_EQUAL(mode("sticky"), 0755u);
  CAF_CHECK_EQUAL(mode("readonly"), 0700u);
  CAF_CHECK_EQUAL(mode("group"), 0750u);
}

CAF_TEST(symlinks may climb up to the workspace root but not past it) {
  extract(tgz().dir("d/e/").symlink("d/e/root", "../..").symlink("d/e/sib", "../../d").finish());
  CAF_CHECK_EQUAL(link_target("d/e/root"), "../..");
  empty_dest();
  CAF_CHECK_EQUAL(rejection(tgz().dir("d/e/").symlink("d/e/out", "../../..").finish()),
                  "entry 'd/e/out': symlink target '../../..' points outside the workspace");
  CAF_CHECK(clean());
}

CAF_TEST(dot dot components are rejected in zip and tar) {
  CAF_CHECK_EQUAL(rejection(zip().file("ok.txt", "x").file("../evil", "x").finish()),
                  "entry '../evil': '..' components are not allowed");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().file("ok.txt", "x").file("a/../../evil", "x").finish()),
                  "entry 'a/../../evil': '..' components are not allowed");
  CAF_CHECK(clean());
}

CAF_TEST(absolute paths are rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().file("/abs/evil", "x").finish()),
                  "entry '/abs/evil': absolute paths are not allowed");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(zip().file("/abs", "x").finish()),
                  "entry '/abs': absolute paths are not allowed");
  CAF_CHECK(clean());
}

CAF_TEST(entries naming the workspace itself as a file are rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().file(".", "x").finish()), "entry '.': empty path");
  CAF_CHECK(clean());
}

CAF_TEST(absolute symlinks are rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().symlink("etc", "/etc").file("etc/passwd", "x").finish()),
                  "entry 'etc': symlink target '/etc' is absolute");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(zip().symlink("tmp", "/tmp").file("tmp/evil", "x").finish()),
                  "entry 'tmp': symlink target '/tmp' is absolute");
  CAF_CHECK(clean());
}

CAF_TEST(a symlink to the parent and a write through it are rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().symlink("a", "..").file("a/x", "x").finish()),
                  "entry 'a': symlink target '..' points outside the workspace");
  CAF_CHECK(clean());
}

CAF_TEST(symlink targets may not climb out of a name) {
  // sub/b is the root, so sub/b/.. would be the workspace's parent.
  CAF_CHECK_EQUAL(rejection(tgz().symlink("sub/b", "..").symlink("c", "sub/b/..").finish()),
                  "entry 'c': symlink target 'sub/b/..' has '..' after a name");
  CAF_CHECK(clean());
}

CAF_TEST(writing through an earlier symlink is rejected) {
  CAF_CHECK_EQUAL(
      rejection(tgz().dir("sub/").symlink("link", "sub").file("link/evil", "x").finish()),
      "entry 'link/evil': path passes through symlink 'link'");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(zip().dir("a/sub/").symlink("a/link", "sub").dir("a/link/d/").finish()),
                  "entry 'a/link/d/': path passes through symlink 'a/link'");
  CAF_CHECK(clean());
}

CAF_TEST(writing through a file is rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().file("f", "x").file("f/x", "x").finish()),
                  "entry 'f/x': path passes through 'f', which is not a directory");
  CAF_CHECK(clean());
}

CAF_TEST(nothing is overwritten) {
  CAF_CHECK_EQUAL(rejection(tgz().file("f", "1").file("f", "2").finish()),
                  "entry 'f': already exists");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().symlink("l", "x").file("l", "2").finish()),
                  "entry 'l': already exists");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().file("f", "1").dir("f/").finish()),
                  "entry 'f/': already exists and is not a directory");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().symlink("l", "x").dir("l/").finish()),
                  "entry 'l/': already exists as a symlink");
  CAF_CHECK(clean());
}

CAF_TEST(a repeated directory entry is harmless) {
  extract(tgz().file("d/a", "a").dir("d/", 0750).dir("d/").finish());
  CAF_CHECK_EQUAL(read("d/a"), "a");
  CAF_CHECK_EQUAL(mode("d"), 0755u);
}

CAF_TEST(hardlinks are rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().file("f", "x").hardlink("h", "f").finish()),
                  "entry 'h': hardlinks are not allowed");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().hardlink("h", "/etc/passwd").finish()),
                  "entry 'h': hardlinks are not allowed");
  CAF_CHECK(clean());
}

CAF_TEST(fifos and device files are rejected) {
  CAF_CHECK_EQUAL(rejection(tgz().file("ok", "x").special("pipe", AE_IFIFO).finish()),
                  "entry 'pipe': FIFOs are not allowed");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().special("null", AE_IFCHR).finish()),
                  "entry 'null': device files are not allowed");
  CAF_CHECK(clean());
  CAF_CHECK_EQUAL(rejection(tgz().special("sda", AE_IFBLK).finish()),
                  "entry 'sda': device files are not allowed");
  CAF_CHECK(clean());
}

CAF_TEST(a huge sparse file is rejected by its declared size) {
  CAF_CHECK_EQUAL(rejection(tgz().file("ok", "x").sparse("bomb", 1ll << 40).finish()),
                  "entry 'bomb': expands the archive past the limit of 2147483648 bytes");
  CAF_CHECK(clean());
}

CAF_TEST(holes of sparse files count toward the expanded size) {
  archive_limits limits;
  limits.max_expanded_bytes = 1 << 20;
  auto stats = extract(tgz().sparse("holes", 1 << 20).finish(), limits);
  CAF_CHECK_EQUAL(stats.bytes, 1u << 20);
  CAF_CHECK_EQUAL(fs::file_size(dest + "/holes"), 1u << 20);
  CAF_CHECK_EQUAL(read("holes").substr((1 << 20) - 4), "tail");
}

CAF_TEST(the expanded size is summed over all files) {
  archive_limits limits;
  limits.max_expanded_bytes = 1 << 20;
  auto data = tgz().declared("a", 600'000).declared("b", 600'000).finish();
  CAF_CHECK_EQUAL(rejection(data, limits),
                  "entry 'b': expands the archive past the limit of 1048576 bytes");
  CAF_CHECK(clean());
  limits.max_expanded_bytes = 1'200'000;
  CAF_CHECK_EQUAL(extract(data, limits).bytes, 1'200'000u);
}

CAF_TEST(a header understating the size is caught while writing) {
  auto data = zip().file("liar", std::string(300'000, '\0')).finish();
  set_zip_sizes(data, 10);
  archive_limits limits;
  limits.max_expanded_bytes = 100'000;
  CAF_CHECK_EQUAL(rejection(data, limits),
                  "entry 'liar': expands the archive past the limit of 100000 bytes");
  CAF_CHECK(clean());
  // Within the limit the lie still fails, as corrupt data.
  CAF_CHECK(starts_with(rejection(data), "entry 'liar': corrupt data: "));
  CAF_CHECK(clean());
}

CAF_TEST(too many entries are rejected) {
  archive_limits limits;
  limits.max_entries = 10;
  archive_builder ten{format::zip};
  for (int i = 0; i < 10; ++i)
    ten.file("f" + std::to_string(i), "x");
  auto data = ten.finish();
  CAF_CHECK_EQUAL(extract(data, limits).entries, 10u);
  empty_dest();
  archive_builder eleven{format::tar_gz};
  for (int i = 0; i < 11; ++i)
    eleven.file("f" + std::to_string(i), "x");
  CAF_CHECK_EQUAL(rejection(eleven.finish(), limits), "archive has more than 10 entries");
  CAF_CHECK(clean());
}

CAF_TEST(garbage and empty uploads are not archives) {
  auto garbage = rejection("this is not an archive, just some text\n");
  CAF_CHECK(starts_with(garbage, "not a zip or tar archive: "));
  CAF_CHECK(starts_with(rejection(""), "not a zip or tar archive: "));
  CAF_CHECK(starts_with(rejection(noise(100'000)), "not a zip or tar archive: "));
  CAF_CHECK(clean());
}

CAF_TEST(a gzip that holds no tar is not an archive) {
  // A raw file behind gzip: recognised as gzip, then no tar inside.
  std::string out;
  archive* ar = archive_write_new();
  archive_write_set_format_raw(ar);
  archive_write_add_filter_gzip(ar);
  archive_write_open(
      ar, &out, nullptr,
      [](archive*, void* o, const void* b, size_t n) -> la_ssize_t {
        static_cast<std::string*>(o)->append(static_cast<const char*>(b), n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr);
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(),
                                                                  &archive_entry_free);
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_write_header(ar, e.get());
  archive_write_data(ar, "plain text, no tar header\n", 26);
  archive_write_close(ar);
  archive_write_free(ar);
  CAF_CHECK(starts_with(rejection(out), "not a zip or tar archive: "));
  CAF_CHECK(clean());
}

CAF_TEST(a truncated archive is rejected and its partial output removed) {
  auto data = archive_builder{format::tar}.file("a", "x").file("big", noise(200'000)).finish();
  auto msg = rejection(data.substr(0, 100'000));
  CAF_MESSAGE(msg);
  CAF_CHECK(starts_with(msg, "entry 'big': corrupt data: "));
  CAF_CHECK(clean());
  auto gz = tgz().file("a", "x").file("big", noise(200'000)).finish();
  CAF_CHECK_NOT_EQUAL(rejection(gz.substr(0, gz.size() / 2)), "accepted");
  CAF_CHECK(clean());
}

CAF_TEST(a damaged header names the entry before it) {
  auto data = archive_builder{format::tar}.file("a", "x").file("b", "y").finish();
  data.replace(1024, 512, std::string(512, 'Z')); // b's header, after a's header and data
  CAF_CHECK(starts_with(rejection(data), "corrupt archive after entry 'a': "));
  CAF_CHECK(clean());
}

CAF_TEST(the upload size is checked before parsing) {
  archive_limits limits;
  limits.max_archive_bytes = 100;
  CAF_CHECK_EQUAL(rejection(std::string(101, 'x'), limits),
                  "archive is 101 bytes, over the limit of 100 bytes");
  CAF_CHECK(clean());
  auto valid = project(format::tar_gz);
  limits.max_archive_bytes = valid.size() - 1;
  CAF_CHECK(starts_with(rejection(valid, limits), "archive is "));
  CAF_CHECK(clean());
}

CAF_TEST(a workspace that is not empty is left alone) {
  std::ofstream(dest + "/keep") << "mine";
  CAF_CHECK_EQUAL(rejection(project(format::tar_gz)), "workspace '" + dest + "' is not empty");
  CAF_CHECK_EQUAL(read("keep"), "mine");
  CAF_CHECK_EQUAL(names(dest), std::vector<std::string>{"keep"});
}

CAF_TEST(a missing workspace is reported) {
  auto missing = parent / "missing";
  CAF_CHECK(starts_with(rejection_at(missing, project(format::tar_gz)),
                        "workspace '" + missing + "' cannot be opened: "));
}

// -- flushing -----------------------------------------------------------------

CAF_TEST(an extracted workspace is flushed to disk before extraction returns) {
  auto before = syncfs_calls.load();
  extract(project(format::tar_gz));
  CAF_CHECK_EQUAL(syncfs_calls.load(), before + 1);
  struct stat ws {};
  CAF_REQUIRE_EQUAL(::stat(dest.c_str(), &ws), 0);
  // The descriptor flushed was the workspace's own.
  CAF_CHECK_EQUAL(synced.st_dev, ws.st_dev);
  CAF_CHECK_EQUAL(synced.st_ino, ws.st_ino);
}

// -- decoder memory -----------------------------------------------------------

CAF_TEST(an xz archive asking for a dictionary over the limit is refused) {
  project_dir p;
  // hc3: the default match finder would first zero gigabytes of tables.
  auto big = p.packed("xz -T1 --lzma2=dict=1GiB,mf=hc3 -c");
  CAF_CHECK_EQUAL(rejection(big), over_memory("the xz dictionary", "1 GiB (1073741824 bytes)",
                                              "256 MiB (268435456 bytes)"));
  CAF_CHECK(clean());
  try {
    extract(big);
    CAF_FAIL("accepted");
  } catch (const archive_memory_error& e) {
    CAF_CHECK_EQUAL(e.needed, 1ull << 30);
    CAF_CHECK_EQUAL(e.allowed, 256 * MiB);
  }
  // The default preset (8 MiB) is fine, and refused once the limit is lower.
  auto preset = p.packed("xz -T1 -6 -c");
  archive_limits small;
  small.max_memory_bytes = 4 * MiB;
  CAF_CHECK_EQUAL(
      rejection(preset, small),
      over_memory("the xz dictionary", "8 MiB (8388608 bytes)", "4 MiB (4194304 bytes)"));
  CAF_CHECK(clean());
  extract(preset);
  CAF_CHECK_EQUAL(read("run.sh"), "#!/bin/sh\necho hi\n");
}

CAF_TEST(every block of an xz stream is checked) {
  project_dir p;
  auto xz = p.packed("xz -T1 --block-size=16KiB --lzma2=dict=1MiB -c");
  // The last block header (12 bytes: size, flags, LZMA2 id, 1 property byte
  // = 1 MiB, padding, CRC32) is rewritten to ask for 512 MiB; a larger
  // dictionary than the encoder used still decodes.
  const std::string header{"\x02\x00\x21\x01\x10\x00\x00\x00", 8};
  auto at = xz.rfind(header);
  CAF_REQUIRE(at != std::string::npos && at > 12);
  CAF_REQUIRE(xz.find(header) < at); // more than one block
  xz[at + 4] = 0x22;                 // 2 << (17 + 11) = 512 MiB
  auto crc = ::crc32(0, reinterpret_cast<const Bytef*>(xz.data() + at), 8);
  put_le(xz, at + 8, crc, 4);
  archive_limits limits;
  limits.max_memory_bytes = 511 * MiB;
  CAF_CHECK_EQUAL(
      rejection(xz, limits),
      over_memory("the xz dictionary", "512 MiB (536870912 bytes)", "511 MiB (535822336 bytes)"));
  CAF_CHECK(clean());
  // Within the limit the patched archive extracts: the check read it right.
  limits.max_memory_bytes = 512 * MiB;
  extract(xz, limits);
  CAF_CHECK_EQUAL(read("run.sh"), "#!/bin/sh\necho hi\n");
}

CAF_TEST(every stream of concatenated xz is checked) {
  project_dir p;
  archive_limits limits;
  limits.max_memory_bytes = 32 * MiB;
  auto last_big =
      p.packed_in_two("xz -T1 --lzma2=dict=1MiB -c", "xz -T1 --lzma2=dict=64MiB,mf=hc3 -c");
  CAF_CHECK_EQUAL(
      rejection(last_big, limits),
      over_memory("the xz dictionary", "64 MiB (67108864 bytes)", "32 MiB (33554432 bytes)"));
  auto first_big =
      p.packed_in_two("xz -T1 --lzma2=dict=64MiB,mf=hc3 -c", "xz -T1 --lzma2=dict=1MiB -c");
  CAF_CHECK(starts_with(rejection(first_big, limits), "the xz dictionary needs 64 MiB"));
  CAF_CHECK(clean());
  // Both halves decode into the one tar, with stream padding between them.
  auto padded = p.packed_in_two("xz -T1 -c", "xz -T1 -c");
  auto cut = padded.find(std::string{"\xFD"
                                     "7zXZ",
                                     5},
                         1);
  CAF_REQUIRE(cut != std::string::npos);
  padded.insert(cut, std::string(8, '\0'));
  extract(padded);
  CAF_CHECK(read("sub/data.bin") == noise(64 * 1024));
}

CAF_TEST(malformed xz headers are refused before decoding) {
  project_dir p;
  auto xz = p.packed("xz -T1 -c");
  auto no_footer = xz.substr(0, xz.size() - 1);
  CAF_CHECK_EQUAL(rejection(no_footer), "the xz data is malformed: no stream footer at its end");
  auto bad_index = xz;
  bad_index[bad_index.size() - 5] = '\x7f'; // backward size: an index larger than the stream
  CAF_CHECK_EQUAL(rejection(bad_index),
                  "the xz data is malformed: the footer declares an index larger than the stream");
  auto trailing = xz + "junk";
  CAF_CHECK(starts_with(rejection(trailing), "the xz data is malformed: "));
  CAF_CHECK(clean());
}

CAF_TEST(compression inside compression is refused) {
  project_dir p;
  // The inner stream's headers could not be checked before decoding it.
  CAF_CHECK_EQUAL(rejection(p.packed("xz -T1 -c | xz -T1 -c")),
                  "the archive is compressed more than once (xz inside xz); compress it once");
  CAF_CHECK(clean());
  // Only the filter detected is enabled: xz behind gzip is not unwrapped.
  auto inner = p.packed("xz -T1 --lzma2=dict=1GiB,mf=hc3 -c | gzip -c");
  CAF_CHECK(starts_with(rejection(inner), "not a zip or tar archive: "));
  CAF_CHECK(clean());
}

CAF_TEST(an lzma archive is extracted and its dictionary checked) {
  project_dir p;
  auto lzma = p.packed("lzma --lzma1=dict=64MiB,mf=hc3 -c");
  CAF_CHECK(detect_compression(lzma) == compression::lzma);
  archive_limits limits;
  limits.max_memory_bytes = 32 * MiB;
  CAF_CHECK_EQUAL(
      rejection(lzma, limits),
      over_memory("the lzma dictionary", "64 MiB (67108864 bytes)", "32 MiB (33554432 bytes)"));
  CAF_CHECK(clean());
  extract(lzma);
  CAF_CHECK(read("sub/data.bin") == noise(64 * 1024));
}

CAF_TEST(a zstd archive asking for a window over the limit is refused) {
  project_dir p;
  // Read from a pipe, the size is unknown: the frame keeps its 128 MiB window.
  auto zst = p.packed("zstd -q --long=27 -c");
  archive_limits limits;
  limits.max_memory_bytes = 64 * MiB;
  CAF_CHECK_EQUAL(
      rejection(zst, limits),
      over_memory("the zstd window", "128 MiB (134217728 bytes)", "64 MiB (67108864 bytes)"));
  CAF_CHECK(clean());
  extract(zst);
  CAF_CHECK_EQUAL(read("run.sh"), "#!/bin/sh\necho hi\n");
  empty_dest();
  // Every frame counts, skippable ones are stepped over.
  auto frames = p.packed_in_two("zstd -q -c", "zstd -q --long=27 -c");
  std::string skippable{"\x50\x2a\x4d\x18\x03\x00\x00\x00xyz", 11};
  CAF_CHECK(starts_with(rejection(skippable + frames, limits), "the zstd window needs 128 MiB"));
  CAF_CHECK(clean());
}

CAF_TEST(zip entries compressed with lzma ppmd or xz are checked by their headers) {
  std::string lzma_props{"\x09\x14\x05\x00\x5d", 5};
  std::string dict(4, '\0');
  put_le(dict, 0, 1ull << 30, 4);
  auto lzma = zip_entry("big.txt", 14, lzma_props + dict + "data");
  CAF_CHECK_EQUAL(rejection(lzma),
                  over_memory("zip entry 'big.txt' (its LZMA dictionary)",
                              "1 GiB (1073741824 bytes)", "256 MiB (268435456 bytes)"));
  // PPMd: order 6, a 256 MiB model.
  auto ppmd = zip_entry("m.txt", 98, std::string{"\xf5\x0f", 2} + "data");
  archive_limits limits;
  limits.max_memory_bytes = 128 * MiB;
  CAF_CHECK_EQUAL(rejection(ppmd, limits),
                  over_memory("zip entry 'm.txt' (its PPMd model)", "256 MiB (268435456 bytes)",
                              "128 MiB (134217728 bytes)"));
  // libarchive keeps only the low byte of the method: 0x15f reads as xz.
  auto xz_unsized = zip_entry("x.txt", 0x15f,
                              std::string{"\xFD"
                                          "7zXZ\0\0\x04",
                                          8} +
                                  "rest",
                              8);
  CAF_CHECK_EQUAL(rejection(xz_unsized),
                  "zip entry 'x.txt' is malformed: it is xz-compressed without stating its "
                  "compressed size in its local header, so its decoder memory cannot be checked");
  // Encrypted entries cannot be decoded at all: their bytes are not headers.
  CAF_CHECK_EQUAL(rejection(zip_entry("e.txt", 14, std::string(20, '\xff'), 1)),
                  "entry 'e.txt': corrupt data: Passphrase required for this entry");
  CAF_CHECK(clean());
  // What no decoder would start on is not an entry of that method: skipped.
  auto no_props = rejection(zip_entry("fake.txt", 14, std::string(20, '\0')));
  CAF_CHECK(!starts_with(no_props, "zip entry"));
  CAF_CHECK(clean());
  // A tar is no zip: a header-like run of bytes in one of its files is data.
  auto lookalike = zip_entry("inner.txt", 14, lzma_props + dict + "data");
  extract(archive_builder{format::tar}.file("blob.bin", lookalike).finish());
  CAF_CHECK(read("blob.bin") == lookalike);
  // A real zip (deflate, stored) has nothing to check.
  CAF_CHECK_EQUAL(decoder_memory(project(format::zip)).bytes, 0u);
}

CAF_TEST(gzip and bzip2 need no memory check) {
  CAF_CHECK(detect_compression(project(format::tar_gz)) == compression::gzip);
  CAF_CHECK(detect_compression(project(format::tar_bz2)) == compression::bzip2);
  CAF_CHECK(detect_compression(project(format::tar_xz)) == compression::xz);
  CAF_CHECK(detect_compression(project(format::tar_zst)) == compression::zstd);
  CAF_CHECK(detect_compression(project(format::tar)) == compression::none);
  CAF_CHECK(detect_compression(project(format::zip)) == compression::none);
  CAF_CHECK_EQUAL(decoder_memory(project(format::tar_gz)).bytes, 0u);
  // libarchive's own xz and zstd writers: an 8 MiB dictionary, a 2 MiB window
  // at most.
  CAF_CHECK_LESS_OR_EQUAL(decoder_memory(project(format::tar_xz)).bytes, 8 * MiB);
  CAF_CHECK_LESS_OR_EQUAL(decoder_memory(project(format::tar_zst)).bytes, 8 * MiB);
  CAF_CHECK_EQUAL(describe_bytes(300), "300 bytes");
  CAF_CHECK_EQUAL(describe_bytes(3 * 1024), "3 KiB (3072 bytes)");
}

CAF_TEST_FIXTURE_SCOPE_END()
