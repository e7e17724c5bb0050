#define CAF_SUITE e2e_host

#include "support/dsl.hpp"

#include "support/e2e.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

// troupe and its host: what jobs inherit, who they run as, which files and
// descriptors they can reach, and the daemon's own hardening. These tests
// run as root (jobs switch to `nobody`).

using namespace troupe::e2e;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const header_list json_type{{"Content-Type", "application/json"}};

/// What a finished job printed, and its record.
struct job_run {
  std::string id;
  json info;
  std::vector<std::string> lines;
};

/// Submits `spec`, follows its stream from the beginning to `complete`.
job_run run_job(uint16_t port, const json& spec, const header_list& headers = json_type,
                const std::string& body = {}) {
  auto res = request(port, "POST", "/jobs", headers, body.empty() ? spec.dump() : body);
  if (res.status != 201)
    CAF_MESSAGE("POST /jobs ->\n" << res.to_string());
  CAF_REQUIRE_EQUAL(res.status, 201);
  job_run run;
  run.id = json_field(res, "/job_id");
  auto stream = open_sse(port, "/jobs/" + run.id + "/stream?from_beginning=true");
  CAF_REQUIRE_EQUAL(stream.status(), 200);
  bool complete = false;
  while (auto ev = stream.next(30s)) {
    if (ev->type == "log")
      run.lines.push_back(json_field(ev->json(), "/line"));
    if (ev->type == "complete") {
      complete = true;
      break;
    }
  }
  CAF_REQUIRE(complete);
  run.info = get(port, "/jobs/" + run.id).json();
  return run;
}

std::string joined(const std::vector<std::string>& xs) {
  std::string out;
  for (auto& x : xs)
    out += (out.empty() ? "" : " | ") + x;
  return out;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0)
    return 01000000; // shows as a mismatch, never a real mode
  return st.st_mode & 07777;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  CAF_REQUIRE_EQUAL(::lstat(path.c_str(), &st), 0);
  return st;
}

struct passwd nobody() {
  auto* pw = ::getpwnam("nobody");
  CAF_REQUIRE(pw != nullptr);
  return *pw;
}

/// A daemon on `data_dir` with extra environment.
daemon_options on_data_dir(const std::string& data_dir, environment env = {}) {
  daemon_options opts;
  opts.data_dir = data_dir;
  opts.env = std::move(env);
  return opts;
}

/// True if a log line at or after `from` matches `re`; waits for the node's
/// "started" line first, so a missing line is known to be missing.
bool logged(e2e::daemon& node, const std::string& re) {
  CAF_REQUIRE(node.wait_for_line(std::regex{"node .* started"}).has_value());
  for (auto& line : node.output())
    if (std::regex_search(line, std::regex{re}))
      return true;
  return false;
}

/// `ls /proc/self/fd` in a job, as one line: ls's own listing takes the
/// lowest free number, so "0 1 2 3" means nothing but stdio was inherited.
const std::string list_fds = "ls /proc/self/fd | tr '\\n' ' '";

} // namespace

CAF_TEST(jobs get a clean environment plus the names inherit_env matches) {
  e2e::daemon node{on_data_dir({}, {{"SECRET_TOKEN_X", "hunter2"},
                                    {"LOKI_PASSWORD", "loki-pw"},
                                    {"REDIS_URL", "redis://:pw@127.0.0.1"},
                                    {"KEEP_ME", "kept"},
                                    {"APP_ONE", "1"},
                                    {"APP_TWO", "2"},
                                    {"OTHER_APP", "no"},
                                    {"LANG", "C.UTF-8"},
                                    {"LC_ALL", "C"},
                                    {"TZ", "UTC"},
                                    {"TROUPE_JOBS__INHERIT_ENV", "KEEP_ME,APP_*"}})};
  auto run = run_job(node.port(),
                     {{"command", "env | cut -d= -f1 | sort"}, {"env", {{"FROM_SPEC", "yes"}}}});
  std::set<std::string> names(run.lines.begin(), run.lines.end());
  for (auto want :
       {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "KEEP_ME", "APP_ONE", "APP_TWO", "FROM_SPEC",
        "TROUPE_JOB_ID", "TROUPE_JOB_ATTEMPT", "TROUPE_NODE", "TROUPE_REQUEST_ID"})
    if (!names.count(want))
      CAF_FAIL("the job lacks " << want << "; it has: " << joined(run.lines));
  // Nothing else of the daemon's environment, whatever the shell adds itself.
  std::set<std::string> allowed{"PATH",
                                "HOME",
                                "LANG",
                                "LC_ALL",
                                "TZ",
                                "KEEP_ME",
                                "APP_ONE",
                                "APP_TWO",
                                "FROM_SPEC",
                                "TROUPE_JOB_ID",
                                "TROUPE_JOB_ATTEMPT",
                                "TROUPE_NODE",
                                "TROUPE_REQUEST_ID",
                                "PWD",
                                "SHLVL",
                                "OLDPWD",
                                "_"};
  for (auto& name : names)
    if (!allowed.count(name))
      CAF_FAIL("the job inherited " << name << "; it has: " << joined(run.lines));
  CAF_CHECK(!names.count("SECRET_TOKEN_X"));
  CAF_CHECK(!names.count("LOKI_PASSWORD"));
  CAF_CHECK(!names.count("TROUPE_JOBS__INHERIT_ENV"));
}

CAF_TEST(the data dir the store and workspaces are troupe s alone) {
  scratch_dir data{"troupe-e2e-data"};
  CAF_REQUIRE_EQUAL(::chmod(data.path().c_str(), 0755), 0);
  std::string id;
  {
    e2e::daemon node{on_data_dir(data.path())};
    // An existing looser data dir is tightened, and said so.
    CAF_CHECK(node.wait_for_line(std::regex{"mode changed from 0755 to 0700"}).has_value());
    id = run_job(node.port(), {{"command", "true"}}).id;
    CAF_CHECK_EQUAL(mode_of(data.path()), 0700u);
    CAF_CHECK_EQUAL(mode_of(data.path() + "/store"), 0700u);
    CAF_CHECK_EQUAL(mode_of(data.path() + "/store/data.mdb"), 0600u);
    CAF_CHECK_EQUAL(mode_of(data.path() + "/store/lock.mdb"), 0600u);
    CAF_CHECK_EQUAL(mode_of(data.path() + "/LOCK"), 0600u);
    CAF_CHECK_EQUAL(mode_of(data.path() + "/workspaces"), 0700u);
    CAF_CHECK_EQUAL(mode_of(data.path() + "/workspaces/" + id), 0700u);
    node.terminate();
    CAF_REQUIRE(node.wait_exit().has_value());
  }
  // Files an older troupe left readable are tightened at the next start.
  for (auto f : {"/store/data.mdb", "/store/lock.mdb", "/LOCK"})
    CAF_REQUIRE_EQUAL(::chmod((data.path() + f).c_str(), 0644), 0);
  CAF_REQUIRE_EQUAL(::chmod((data.path() + "/store").c_str(), 0755), 0);
  CAF_REQUIRE_EQUAL(::chmod((data.path() + "/workspaces").c_str(), 0755), 0);
  e2e::daemon again{on_data_dir(data.path())};
  CAF_CHECK(
      again.wait_for_line(std::regex{"workspaces: mode changed from 0755 to 0700"}).has_value());
  CAF_CHECK_EQUAL(mode_of(data.path() + "/store"), 0700u);
  CAF_CHECK_EQUAL(mode_of(data.path() + "/store/data.mdb"), 0600u);
  CAF_CHECK_EQUAL(mode_of(data.path() + "/store/lock.mdb"), 0600u);
  CAF_CHECK_EQUAL(mode_of(data.path() + "/LOCK"), 0600u);
  CAF_CHECK_EQUAL(mode_of(data.path() + "/workspaces"), 0700u);
}

CAF_TEST(a job as nobody reads neither the daemon s environ nor the store) {
  auto pw = nobody();
  scratch_dir data{"troupe-e2e-data"};
  scratch_dir project{"troupe-e2e-project"};
  e2e::daemon node{
      on_data_dir(data.path(), {{"SECRET_TOKEN_X", "hunter2"}, {"TROUPE_JOBS__USER", "nobody"}})};
  CAF_CHECK(node.wait_for_line(std::regex{"jobs run as user nobody"}).has_value());
  CAF_CHECK(!logged(node, "jobs run as root"));
  // An uploaded project: what is extracted becomes the job's too.
  std::ofstream{project.path() + "/ci.sh"}
      << "#!/bin/sh\n"
         "id -un; id -gn\n"
         "echo \"$USER $LOGNAME $HOME $SHELL\"\n"
         "stat -c %U ci.sh sub sub/data.txt | tr '\\n' ' '; echo\n"
         "cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ-read || echo environ-denied\n"
         "cat " +
             data.path() +
             "/store/data.mdb >/dev/null 2>&1 && echo store-read || echo store-denied\n"
             "ls " +
             data.path() +
             "/workspaces >/dev/null 2>&1 && echo listed || echo list-denied\n"
             "touch made-here && stat -c %U made-here\n";
  ::chmod((project.path() + "/ci.sh").c_str(), 0755);
  fs::create_directories(project.path() + "/sub");
  std::ofstream{project.path() + "/sub/data.txt"} << "data\n";
  auto archive = project.path() + ".tar.gz";
  CAF_REQUIRE_EQUAL(
      std::system(("tar czf '" + archive + "' -C '" + project.path() + "' .").c_str()), 0);
  std::ifstream in{archive, std::ios::binary};
  std::string bytes{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  fs::remove(archive);
  const std::string boundary = "----troupe-e2e-host";
  auto body = "--" + boundary +
              "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.tar.gz\"\r\n"
              "Content-Type: application/octet-stream\r\n\r\n" +
              bytes + "\r\n--" + boundary + "--\r\n";
  auto run = run_job(node.port(), {},
                     {{"Content-Type", "multipart/form-data; boundary=" + boundary}}, body);
  auto* gr = ::getgrgid(pw.pw_gid);
  CAF_REQUIRE(gr != nullptr);
  std::vector<std::string> want{"nobody",
                                gr->gr_name,
                                std::string{"nobody nobody "} + pw.pw_dir + " " + pw.pw_shell,
                                "nobody nobody nobody ",
                                "environ-denied",
                                "store-denied",
                                "list-denied",
                                "nobody"};
  CAF_CHECK_EQUAL(joined(run.lines), joined(want));
  CAF_CHECK_EQUAL(json_field(run.info, "/status"), "succeeded");
  // The workspace is the job's own; the data dir lets it pass, no more.
  auto ws = stat_of(data.path() + "/workspaces/" + run.id);
  CAF_CHECK_EQUAL(ws.st_uid, pw.pw_uid);
  CAF_CHECK_EQUAL(ws.st_mode & 07777, 0700u);
  for (auto dir : {data.path(), data.path() + "/workspaces"}) {
    auto st = stat_of(dir);
    CAF_CHECK_EQUAL(st.st_mode & 07777, 0710u);
    CAF_CHECK_EQUAL(st.st_gid, pw.pw_gid);
  }
  CAF_CHECK_EQUAL(mode_of(data.path() + "/store"), 0700u);
  // Switching users takes the fork path: it too hands down nothing.
  auto fds = run_job(node.port(), {{"command", list_fds}});
  CAF_CHECK_EQUAL(joined(fds.lines), "0 1 2 3 ");
}

CAF_TEST(the daemon is not dumpable so a job of its own user cannot read its environ) {
  auto pw = nobody();
  scratch_dir data{"troupe-e2e-data"};
  CAF_REQUIRE_EQUAL(::chown(data.path().c_str(), pw.pw_uid, pw.pw_gid), 0);
  auto* gr = ::getgrgid(pw.pw_gid);
  CAF_REQUIRE(gr != nullptr);
  auto opts = on_data_dir(data.path(), {{"SECRET_TOKEN_X", "hunter2"}});
  opts.wrapper = {"/usr/bin/setpriv", std::string{"--reuid="} + pw.pw_name,
                  std::string{"--regid="} + gr->gr_name, "--clear-groups"};
  e2e::daemon node{opts};
  CAF_CHECK(!logged(node, "jobs run as root"));
  auto run = run_job(node.port(), {{"command", "id -u; cat /proc/self/environ >/dev/null && "
                                               "echo own-environ-read; cat /proc/$PPID/environ"}});
  CAF_REQUIRE_GREATER_OR_EQUAL(run.lines.size(), 3u);
  CAF_CHECK_EQUAL(run.lines[0], std::to_string(pw.pw_uid));
  CAF_CHECK_EQUAL(run.lines[1], "own-environ-read");
  CAF_CHECK(contains(run.lines[2], "Permission denied"));
  CAF_CHECK(!contains(joined(run.lines), "hunter2"));
  CAF_CHECK_EQUAL(json_field(run.info, "/status"), "failed");
  // The daemon itself runs as that user too.
  std::ifstream status{"/proc/" + std::to_string(node.pid()) + "/status"};
  std::string line, uid_line;
  while (std::getline(status, line))
    if (line.rfind("Uid:", 0) == 0)
      uid_line = line;
  CAF_CHECK(contains(uid_line, "\t" + std::to_string(pw.pw_uid) + "\t"));
}

CAF_TEST(no descriptor of the daemon reaches a job on either spawn path) {
  e2e::daemon node;
  // Open connections: sockets a careless spawn would hand down.
  std::vector<std::unique_ptr<connection>> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(std::make_unique<connection>(node.port()));
    CAF_REQUIRE_EQUAL(idle.back()->request("GET", "/healthz").status, 200);
  }
  auto plain = run_job(node.port(), {{"command", list_fds}});
  CAF_CHECK_EQUAL(joined(plain.lines), "0 1 2 3 ");
  // Resource limits take the fork path.
  auto forked = run_job(node.port(), {{"command", list_fds}, {"resources", {{"open_files", 128}}}});
  CAF_CHECK_EQUAL(joined(forked.lines), "0 1 2 3 ");
}

CAF_TEST(orphan workspaces are swept at start and known ones stay) {
  scratch_dir data{"troupe-e2e-data"};
  std::string id;
  {
    e2e::daemon node{on_data_dir(data.path())};
    id = run_job(node.port(), {{"command", "echo kept > kept.txt"}}).id;
    node.terminate();
    CAF_REQUIRE(node.wait_exit().has_value());
  }
  // What a crash between creating a workspace and storing its job leaves.
  auto ws = data.path() + "/workspaces/";
  fs::create_directories(ws + "0190aaaa-stray/sub");
  std::ofstream{ws + "0190aaaa-stray/sub/file"} << "x";
  std::ofstream{ws + "stray-file"} << "x";
  e2e::daemon node{on_data_dir(data.path())};
  CAF_CHECK(node.wait_for_line(std::regex{"removed 2 orphan workspace"}).has_value());
  CAF_CHECK(!fs::exists(ws + "0190aaaa-stray"));
  CAF_CHECK(!fs::exists(ws + "stray-file"));
  CAF_CHECK(fs::exists(ws + id + "/kept.txt"));
}

CAF_TEST(running as root without jobs user warns at start) {
  CAF_REQUIRE_EQUAL(::geteuid(), 0u);
  e2e::daemon node;
  auto line = node.wait_for_line(std::regex{"jobs run as root"});
  CAF_REQUIRE(line.has_value());
  CAF_CHECK(contains(*line, "\"warn"));
  CAF_CHECK(contains(*line, "jobs.user"));
}

CAF_TEST(an unknown jobs user or group stops the start with exit code 2) {
  scratch_dir scratch{"troupe-e2e-config"};
  auto data_dir = scratch.path() + "/data";
  std::vector<std::string> args{"serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir};
  auto res = run_troupe(args, {{"TROUPE_JOBS__USER", "no-such-user-here"}});
  CAF_REQUIRE(res.status.has_value());
  CAF_CHECK_EQUAL(res.status->to_string(), "exit code 2");
  CAF_CHECK(contains(res.err, "config error: jobs.user: no such user \"no-such-user-here\""));
  res =
      run_troupe(args, {{"TROUPE_JOBS__USER", "nobody"}, {"TROUPE_JOBS__GROUP", "no-such-group"}});
  CAF_REQUIRE(res.status.has_value());
  CAF_CHECK_EQUAL(res.status->to_string(), "exit code 2");
  CAF_CHECK(contains(res.err, "config error: jobs.group: no such group \"no-such-group\""));
  CAF_CHECK(!fs::exists(data_dir));
}
