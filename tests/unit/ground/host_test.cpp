#define CAF_SUITE host
#include "support/dsl.hpp"

#include <algorithm>
#include <fstream>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ground/host.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;

// These tests change owners: they run as root, as the suites do here.

namespace {

struct fixture {
  test::temp_dir dir;

  fixture() { CAF_REQUIRE_EQUAL(::geteuid(), 0u); }

  static struct stat lstat_of(const std::string& path) {
    struct stat st {};
    CAF_REQUIRE_EQUAL(::lstat(path.c_str(), &st), 0);
    return st;
  }

  static mode_t mode_of(const std::string& path) { return lstat_of(path).st_mode & 07777; }

  static void write(const std::string& path, const std::string& text) {
    std::ofstream{path} << text;
  }

  /// nobody, resolved as a root troupe would.
  static job_identity nobody() {
    auto id = host::resolve_job_identity("nobody", "", 0, 0);
    CAF_REQUIRE(id.has_value());
    return *id;
  }

  std::string config_error_of(const std::string& user, const std::string& group, uid_t euid,
                              gid_t egid) {
    try {
      host::resolve_job_identity(user, group, euid, egid);
    } catch (const config_error& e) {
      return e.what();
    }
    return "";
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(host_tests, fixture)

CAF_TEST(a root troupe resolves jobs user with its passwd entry and groups) {
  auto id = nobody();
  auto* pw = ::getpwnam("nobody");
  CAF_REQUIRE(pw != nullptr);
  CAF_CHECK_EQUAL(id.user, "nobody");
  CAF_CHECK_EQUAL(id.uid, pw->pw_uid);
  CAF_CHECK_EQUAL(id.gid, pw->pw_gid);
  CAF_CHECK_EQUAL(id.home, std::string{pw->pw_dir});
  CAF_CHECK_EQUAL(id.shell, std::string{pw->pw_shell});
  CAF_CHECK(id.switches);
  CAF_CHECK(std::find(id.groups.begin(), id.groups.end(), pw->pw_gid) != id.groups.end());
  // A number works where no name matches; jobs.group replaces the primary group.
  auto numeric = host::resolve_job_identity(std::to_string(pw->pw_uid), "root", 0, 0);
  CAF_REQUIRE(numeric.has_value());
  CAF_CHECK_EQUAL(numeric->user, "nobody");
  CAF_CHECK_EQUAL(numeric->gid, 0u);
  CAF_CHECK(!host::resolve_job_identity("", "", 0, 0).has_value());
}

CAF_TEST(unknown users and groups are config errors naming the key) {
  CAF_CHECK_EQUAL(config_error_of("no-such-user-here", "", 0, 0),
                  "config error: jobs.user: no such user \"no-such-user-here\"");
  CAF_CHECK_EQUAL(config_error_of("nobody", "no-such-group-here", 0, 0),
                  "config error: jobs.group: no such group \"no-such-group-here\"");
  CAF_CHECK_EQUAL(config_error_of("", "nogroup", 0, 0),
                  "config error: jobs.group: needs jobs.user (the user jobs run as)");
}

CAF_TEST(without root only troupe s own user and group are accepted) {
  auto* pw = ::getpwnam("nobody");
  CAF_REQUIRE(pw != nullptr);
  auto own = host::resolve_job_identity("nobody", "", pw->pw_uid, pw->pw_gid);
  CAF_REQUIRE(own.has_value());
  CAF_CHECK(!own->switches);
  CAF_CHECK(own->groups.empty());
  auto err = config_error_of("root", "", pw->pw_uid, pw->pw_gid);
  CAF_CHECK(err.find("config error: jobs.user: troupe is not root") == 0);
  err = config_error_of("nobody", "root", pw->pw_uid, pw->pw_gid);
  CAF_CHECK(err.find("config error: jobs.group: troupe is not root") == 0);
}

CAF_TEST(shared dirs are 0700 or with another jobs user 0710 for its group) {
  CAF_CHECK_EQUAL(host::shared_dir_access(std::nullopt).mode, 0700u);
  CAF_CHECK(!host::shared_dir_access(std::nullopt).group);
  auto a = host::shared_dir_access(nobody());
  CAF_CHECK_EQUAL(a.mode, 0710u);
  CAF_CHECK_EQUAL(a.group.value_or(0), nobody().gid);
}

CAF_TEST(ensure_dir creates with the mode and tightens an existing dir) {
  auto fresh = dir / "a/b/data";
  CAF_CHECK(!host::ensure_dir(fresh, {0700, std::nullopt}).has_value());
  CAF_CHECK_EQUAL(mode_of(fresh), 0700u);
  auto loose = dir / "loose";
  CAF_REQUIRE_EQUAL(::mkdir(loose.c_str(), 0777), 0);
  CAF_REQUIRE_EQUAL(::chmod(loose.c_str(), 0755), 0);
  auto had = host::ensure_dir(loose, {0700, std::nullopt});
  CAF_CHECK_EQUAL(had.value_or(0), 0755u);
  CAF_CHECK_EQUAL(mode_of(loose), 0700u);
  auto gid = nobody().gid;
  had = host::ensure_dir(loose, {0710, gid});
  CAF_CHECK_EQUAL(had.value_or(0), 0700u);
  CAF_CHECK_EQUAL(mode_of(loose), 0710u);
  CAF_CHECK_EQUAL(lstat_of(loose).st_gid, gid);
  CAF_CHECK_EQUAL(host::octal(0710), "0710");
}

CAF_TEST(create_workspace makes a 0700 dir owned by the jobs user) {
  jobs_config cfg;
  std::error_code ec;
  host::create_workspace(dir / "ws-own", cfg, ec);
  CAF_CHECK(!ec);
  CAF_CHECK_EQUAL(mode_of(dir / "ws-own"), 0700u);
  CAF_CHECK_EQUAL(lstat_of(dir / "ws-own").st_uid, 0u);
  cfg.identity = nobody();
  host::create_workspace(dir / "ws-nobody", cfg, ec);
  CAF_CHECK(!ec);
  CAF_CHECK_EQUAL(mode_of(dir / "ws-nobody"), 0700u);
  CAF_CHECK_EQUAL(lstat_of(dir / "ws-nobody").st_uid, cfg.identity->uid);
  CAF_CHECK_EQUAL(lstat_of(dir / "ws-nobody").st_gid, cfg.identity->gid);
  host::create_workspace(dir / "ws-nobody", cfg, ec);
  CAF_CHECK_EQUAL(ec.value(), EEXIST);
}

CAF_TEST(hand_over gives the workspace to the user but nothing outside it) {
  auto ws = dir / "ws";
  CAF_REQUIRE_EQUAL(::mkdir(ws.c_str(), 0755), 0);
  CAF_REQUIRE_EQUAL(::mkdir((ws + "/sub").c_str(), 0755), 0);
  write(ws + "/file", "x");
  write(ws + "/sub/deep", "y");
  auto outside = dir / "outside";
  write(outside, "secret");
  // What a job could plant: a link out, and a second name of a file it may read.
  CAF_REQUIRE_EQUAL(::symlink(outside.c_str(), (ws + "/link").c_str()), 0);
  CAF_REQUIRE_EQUAL(::link(outside.c_str(), (ws + "/hard").c_str()), 0);
  auto who = nobody();
  host::hand_over_workspace(ws, who);
  CAF_CHECK_EQUAL(mode_of(ws), 0700u);
  for (auto path : {ws, ws + "/sub", ws + "/file", ws + "/sub/deep", ws + "/link"}) {
    auto st = lstat_of(path);
    CAF_CHECK_EQUAL(st.st_uid, who.uid);
    CAF_CHECK_EQUAL(st.st_gid, who.gid);
  }
  CAF_CHECK_EQUAL(lstat_of(outside).st_uid, 0u);
  CAF_CHECK_EQUAL(lstat_of(outside).st_gid, 0u);
  // Without another user only the mode changes.
  auto own = dir / "own";
  CAF_REQUIRE_EQUAL(::mkdir(own.c_str(), 0755), 0);
  write(own + "/file", "x");
  host::hand_over_workspace(own, std::nullopt);
  CAF_CHECK_EQUAL(mode_of(own), 0700u);
  CAF_CHECK_EQUAL(lstat_of(own + "/file").st_uid, 0u);
}

CAF_TEST(hand_over refuses a workspace that is a symlink) {
  auto target = dir / "target";
  CAF_REQUIRE_EQUAL(::mkdir(target.c_str(), 0755), 0);
  CAF_REQUIRE_EQUAL(::symlink(target.c_str(), (dir / "ws").c_str()), 0);
  bool refused = false;
  try {
    host::hand_over_workspace(dir / "ws", nobody());
  } catch (const std::system_error&) {
    refused = true;
  }
  CAF_CHECK(refused);
  CAF_CHECK_EQUAL(lstat_of(target).st_uid, 0u);
  CAF_CHECK_EQUAL(mode_of(target), 0755u);
}

CAF_TEST(blocked_on_the_way names the first dir the user cannot search) {
  auto closed = dir / "closed";
  CAF_REQUIRE_EQUAL(::mkdir(closed.c_str(), 0700), 0);
  CAF_REQUIRE_EQUAL(::mkdir((closed + "/data").c_str(), 0700), 0);
  // The temp dir itself is 0700 (mkdtemp): open it for the walk.
  CAF_REQUIRE_EQUAL(::chmod(dir.path().c_str(), 0711), 0);
  auto who = nobody();
  CAF_CHECK_EQUAL(host::blocked_on_the_way(closed + "/data", who), closed);
  CAF_REQUIRE_EQUAL(::chmod(closed.c_str(), 0710), 0);
  CAF_REQUIRE_EQUAL(::chown(closed.c_str(), 0, who.gid), 0);
  CAF_CHECK_EQUAL(host::blocked_on_the_way(closed + "/data", who), closed + "/data");
  CAF_REQUIRE_EQUAL(::chown((closed + "/data").c_str(), who.uid, 0), 0);
  CAF_CHECK_EQUAL(host::blocked_on_the_way(closed + "/data", who), "");
}

CAF_TEST_FIXTURE_SCOPE_END()
