// An uploaded project archive, extracted with small limits into
// scratch/a/b/ws. Whatever the archive holds: nothing appears outside ws, a
// rejected archive leaves ws empty, and what an accepted one leaves follows
// the policy of actors/jobs/archive.hpp (modes, symlinks pointing inside ws, only
// files, directories and symlinks, limits kept).

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "actors/jobs/archive.hpp"
#include "fuzz_check.hpp"

namespace fs = std::filesystem;
using namespace troupe;

namespace {

const archive_limits limits{1u << 20, 64, 1u << 20};

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator{dir})
    out.push_back(e.path().filename().string());
  return out;
}

void expect_only(const fs::path& dir, const std::string& name) {
  auto names = names_in(dir);
  FUZZ_CHECK(names.size() == 1 && names[0] == name, "something was written into " + dir.string());
}

// `target`, read from a link `depth` directories below ws, stays inside ws.
void check_link(const fs::path& link, const std::string& target, size_t depth) {
  FUZZ_CHECK(!target.empty() && target[0] != '/', link.string() + " -> " + target);
  long level = static_cast<long>(depth);
  for (auto& comp : fs::path{target}) {
    if (comp == "..")
      --level;
    else if (comp != "." && !comp.empty())
      ++level;
    FUZZ_CHECK(level >= 0, link.string() + " -> " + target + " leads out of the workspace");
  }
}

void check_tree(const fs::path& ws) {
  for (auto it = fs::recursive_directory_iterator{ws}; it != fs::recursive_directory_iterator{};
       ++it) {
    struct stat st;
    FUZZ_CHECK(::lstat(it->path().c_str(), &st) == 0, it->path().string());
    auto mode = st.st_mode & 07777;
    auto depth = static_cast<size_t>(it.depth());
    if (S_ISREG(st.st_mode)) {
      FUZZ_CHECK(mode == 0644 || mode == 0755, it->path().string());
    } else if (S_ISDIR(st.st_mode)) {
      FUZZ_CHECK((mode & 07000) == 0 && (mode & 0700) == 0700, it->path().string());
    } else if (S_ISLNK(st.st_mode)) {
      check_link(it->path(), fs::read_symlink(it->path()).string(), depth);
    } else {
      FUZZ_CHECK(false, it->path().string() + " is neither file, directory nor symlink");
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fs::path top = fuzz::scratch().path();
  auto ws = top / "a" / "b" / "ws";
  fs::remove_all(top / "a");
  fs::create_directories(ws);
  bool accepted = true;
  extract_stats stats;
  try {
    stats = extract_archive(fuzz::as_text(data, size), ws.string(), limits);
  } catch (const archive_error&) {
    accepted = false;
  }
  expect_only(top, "a");
  expect_only(top / "a", "b");
  expect_only(top / "a" / "b", "ws");
  if (!accepted) {
    FUZZ_CHECK(fs::is_empty(ws), "a rejected archive left files in the workspace");
    return 0;
  }
  FUZZ_CHECK(stats.entries <= limits.max_entries, std::to_string(stats.entries));
  FUZZ_CHECK(stats.bytes <= limits.max_expanded_bytes, std::to_string(stats.bytes));
  check_tree(ws);
  return 0;
}
