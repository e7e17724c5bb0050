#define CAF_SUITE e2e_jobs

#include "support/dsl.hpp"

#include "support/e2e.hpp"
#include "support/files.hpp"

#include "runtime/ground/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

using namespace troupe::e2e;
using troupe::test::read_file;
using troupe::test::write_file;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()
namespace fs = std::filesystem;
using nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

// -- daemon set-up ------------------------------------------------------------

/// Job settings that keep the suite fast: two slots, short grace and backoff.
environment job_env(int concurrency = 2) {
  return {{"TROUPE_JOBS__CONCURRENCY", std::to_string(concurrency)},
          {"TROUPE_JOBS__CANCEL_GRACE", "2s"},
          {"TROUPE_JOBS__RETRY_BACKOFF_INITIAL", "100ms"}};
}

daemon_options job_daemon(int concurrency = 2, std::string data_dir = {}) {
  daemon_options opts;
  opts.env = job_env(concurrency);
  opts.data_dir = std::move(data_dir);
  return opts;
}

// -- bounded polling ----------------------------------------------------------

using e2e::poll_until;

// -- processes of jobs --------------------------------------------------------

/// Live (not zombie) processes whose environment holds `TROUPE_JOB_ID=<id>`.
std::vector<pid_t> job_processes(const std::string& job_id) {
  std::vector<pid_t> result;
  auto wanted = "TROUPE_JOB_ID=" + job_id;
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{"/proc", ec}) {
    auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    // A zombie's environ reads empty, so only live processes match.
    auto env = read_file(entry.path().string() + "/environ");
    size_t pos = 0;
    while (pos < env.size()) {
      auto end = env.find('\0', pos);
      if (end == std::string::npos)
        end = env.size();
      if (env.compare(pos, end - pos, wanted) == 0) {
        result.push_back(static_cast<pid_t>(std::stol(name)));
        break;
      }
      pos = end + 1;
    }
  }
  return result;
}

/// True if `pid` exists and is not a zombie.
bool process_alive(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat;
  if (!std::getline(in, stat))
    return false;
  auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size())
    return false;
  auto state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

/// SIGKILLs whatever processes of the registered jobs are still alive when
/// the test ends, so that a failing daemon never leaves `sleep 60` behind.
struct job_reaper {
  std::vector<std::string> ids;

  void add(const std::string& id) { ids.push_back(id); }

  ~job_reaper() {
    for (auto& id : ids)
      for (auto pid : job_processes(id))
        ::kill(pid, SIGKILL);
  }
};

// -- HTTP helpers -------------------------------------------------------------

const header_list json_type{{"Content-Type", "application/json"}};

response submit_json(uint16_t port, const json& spec, header_list headers = json_type) {
  return request(port, "POST", "/jobs", headers, spec.dump());
}

/// Submits a JSON spec and requires 201 with a job id.
std::string submit_ok(uint16_t port, const json& spec, header_list headers = json_type) {
  auto res = submit_json(port, spec, std::move(headers));
  if (res.status != 201)
    CAF_MESSAGE("POST /jobs " << spec.dump() << " ->\n" << res.to_string());
  CAF_REQUIRE_EQUAL(res.status, 201);
  CAF_CHECK_EQUAL(json_field(res, "/status"), "queued");
  auto id = json_field(res, "/job_id");
  CAF_REQUIRE(!id.empty() && id.front() != '<');
  CAF_CHECK_EQUAL(res.header("Location").value_or("<none>"), "/jobs/" + id);
  return id;
}

json job_info(uint16_t port, const std::string& id) {
  return get(port, "/jobs/" + id).json();
}

bool is_terminal(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "cancelled" ||
         status == "timed_out" || status == "lost";
}

/// Polls GET /jobs/{id} until its status satisfies `pred`; the last record
/// seen (so a failed check shows it).
json wait_job(uint16_t port, const std::string& id,
              const std::function<bool(const std::string&)>& pred, duration timeout = 30s) {
  json last;
  poll_until(
      [&] {
        last = job_info(port, id);
        return last.is_object() && pred(last.value("status", ""));
      },
      timeout);
  return last;
}

json wait_terminal(uint16_t port, const std::string& id, duration timeout = 30s) {
  return wait_job(port, id, is_terminal, timeout);
}

/// What a job stream delivered up to its `complete` event.
struct followed {
  int status = 0;
  std::vector<sse_event> events;
  std::vector<sse_event> logs;
  std::optional<sse_event> complete;
  /// Events after `complete` (there should be none).
  std::vector<sse_event> after;
  bool ended = false;

  std::vector<std::string> lines() const {
    std::vector<std::string> result;
    for (auto& ev : logs)
      result.push_back(json_field(ev.json(), "/line"));
    return result;
  }

  std::vector<std::string> ids() const {
    std::vector<std::string> result;
    for (auto& ev : logs)
      result.push_back(ev.id);
    return result;
  }
};

/// Reads events of an open job stream until `complete` (or the timeout), then
/// checks whether the stream ends.
followed read_until_complete(sse_stream& stream, duration timeout, followed result = {}) {
  result.status = stream.status();
  auto deadline = steady::now() + timeout;
  while (!result.complete) {
    auto left = std::chrono::duration_cast<duration>(deadline - steady::now());
    auto ev = stream.next(std::max(left, 0ms));
    if (!ev)
      break;
    result.events.push_back(*ev);
    if (ev->type == "log")
      result.logs.push_back(*ev);
    else if (ev->type == "complete")
      result.complete = *ev;
  }
  if (result.complete) {
    while (auto ev = stream.next(5s))
      result.after.push_back(*ev);
    result.ended = stream.ended();
  }
  return result;
}

followed follow(uint16_t port, const std::string& id,
                const std::string& query = "?from_beginning=true", const header_list& headers = {},
                duration timeout = 30s) {
  auto stream = open_sse(port, "/jobs/" + id + "/stream" + query, headers);
  if (stream.status() != 200) {
    followed result;
    result.status = stream.status();
    return result;
  }
  return read_until_complete(stream, timeout);
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> result;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    result.push_back(line);
  return result;
}

std::string join(const std::vector<std::string>& xs) {
  std::string result = "[";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i > 0)
      result += ", ";
    result += '"' + xs[i] + '"';
  }
  return result + "]";
}

std::vector<std::string> log_lines(uint16_t port, const std::string& id) {
  auto res = get(port, "/jobs/" + id + "/logs");
  CAF_CHECK_EQUAL(res.status, 200);
  return split_lines(res.body);
}

/// Events of a whole (already finished) SSE response body.
std::vector<sse_event> parse_sse_body(const std::string& body) {
  sse_parser parser;
  auto events = parser.feed(body);
  // A body that ends without the final blank line still counts.
  auto rest = parser.feed("\n\n");
  events.insert(events.end(), rest.begin(), rest.end());
  return events;
}

// -- multipart and archives ---------------------------------------------------

struct form_part {
  std::string name;
  std::string filename; // empty: a plain field
  std::string content_type;
  std::string data;
};

const std::string boundary = "----troupe-e2e-7d1f0c9a3b";

std::string multipart_body(const std::vector<form_part>& parts) {
  std::string body;
  for (auto& part : parts) {
    body += "--" + boundary + "\r\n";
    body += "Content-Disposition: form-data; name=\"" + part.name + "\"";
    if (!part.filename.empty())
      body += "; filename=\"" + part.filename + "\"";
    body += "\r\n";
    if (!part.content_type.empty())
      body += "Content-Type: " + part.content_type + "\r\n";
    body += "\r\n" + part.data + "\r\n";
  }
  body += "--" + boundary + "--\r\n";
  return body;
}

header_list multipart_headers(header_list extra = {}) {
  extra.emplace_back("Content-Type", "multipart/form-data; boundary=" + boundary);
  return extra;
}

/// POSTs an archive (and optionally a JSON spec) as multipart/form-data.
response post_archive(uint16_t port, const std::string& target, const std::string& archive,
                      const std::optional<json>& spec = std::nullopt, header_list extra = {},
                      duration timeout = 10s) {
  std::vector<form_part> parts{{"file", "project.bin", "application/octet-stream", archive}};
  if (spec)
    parts.push_back({"spec", "", "application/json", spec->dump()});
  return request(port, "POST", target, multipart_headers(std::move(extra)), multipart_body(parts),
                 timeout);
}

/// Runs a shell command; true on exit code 0.
bool shell(const std::string& cmd) {
  auto rc = std::system(cmd.c_str());
  if (rc != 0)
    CAF_MESSAGE("command failed (" << rc << "): " << cmd);
  return rc == 0;
}

/// `zip -r` of a directory's contents, as a user would build it.
std::string zip_dir(const std::string& dir, const std::string& out) {
  CAF_REQUIRE(shell("cd '" + dir + "' && zip -q -r '" + out + "' ."));
  return read_file(out);
}

/// `tar czf` of a directory's contents (entries start with "./").
std::string tar_gz_dir(const std::string& dir, const std::string& out) {
  CAF_REQUIRE(shell("tar czf '" + out + "' -C '" + dir + "' ."));
  return read_file(out);
}

/// One entry of a hand-made archive.
struct archive_item {
  enum kind_t { file, dir, symlink, hardlink } kind = file;
  std::string path;
  /// File content, or the symlink/hardlink target.
  std::string data;
  int mode = 0644;
};

archive_item file_item(std::string path, std::string data, int mode = 0644) {
  return {archive_item::file, std::move(path), std::move(data), mode};
}

archive_item symlink_item(std::string path, std::string target) {
  return {archive_item::symlink, std::move(path), std::move(target), 0777};
}

/// Builds an archive in memory with libarchive's writer, which (unlike the
/// CLI tools) writes `..` and absolute names exactly as given.
std::string make_archive(const std::string& format, const std::vector<archive_item>& items) {
  std::string out;
  auto* a = archive_write_new();
  if (format == "zip") {
    archive_write_set_format_zip(a);
  } else {
    archive_write_set_format_pax_restricted(a);
    if (format == "tar.gz")
      archive_write_add_filter_gzip(a);
  }
  archive_write_set_bytes_in_last_block(a, 1);
  auto on_write = [](archive*, void* client, const void* buf, size_t len) -> la_ssize_t {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buf), len);
    return static_cast<la_ssize_t>(len);
  };
  CAF_REQUIRE_EQUAL(archive_write_open(a, &out, nullptr, on_write, nullptr), ARCHIVE_OK);
  for (auto& item : items) {
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, item.path.c_str());
    archive_entry_set_mtime(e, 1700000000, 0);
    archive_entry_set_perm(e, static_cast<mode_t>(item.mode));
    switch (item.kind) {
    case archive_item::file:
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_size(e, static_cast<la_int64_t>(item.data.size()));
      break;
    case archive_item::dir:
      archive_entry_set_filetype(e, AE_IFDIR);
      archive_entry_set_size(e, 0);
      break;
    case archive_item::symlink:
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_symlink(e, item.data.c_str());
      archive_entry_set_size(e, 0);
      break;
    case archive_item::hardlink:
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_hardlink(e, item.data.c_str());
      archive_entry_set_size(e, 0);
      break;
    }
    auto rc = archive_write_header(a, e);
    if (rc != ARCHIVE_OK)
      CAF_MESSAGE("libarchive header " << item.path << ": " << archive_error_string(a));
    if (item.kind == archive_item::file && !item.data.empty())
      archive_write_data(a, item.data.data(), item.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

/// Paths under `root` whose file name contains `needle` (symlinks not
/// followed).
std::vector<std::string> find_named(const std::string& root, const std::string& needle) {
  std::vector<std::string> result;
  std::error_code ec;
  fs::recursive_directory_iterator it{root, fs::directory_options::skip_permission_denied, ec};
  for (; !ec && it != fs::recursive_directory_iterator{}; it.increment(ec))
    if (contains(it->path().filename().string(), needle))
      result.push_back(it->path().string());
  return result;
}

std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> result;
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{dir, ec})
    result.push_back(entry.path().filename().string());
  return result;
}

std::string unique_token(const std::string& prefix) {
  std::random_device rd;
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 1000000);
}

/// A project directory with an executable ci.sh that prints a marker and the
/// content of a data file, plus a sub directory for `cwd`.
struct project {
  scratch_dir dir{"troupe-e2e-project"};
  std::string src = dir.path() + "/src";
  std::string marker = unique_token("ci-marker");

  project() {
    write_file(src + "/ci.sh", "#!/bin/sh\necho " + marker + "\ncat data.txt\n", 0755);
    write_file(src + "/data.txt", "payload-from-data-file\n");
    write_file(src + "/other.sh", "echo other-script \"$@\"\n", 0644);
    write_file(src + "/sub/here.txt", "inside-sub\n");
  }
};

/// Fresh daemon with fast job settings.
struct fixture {
  e2e::daemon node{job_daemon()};
  uint16_t port = node.port();
  job_reaper reaper;
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(e2e_jobs_tests, fixture)

// 1 -------------------------------------------------------------------------

CAF_TEST(a JSON job streams its lines in order and completes successfully) {
  auto id = submit_ok(
      port, {{"name", "hello"}, {"command", "echo one; echo two"}, {"labels", {{"team", "ci"}}}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE_EQUAL(got.status, 200);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.lines()), join({"one", "two"}));
  CAF_CHECK_EQUAL(join(got.ids()), join({"1", "2"}));
  for (size_t i = 0; i < got.logs.size(); ++i) {
    auto data = got.logs[i].json();
    CAF_CHECK_EQUAL(json_field(data, "/seq"), std::to_string(i + 1));
    CAF_CHECK_EQUAL(json_field(data, "/stream"), "stdout");
    CAF_CHECK(data.contains("ts"));
  }
  auto done = got.complete->json();
  CAF_CHECK_EQUAL(json_field(done, "/success"), "true");
  CAF_CHECK_EQUAL(json_field(done, "/status"), "succeeded");
  CAF_CHECK_EQUAL(json_field(done, "/exit_code"), "0");
  CAF_CHECK(got.after.empty());
  CAF_CHECK(got.ended);
  // The record agrees with the stream.
  auto info = job_info(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/job_id"), id);
  CAF_CHECK_EQUAL(json_field(info, "/id"), id);
  CAF_CHECK_EQUAL(json_field(info, "/name"), "hello");
  CAF_CHECK_EQUAL(json_field(info, "/status"), "succeeded");
  CAF_CHECK_EQUAL(json_field(info, "/success"), "true");
  CAF_CHECK_EQUAL(json_field(info, "/exit_code"), "0");
  CAF_CHECK_EQUAL(json_field(info, "/attempt"), "1");
  CAF_CHECK_EQUAL(json_field(info, "/labels/team"), "ci");
  CAF_CHECK(info["start_time"].is_string());
  CAF_CHECK(info["end_time"].is_string());
  CAF_CHECK(info["queued_at"].is_string());
  // text/plain and NDJSON logs.
  auto text = get(port, "/jobs/" + id + "/logs");
  CAF_CHECK_EQUAL(text.status, 200);
  CAF_CHECK(contains(text.header("Content-Type").value_or(""), "text/plain"));
  CAF_CHECK_EQUAL(text.body, "one\ntwo\n");
  auto nd = get(port, "/jobs/" + id + "/logs", {{"Accept", "application/x-ndjson"}});
  CAF_CHECK_EQUAL(nd.status, 200);
  auto nd_lines = split_lines(nd.body);
  CAF_REQUIRE_EQUAL(nd_lines.size(), 2u);
  auto second = json::parse(nd_lines[1], nullptr, false);
  CAF_CHECK_EQUAL(json_field(second, "/seq"), "2");
  CAF_CHECK_EQUAL(json_field(second, "/line"), "two");
  // HEAD: the head of the same response, no body.
  auto head = request(port, "HEAD", "/jobs/" + id + "/logs");
  CAF_CHECK_EQUAL(head.status, 200);
  CAF_CHECK(contains(head.header("Content-Type").value_or(""), "text/plain"));
  CAF_CHECK_EQUAL(head.body, "");
  // A finished job cannot be cancelled.
  auto del = request(port, "DELETE", "/jobs/" + id);
  CAF_CHECK_EQUAL(del.status, 409);
}

CAF_TEST(a YAML spec is accepted and stderr lines are marked) {
  auto res = request(port, "POST", "/jobs", {{"Content-Type", "application/yaml"}},
                     "name: yaml-job\ncommand: echo out; echo err >&2\n");
  CAF_REQUIRE_EQUAL(res.status, 201);
  auto id = json_field(res, "/job_id");
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
  std::map<std::string, std::string> stream_of;
  for (auto& ev : got.logs)
    stream_of[json_field(ev.json(), "/line")] = json_field(ev.json(), "/stream");
  CAF_CHECK_EQUAL(stream_of["out"], "stdout");
  CAF_CHECK_EQUAL(stream_of["err"], "stderr");
  CAF_CHECK_EQUAL(json_field(job_info(port, id), "/name"), "yaml-job");
}

// 2 -------------------------------------------------------------------------

CAF_TEST(a failing command completes with its exit code) {
  auto id = submit_ok(port, {{"command", "echo before; exit 3"}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.lines()), join({"before"}));
  auto done = got.complete->json();
  CAF_CHECK_EQUAL(json_field(done, "/success"), "false");
  CAF_CHECK_EQUAL(json_field(done, "/status"), "failed");
  CAF_CHECK_EQUAL(json_field(done, "/exit_code"), "3");
  auto info = job_info(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "failed");
  CAF_CHECK_EQUAL(json_field(info, "/success"), "false");
  CAF_CHECK_EQUAL(json_field(info, "/exit_code"), "3");
  CAF_CHECK_EQUAL(json_field(info, "/signal"), "null");
}

// 3 -------------------------------------------------------------------------

CAF_TEST(zip and tar.gz archives run their ci.sh without a spec) {
  project proj;
  auto zip = zip_dir(proj.src, proj.dir.path() + "/p.zip");
  auto tgz = tar_gz_dir(proj.src, proj.dir.path() + "/p.tar.gz");
  for (auto* archive : {&zip, &tgz}) {
    auto kind = archive == &zip ? "zip" : "tar.gz";
    CAF_MESSAGE("archive: " << kind);
    auto res = post_archive(port, "/jobs", *archive);
    if (res.status != 201)
      CAF_MESSAGE(res.to_string());
    CAF_REQUIRE_EQUAL(res.status, 201);
    auto id = json_field(res, "/job_id");
    reaper.add(id);
    auto got = follow(port, id);
    CAF_REQUIRE(got.complete.has_value());
    CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
    CAF_CHECK_EQUAL(join(got.lines()), join({proj.marker, "payload-from-data-file"}));
    CAF_CHECK_EQUAL(join(log_lines(port, id)), join({proj.marker, "payload-from-data-file"}));
    // The workspace is the job's data dir entry and holds the files.
    auto ws = node.data_dir() + "/workspaces/" + id;
    CAF_CHECK(fs::exists(ws + "/ci.sh"));
    CAF_CHECK(fs::exists(ws + "/sub/here.txt"));
  }
}

CAF_TEST(an archive with a Makefile runs make test) {
  scratch_dir dir{"troupe-e2e-make"};
  auto src = dir.path() + "/src";
  write_file(src + "/Makefile", "test:\n\t@echo make-test-ran\n\t@cat data.txt\n");
  write_file(src + "/data.txt", "make-data\n");
  write_file(src + "/ci.sh", "#!/bin/sh\necho ci-sh-ran\n", 0755);
  auto tgz = tar_gz_dir(src, dir.path() + "/p.tar.gz");
  auto res = post_archive(port, "/jobs", tgz);
  CAF_REQUIRE_EQUAL(res.status, 201);
  auto id = json_field(res, "/job_id");
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
  CAF_CHECK_EQUAL(join(got.lines()), join({"make-test-ran", "make-data"}));
}

CAF_TEST(an archive with a spec part runs the spec command in its cwd) {
  project proj;
  auto zip = zip_dir(proj.src, proj.dir.path() + "/p.zip");
  // cwd is relative to the workspace.
  auto res = post_archive(port, "/jobs", zip,
                          json{{"command", "cat here.txt; sh ../other.sh x"},
                               {"cwd", "sub"},
                               {"labels", {{"kind", "archive"}}}});
  if (res.status != 201)
    CAF_MESSAGE(res.to_string());
  CAF_REQUIRE_EQUAL(res.status, 201);
  auto id = json_field(res, "/job_id");
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
  CAF_CHECK_EQUAL(join(got.lines()), join({"inside-sub", "other-script x"}));
  CAF_CHECK_EQUAL(json_field(job_info(port, id), "/labels/kind"), "archive");
}

CAF_TEST(the seed endpoints run an archive) {
  project proj;
  auto zip = zip_dir(proj.src, proj.dir.path() + "/p.zip");
  // /submit: SSE log events, then complete.
  {
    auto res =
        post_archive(port, "/submit", zip, std::nullopt, {{"Accept", "text/event-stream"}}, 30s);
    CAF_REQUIRE_EQUAL(res.status, 200);
    CAF_CHECK(contains(res.header("Content-Type").value_or(""), "text/event-stream"));
    auto events = parse_sse_body(res.body);
    CAF_REQUIRE(!events.empty());
    std::vector<std::string> lines;
    for (auto& ev : events)
      if (ev.type == "log") {
        lines.push_back(json_field(ev.json(), "/line"));
        // Seed clients read {"type":"log","data":"...\n"}.
        CAF_CHECK_EQUAL(json_field(ev.json(), "/type"), "log");
        CAF_CHECK_EQUAL(json_field(ev.json(), "/data"), json_field(ev.json(), "/line") + "\n");
      }
    CAF_CHECK_EQUAL(join(lines), join({proj.marker, "payload-from-data-file"}));
    CAF_CHECK_EQUAL(events.back().type, "complete");
    CAF_CHECK_EQUAL(json_field(events.back().json(), "/success"), "true");
    auto id = json_field(events.back().json(), "/job_id");
    reaper.add(id);
  }
  // /submit-stream: the job id first.
  {
    auto res = post_archive(port, "/submit-stream", zip, std::nullopt,
                            {{"Accept", "text/event-stream"}}, 30s);
    CAF_REQUIRE_EQUAL(res.status, 200);
    auto events = parse_sse_body(res.body);
    CAF_REQUIRE(!events.empty());
    CAF_CHECK_EQUAL(events.front().type, "job_id");
    auto id = json_field(events.front().json(), "/job_id");
    reaper.add(id);
    CAF_CHECK_EQUAL(events.back().type, "complete");
    CAF_CHECK_EQUAL(json_field(events.back().json(), "/success"), "true");
    bool marker_seen = false;
    for (auto& ev : events)
      if (ev.type == "log" && json_field(ev.json(), "/line") == proj.marker)
        marker_seen = true;
    CAF_CHECK(marker_seen);
    CAF_CHECK_EQUAL(json_field(job_info(port, id), "/status"), "succeeded");
  }
  // /submit-async: just the id; the job runs on.
  {
    auto res = post_archive(port, "/submit-async", zip);
    CAF_REQUIRE_EQUAL(res.status, 200);
    auto id = json_field(res, "/job_id");
    CAF_REQUIRE(!id.empty() && id.front() != '<');
    reaper.add(id);
    auto info = wait_terminal(port, id);
    CAF_CHECK_EQUAL(json_field(info, "/status"), "succeeded");
    CAF_CHECK_EQUAL(join(log_lines(port, id)), join({proj.marker, "payload-from-data-file"}));
  }
}

// 5 -------------------------------------------------------------------------

CAF_TEST(invalid specs are rejected naming the field) {
  auto check_rejected = [&](const std::string& body, const std::string& field,
                            const std::string& content_type = "application/json") {
    CAF_MESSAGE("body: " << body);
    auto res = request(port, "POST", "/jobs", {{"Content-Type", content_type}}, body);
    CAF_CHECK_EQUAL(res.status, 400);
    CAF_CHECK_EQUAL(json_field(res, "/error/field"), field);
    CAF_CHECK(!json_field(res, "/error/message").empty());
    return res;
  };
  auto malformed = check_rejected(R"({"command": "true",)", "body");
  CAF_CHECK_EQUAL(json_field(malformed, "/error/code"), "invalid_spec");
  auto unknown = check_rejected(R"({"command":"true","bogus":1})", "bogus");
  CAF_CHECK_EQUAL(json_field(unknown, "/error/code"), "invalid_spec");
  CAF_CHECK(contains(json_field(unknown, "/error/message"), "bogus"));
  auto wrong = check_rejected(R"({"command":"true","priority":"high"})", "priority");
  CAF_CHECK_EQUAL(json_field(wrong, "/error/code"), "invalid_spec");
  // The message documented in the README.
  auto range = check_rejected(R"({"command":"true","priority":101})", "priority");
  CAF_CHECK_EQUAL(json_field(range, "/error/message"),
                  "priority: must be an integer between 0 and 100, got 101");
  check_rejected(R"({"command":"true","timeout_seconds":"soon"})", "timeout_seconds");
  check_rejected(R"({"command":"true","cwd":"../outside"})", "cwd");
  check_rejected("command: true\nretries: many\n", "retries", "application/yaml");
  // Nothing was stored.
  auto list = get(port, "/jobs").json();
  CAF_CHECK_EQUAL(json_field(list, "/jobs"), "[]");
  // Unknown ids.
  const std::string nope = "/jobs/00000000-0000-7000-8000-000000000000";
  auto missing = get(port, nope);
  CAF_CHECK_EQUAL(missing.status, 404);
  CAF_CHECK_EQUAL(json_field(missing, "/error/code"), "not_found");
  CAF_CHECK_EQUAL(get(port, nope + "/logs").status, 404);
  CAF_CHECK_EQUAL(get(port, nope + "/stream").status, 404);
  CAF_CHECK_EQUAL(request(port, "DELETE", nope).status, 404);
}

// 6 -------------------------------------------------------------------------

CAF_TEST(cancelling a running job kills its process) {
  auto id = submit_ok(port, {{"command", "echo $$; sleep 60"}});
  reaper.add(id);
  auto stream = open_sse(port, "/jobs/" + id + "/stream?from_beginning=true");
  CAF_REQUIRE_EQUAL(stream.status(), 200);
  auto first = stream.next_of_type("log", 20s);
  CAF_REQUIRE(first.has_value());
  auto pid = static_cast<pid_t>(std::stol(json_field(first->json(), "/line")));
  CAF_CHECK(process_alive(pid));
  CAF_CHECK(!job_processes(id).empty());
  CAF_CHECK_EQUAL(json_field(job_info(port, id), "/status"), "running");
  auto del = request(port, "DELETE", "/jobs/" + id, {}, {}, 20s);
  CAF_CHECK_EQUAL(del.status, 200);
  CAF_CHECK_EQUAL(json_field(del, "/job_id"), id);
  CAF_CHECK_EQUAL(json_field(del, "/status"), "cancelled");
  // The answer comes when the job ended: the record says so already.
  auto info = job_info(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "cancelled");
  CAF_CHECK_EQUAL(json_field(info, "/success"), "false");
  CAF_CHECK(info["end_time"].is_string());
  // sh and sleep die of the SIGTERM: the grace's SIGKILL was not needed.
  CAF_CHECK_EQUAL(json_field(info, "/signal"), "15");
  CAF_CHECK(!process_alive(pid));
  auto left = job_processes(id);
  CAF_CHECK_EQUAL(left.size(), 0u);
  // The open stream sees the end.
  auto got = read_until_complete(stream, 10s);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "cancelled");
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/success"), "false");
  CAF_CHECK(got.ended);
  // Cancelling again is a conflict.
  CAF_CHECK_EQUAL(request(port, "DELETE", "/jobs/" + id).status, 409);
}

CAF_TEST(a job ignoring the TERM signal is killed after the cancel grace) {
  // The TERM is caught and said, then the job goes on: only the SIGKILL
  // after the grace ends it.
  auto id = submit_ok(
      port,
      {{"command", "trap 'echo got TERM' TERM; echo $$; while :; do sleep 0.1; echo tick; done"}});
  reaper.add(id);
  auto stream = open_sse(port, "/jobs/" + id + "/stream?from_beginning=true");
  auto first = stream.next_of_type("log", 20s);
  CAF_REQUIRE(first.has_value());
  auto pid = static_cast<pid_t>(std::stol(json_field(first->json(), "/line")));
  auto del = request(port, "DELETE", "/jobs/" + id, {}, {}, 20s);
  CAF_CHECK_EQUAL(del.status, 200);
  CAF_CHECK_EQUAL(json_field(del, "/status"), "cancelled");
  CAF_CHECK(!process_alive(pid));
  CAF_CHECK_EQUAL(job_processes(id).size(), 0u);
  auto info = job_info(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/signal"), "9");
  // The order on the job's stream: TERM caught, the job still running
  // (a tick after it), then the end.
  auto got = read_until_complete(stream, 20s);
  CAF_REQUIRE(got.complete.has_value());
  auto lines = got.lines();
  auto term = std::find(lines.begin(), lines.end(), "got TERM");
  CAF_REQUIRE(term != lines.end());
  CAF_CHECK(std::find(term, lines.end(), "tick") != lines.end());
}

CAF_TEST_FIXTURE_SCOPE_END()

namespace {

/// One job slot, taken by a job that sleeps until cancelled.
struct single_slot {
  e2e::daemon node{job_daemon(1)};
  uint16_t port = node.port();
  job_reaper reaper;
  std::string blocker;

  single_slot() {
    blocker = submit_ok(port, {{"command", "echo busy; sleep 60"}});
    reaper.add(blocker);
    auto stream = open_sse(port, "/jobs/" + blocker + "/stream?from_beginning=true");
    CAF_REQUIRE(stream.next_of_type("log", 20s).has_value());
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(e2e_jobs_single_slot, single_slot)

CAF_TEST(cancelling a queued job means it never starts) {
  auto queued = submit_ok(port, {{"command", "echo must-not-run"}});
  reaper.add(queued);
  CAF_CHECK_EQUAL(json_field(job_info(port, queued), "/status"), "queued");
  auto del = request(port, "DELETE", "/jobs/" + queued, {}, {}, 20s);
  CAF_CHECK_EQUAL(del.status, 200);
  CAF_CHECK_EQUAL(json_field(del, "/job_id"), queued);
  CAF_CHECK_EQUAL(json_field(del, "/status"), "cancelled");
  auto info = job_info(port, queued);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "cancelled");
  CAF_CHECK(info["start_time"].is_null());
  auto got = follow(port, queued, "?from_beginning=true", {}, 10s);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "cancelled");
  CAF_CHECK(got.logs.empty());
  // Free the slot, then run one more job: had the cancelled one been started
  // anyway, it would have run before this one (FIFO).
  CAF_CHECK_EQUAL(request(port, "DELETE", "/jobs/" + blocker, {}, {}, 20s).status, 200);
  auto after = submit_ok(port, {{"command", "echo after"}});
  reaper.add(after);
  CAF_CHECK_EQUAL(json_field(wait_terminal(port, after), "/status"), "succeeded");
  info = job_info(port, queued);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "cancelled");
  CAF_CHECK(info["start_time"].is_null());
  CAF_CHECK_EQUAL(get(port, "/jobs/" + queued + "/logs").body, "");
}

CAF_TEST(a stream open on a queued job ends with complete when it is cancelled) {
  // The stream subscribes while the cancellation runs; whatever the order,
  // the client must get `complete` (not a bare close after `queued`).
  constexpr int rounds = 100;
  int bare_closes = 0;
  for (int i = 0; i < rounds; ++i) {
    auto queued = submit_ok(port, {{"command", "echo must-not-run"}});
    reaper.add(queued);
    auto stream = open_sse(port, "/jobs/" + queued + "/stream?from_beginning=true");
    CAF_REQUIRE_EQUAL(stream.status(), 200);
    auto del = request(port, "DELETE", "/jobs/" + queued, {}, {}, 20s);
    CAF_CHECK_EQUAL(json_field(del, "/status"), "cancelled");
    auto got = read_until_complete(stream, 10s);
    if (!got.complete) {
      if (++bare_closes == 1) {
        std::string seen;
        for (auto& ev : got.events)
          seen += ev.type + " " + ev.data + "; ";
        CAF_MESSAGE("round " << i << ": no complete, stream "
                             << (stream.ended() ? "closed" : "still open") << " after: " << seen);
      }
      continue;
    }
    CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "cancelled");
  }
  if (bare_closes > 0)
    CAF_MESSAGE(bare_closes << " of " << rounds << " streams closed without a complete event");
  CAF_CHECK_EQUAL(bare_closes, 0);
}

CAF_TEST_FIXTURE_SCOPE_END()

CAF_TEST_FIXTURE_SCOPE(e2e_jobs_tests_2, fixture)

// 7 -------------------------------------------------------------------------

CAF_TEST(a job over its timeout ends timed_out) {
  auto id = submit_ok(port, {{"command", "echo $$; sleep 30"}, {"timeout_seconds", 1}});
  reaper.add(id);
  auto got = follow(port, id, "?from_beginning=true", {}, 20s);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "timed_out");
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/success"), "false");
  auto info = job_info(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "timed_out");
  // Not before its timeout: the record's own run time is at least 1 s.
  auto start = troupe::parse_time(json_field(info, "/start_time"));
  auto end = troupe::parse_time(json_field(info, "/end_time"));
  CAF_REQUIRE(start && end);
  CAF_CHECK_GREATER_OR_EQUAL(*end - *start, 1'000'000'000);
  CAF_REQUIRE_EQUAL(got.logs.size(), 1u);
  auto pid = static_cast<pid_t>(std::stol(got.lines().front()));
  CAF_CHECK(!process_alive(pid));
  CAF_CHECK_EQUAL(job_processes(id).size(), 0u);
}

// 8 -------------------------------------------------------------------------

CAF_TEST(two hundred jobs at concurrency two all end in the right state) {
  constexpr int n = 200;
  std::vector<std::string> ids;
  std::unique_ptr<connection> conn;
  for (int i = 0; i < n; ++i) {
    json command;
    switch (i % 4) {
    case 0:
      command = "true";
      break;
    case 1:
      command = "false";
      break;
    case 2:
      command = json::array({"true"});
      break;
    default:
      command = json::array({"false"});
      break;
    }
    json spec{{"name", "bulk-" + std::to_string(i)},
              {"command", command},
              {"labels", {{"parity", i % 2 == 0 ? "even" : "odd"}}}};
    if (!conn || !conn->is_open())
      conn = std::make_unique<connection>(port);
    auto res = conn->request("POST", "/jobs", json_type, spec.dump());
    if (res.status != 201)
      CAF_MESSAGE("job " << i << ": " << res.to_string());
    CAF_REQUIRE_EQUAL(res.status, 201);
    ids.push_back(json_field(res, "/job_id"));
  }
  conn.reset();
  for (auto& id : ids)
    reaper.add(id);
  // Wait until every job ended.
  json jobs;
  auto all_done = poll_until(
      [&] {
        auto res = get(port, "/jobs?limit=1000");
        jobs = res.json();
        if (!jobs.is_object() || !jobs["jobs"].is_array() ||
            jobs["jobs"].size() != static_cast<size_t>(n))
          return false;
        for (auto& job : jobs["jobs"])
          if (!is_terminal(job.value("status", "")))
            return false;
        return true;
      },
      120s);
  CAF_REQUIRE(all_done);
  CAF_CHECK(jobs["next_cursor"].is_null());
  // Newest first: the reverse of the submission order.
  std::vector<std::string> listed;
  for (auto& job : jobs["jobs"])
    listed.push_back(job.value("id", ""));
  CAF_CHECK(std::equal(listed.begin(), listed.end(), ids.rbegin(), ids.rend()));
  std::map<std::string, json> by_id;
  for (auto& job : jobs["jobs"])
    by_id[job.value("id", "")] = job;
  int wrong = 0;
  for (int i = 0; i < n; ++i) {
    auto& job = by_id[ids[i]];
    bool ok = i % 2 == 0;
    auto want_status = ok ? "succeeded" : "failed";
    if (json_field(job, "/status") != want_status ||
        json_field(job, "/exit_code") != (ok ? "0" : "1") ||
        json_field(job, "/success") != (ok ? "true" : "false")) {
      if (++wrong <= 5)
        CAF_MESSAGE("job " << i << " wanted " << want_status << ", got: " << job.dump());
    }
  }
  CAF_CHECK_EQUAL(wrong, 0);
  // Never more than two at once: sweep the [start, end] intervals (ends
  // before starts at equal timestamps, which have millisecond resolution).
  std::vector<std::pair<std::string, int>> edges;
  for (auto& job : jobs["jobs"]) {
    if (!job["start_time"].is_string() || !job["end_time"].is_string()) {
      CAF_FAIL("job without start/end time: " << job.dump());
    }
    edges.emplace_back(job["start_time"].get<std::string>(), 1);
    edges.emplace_back(job["end_time"].get<std::string>(), -1);
  }
  std::sort(edges.begin(), edges.end());
  int running = 0;
  int peak = 0;
  for (auto& [ts, delta] : edges) {
    running += delta;
    peak = std::max(peak, running);
  }
  CAF_CHECK_LESS_OR_EQUAL(peak, 2);
  CAF_MESSAGE("peak concurrency seen in start/end times: " << peak);
  // Filters and pagination.
  auto failed = get(port, "/jobs?status=failed&limit=1000").json();
  CAF_CHECK_EQUAL(failed["jobs"].size(), static_cast<size_t>(n / 2));
  auto even = get(port, "/jobs?label=parity:even&limit=1000").json();
  CAF_CHECK_EQUAL(even["jobs"].size(), static_cast<size_t>(n / 2));
  for (auto& job : even["jobs"])
    CAF_CHECK_EQUAL(json_field(job, "/status"), "succeeded");
  std::vector<std::string> paged;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto res = get(port, "/jobs?limit=64" + (cursor.empty() ? "" : "&cursor=" + cursor));
    CAF_REQUIRE_EQUAL(res.status, 200);
    auto body = res.json();
    for (auto& job : body["jobs"])
      paged.push_back(job.value("id", ""));
    if (body["next_cursor"].is_null())
      break;
    cursor = body["next_cursor"].get<std::string>();
  }
  CAF_CHECK_EQUAL(paged.size(), static_cast<size_t>(n));
  CAF_CHECK(paged == listed);
}

// 11 ------------------------------------------------------------------------

CAF_TEST(a failing job is retried and ends failed after its last attempt) {
  auto id =
      submit_ok(port, {{"command", "echo attempt $TROUPE_JOB_ATTEMPT; exit 7"}, {"retries", 2}});
  reaper.add(id);
  // One stream across all attempts: `complete` only after the last one.
  auto got = follow(port, id, "?from_beginning=true", {}, 30s);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "failed");
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/exit_code"), "7");
  CAF_CHECK_EQUAL(join(got.lines()), join({"attempt 1", "attempt 2", "attempt 3"}));
  auto info = job_info(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "failed");
  CAF_CHECK_EQUAL(json_field(info, "/attempt"), "3");
  CAF_CHECK_EQUAL(json_field(info, "/retries"), "2");
  CAF_CHECK_EQUAL(json_field(info, "/exit_code"), "7");
  CAF_CHECK_EQUAL(join(log_lines(port, id)), join({"attempt 1", "attempt 2", "attempt 3"}));
  auto retrying = events_of_type(get(port, "/events?limit=1000").json(), "job.retrying");
  CAF_CHECK_EQUAL(retrying.size(), 2u);
}

CAF_TEST(a retried job that succeeds stops retrying) {
  // Fails on the first attempt only.
  auto id =
      submit_ok(port, {{"command", "echo try $TROUPE_JOB_ATTEMPT; test $TROUPE_JOB_ATTEMPT -ge 2"},
                       {"retries", 3}});
  reaper.add(id);
  auto info = wait_terminal(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "succeeded");
  CAF_CHECK_EQUAL(json_field(info, "/attempt"), "2");
  CAF_CHECK_EQUAL(join(log_lines(port, id)), join({"try 1", "try 2"}));
}

// 12 ------------------------------------------------------------------------

CAF_TEST(the job sees the submitter request id and its own id) {
  auto id = submit_ok(port,
                      {{"command", "echo \"$TROUPE_REQUEST_ID\"; echo \"$TROUPE_JOB_ID\"; "
                                   "env | grep '^TROUPE_' | cut -d= -f1 | sort"}},
                      {{"Content-Type", "application/json"}, {"X-Request-ID", "e2e-rid-123"}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  auto lines = got.lines();
  CAF_REQUIRE_GREATER_OR_EQUAL(lines.size(), 2u);
  CAF_CHECK_EQUAL(lines[0], "e2e-rid-123");
  CAF_CHECK_EQUAL(lines[1], id);
  // troupe's own TROUPE_* settings (the daemon runs with three) stay out.
  std::vector<std::string> names(lines.begin() + 2, lines.end());
  CAF_CHECK_EQUAL(join(names), join({"TROUPE_JOB_ATTEMPT", "TROUPE_JOB_ID", "TROUPE_NODE",
                                     "TROUPE_REQUEST_ID"}));
  CAF_CHECK_EQUAL(json_field(job_info(port, id), "/request_id"), "e2e-rid-123");
}

CAF_TEST(spec env and resource limits reach the process) {
  auto id = submit_ok(port, {{"command", "echo \"$GREETING\"; ulimit -n"},
                             {"env", {{"GREETING", "hi there"}}},
                             {"resources", {{"open_files", 64}}}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.lines()), join({"hi there", "64"}));
}

CAF_TEST(an argv command is not run through a shell) {
  auto id = submit_ok(port, {{"command", {"echo", "$HOME", "a;b"}}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.lines()), join({"$HOME a;b"}));
}

CAF_TEST(a partial last line is flushed at exit) {
  auto id = submit_ok(port, {{"command", "printf 'first\\nno-newline'"}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.lines()), join({"first", "no-newline"}));
}

CAF_TEST(what the main process leaves running in its group is killed) {
  // The shell exits at once; its background sleep must not outlive the job.
  auto id = submit_ok(port, {{"command", "sleep 60 & echo $!"}});
  reaper.add(id);
  auto got = follow(port, id);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
  CAF_REQUIRE_EQUAL(got.lines().size(), 1u);
  auto pid = static_cast<pid_t>(std::stol(got.lines().front()));
  // SIGKILL to processes that are not our children lands asynchronously.
  CAF_CHECK(poll_until([&] { return !process_alive(pid); }, 3s));
  CAF_CHECK_EQUAL(job_processes(id).size(), 0u);
}

// 9 (live part) -------------------------------------------------------------

// clang-format off
CAF_TEST(Last-Event-ID resumes a running job without gaps or duplicates) {
  // clang-format on
  // The job prints two lines, then waits for a file the test creates.
  auto id = submit_ok(port, {{"command", "echo l1; echo l2; "
                                         "while [ ! -e go ]; do sleep 0.05; done; "
                                         "echo l3; echo l4"},
                             {"timeout_seconds", 30}});
  reaper.add(id);
  {
    auto first = open_sse(port, "/jobs/" + id + "/stream?from_beginning=true");
    CAF_REQUIRE_EQUAL(first.status(), 200);
    auto ev = first.next_of_type("log", 20s);
    CAF_REQUIRE(ev.has_value());
    ev = first.next_of_type("log", 20s);
    CAF_REQUIRE(ev.has_value());
    CAF_CHECK_EQUAL(ev->id, "2");
  } // disconnect
  // Resume after line 1; from_beginning=false loses to Last-Event-ID.
  auto resumed =
      open_sse(port, "/jobs/" + id + "/stream?from_beginning=false", {{"Last-Event-ID", "1"}});
  CAF_REQUIRE_EQUAL(resumed.status(), 200);
  auto replayed = resumed.next_of_type("log", 10s);
  CAF_REQUIRE(replayed.has_value());
  CAF_CHECK_EQUAL(replayed->id, "2");
  CAF_CHECK_EQUAL(json_field(replayed->json(), "/line"), "l2");
  write_file(node.data_dir() + "/workspaces/" + id + "/go", "");
  followed start;
  start.logs.push_back(*replayed);
  auto got = read_until_complete(resumed, 20s, start);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.ids()), join({"2", "3", "4"}));
  CAF_CHECK_EQUAL(join(got.lines()), join({"l2", "l3", "l4"}));
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
}

CAF_TEST_FIXTURE_SCOPE_END()

// 4 -------------------------------------------------------------------------

CAF_TEST(dangerous archives are rejected and leave nothing behind) {
  // The data dir sits two levels deep in a scratch dir, so that `..` entries
  // land inside it (where the test can see them) before they reach $TMPDIR.
  scratch_dir scratch{"troupe-e2e-slip"};
  auto data = scratch.path() + "/outer/data";
  auto outside = scratch.path() + "/outside";
  fs::create_directories(data);
  fs::create_directories(outside);
  write_file(outside + "/target.txt", "original\n");
  e2e::daemon node{job_daemon(2, data)};
  auto port = node.port();
  job_reaper reaper;
  auto evil = unique_token("evil");
  auto tmp_base = fs::path{scratch.path()}.parent_path().string();
  // A harmless archive from the same writer is accepted: the rejections
  // below are about the entries, not the writer.
  {
    auto good = make_archive("tar.gz", {file_item("ci.sh", "#!/bin/sh\necho fine\n", 0755)});
    auto res = post_archive(port, "/jobs", good);
    CAF_REQUIRE_EQUAL(res.status, 201);
    auto id = json_field(res, "/job_id");
    reaper.add(id);
    auto info = wait_terminal(port, id);
    CAF_CHECK_EQUAL(json_field(info, "/status"), "succeeded");
    CAF_CHECK_EQUAL(join(log_lines(port, id)), join({"fine"}));
    // Nothing but that job's workspace from here on.
    auto ws = entries_of(data + "/workspaces");
    CAF_CHECK_EQUAL(join(ws), join({id}));
  }
  auto good_id = entries_of(data + "/workspaces");
  struct bad_case {
    std::string what;
    std::string format;
    std::vector<archive_item> items;
    std::string named; // the message must mention this
    std::string target = "/jobs";
  };
  auto file_ok = file_item("ok.txt", "fine\n");
  std::vector<bad_case> cases{
      {"zip slip one level", "zip", {file_ok, file_item("../" + evil + ".txt", "x")}, evil},
      {"tar slip to the scratch dir",
       "tar.gz",
       {file_ok, file_item("../../../../" + evil + ".txt", "x")},
       evil},
      {"zip slip through a sub dir",
       "zip",
       {file_item("sub/../../../" + evil + ".txt", "x")},
       evil},
      {"tar slip to TMPDIR", "tar.gz", {file_item("../../../../../" + evil + ".txt", "x")}, evil},
      {"tar absolute path",
       "tar.gz",
       {file_ok, file_item(outside + "/" + evil + ".txt", "x")},
       evil},
      {"zip absolute path", "zip", {file_item(outside + "/" + evil + ".txt", "x")}, evil},
      {"tar absolute symlink then a file through it",
       "tar.gz",
       {symlink_item("link", outside), file_item("link/" + evil + ".txt", "x")},
       "link"},
      {"tar relative symlink out then a file through it",
       "tar.gz",
       {symlink_item("link", "../../../../outside"), file_item("link/" + evil + ".txt", "x")},
       "link"},
      {"zip symlink then a file through it",
       "zip",
       {symlink_item("link", outside), file_item("link/" + evil + ".txt", "x")},
       "link"},
      {"tar symlink to a file then overwrite through it",
       "tar.gz",
       {symlink_item("target.txt", outside + "/target.txt"), file_item("target.txt", "pwned\n")},
       "target.txt"},
      // Each link looks inside on its own (x/y is the workspace root, x/z is
      // lexically x/y/../.. = the root), but through the file system x/z is
      // two levels above the workspace: only refusing to write through links
      // (or resolving them for real) stops this one.
      {"tar symlink chain then a file through it",
       "tar.gz",
       {{archive_item::dir, "x", "", 0755},
        symlink_item("x/y", ".."),
        symlink_item("x/z", "y/../.."),
        file_item("x/z/" + evil + ".txt", "x")},
       "x/"},
      {"zip symlink chain then a file through it",
       "zip",
       {{archive_item::dir, "x", "", 0755},
        symlink_item("x/y", ".."),
        symlink_item("x/z", "y/../.."),
        file_item("x/z/" + evil + ".txt", "x")},
       "x/"},
      // README: symlinks "written through" are rejected, even inside.
      {"tar file written through an inside symlink",
       "tar.gz",
       {{archive_item::dir, "real", "", 0755},
        symlink_item("alias", "real"),
        file_item("alias/inner.txt", "x")},
       "alias"},
      {"tar symlink pointing out", "tar.gz", {file_ok, symlink_item("etc", "/etc")}, "etc"},
      {"tar hardlink to a file outside",
       "tar.gz",
       {{archive_item::hardlink, "hl", outside + "/target.txt", 0644}, file_item("hl", "pwned\n")},
       "hl"},
      {"submit-async zip slip",
       "zip",
       {file_item("../../" + evil + ".txt", "x")},
       evil,
       "/submit-async"},
      {"submit zip slip", "zip", {file_item("../../" + evil + ".txt", "x")}, evil, "/submit"},
  };
  for (auto& c : cases) {
    CAF_MESSAGE("case: " << c.what);
    auto bytes = make_archive(c.format, c.items);
    auto res = post_archive(port, c.target, bytes);
    CAF_CHECK_EQUAL(res.status, 400);
    CAF_CHECK_EQUAL(json_field(res, "/error/code"), "invalid_archive");
    auto message = json_field(res, "/error/message");
    CAF_MESSAGE("answer: " << res.status << " " << message);
    CAF_CHECK(contains(message, c.named));
    if (!contains(message, c.named))
      CAF_MESSAGE("message does not name '" << c.named << "': " << message);
    if (res.status == 201 || res.status == 200) {
      auto id = json_field(res, "/job_id");
      if (!id.empty() && id.front() != '<')
        reaper.add(id);
    }
    // Nothing escaped, after each case (so a failure names the case).
    auto escaped = find_named(scratch.path(), evil);
    CAF_CHECK_EQUAL(join(escaped), "[]");
    CAF_CHECK_EQUAL(read_file(outside + "/target.txt"), "original\n");
    CAF_CHECK_EQUAL(join(entries_of(outside)), join({"target.txt"}));
    CAF_CHECK_EQUAL(join(entries_of(data + "/workspaces")), join(good_id));
  }
  // $TMPDIR itself (the scratch dir's parent) got nothing either.
  auto in_tmp = find_named(tmp_base, evil);
  std::vector<std::string> top_level;
  for (auto& p : in_tmp)
    if (fs::path{p}.parent_path() == fs::path{tmp_base})
      top_level.push_back(p);
  CAF_CHECK_EQUAL(join(top_level), "[]");
  for (auto& p : top_level) {
    std::error_code ignored;
    fs::remove_all(p, ignored);
  }
  // No job was stored for a rejected archive.
  auto list = get(port, "/jobs").json();
  CAF_CHECK_EQUAL(list["jobs"].size(), 1u);
  CAF_CHECK_EQUAL(get(port, "/healthz").status, 200);
}

// 9 (finished jobs and restarts) --------------------------------------------

namespace {

/// Resumes the stream of a finished five-line job after line 2.
void check_resume_after_two(uint16_t port, const std::string& id) {
  // Last-Event-ID wins over from_beginning in both directions.
  for (auto query : {"?from_beginning=true", "?from_beginning=false", ""}) {
    CAF_MESSAGE("query: '" << query << "'");
    auto got = follow(port, id, query, {{"Last-Event-ID", "2"}}, 10s);
    CAF_REQUIRE_EQUAL(got.status, 200);
    CAF_REQUIRE(got.complete.has_value());
    CAF_REQUIRE(!got.events.empty());
    CAF_CHECK_EQUAL(got.events.front().type, "log");
    CAF_CHECK_EQUAL(got.events.front().id, "3");
    CAF_CHECK_EQUAL(join(got.ids()), join({"3", "4", "5"}));
    CAF_CHECK_EQUAL(join(got.lines()), join({"line3", "line4", "line5"}));
    CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "succeeded");
    CAF_CHECK(got.ended);
  }
  // After the last line, only `complete`.
  auto tail = follow(port, id, "?from_beginning=true", {{"Last-Event-ID", "5"}}, 10s);
  CAF_REQUIRE(tail.complete.has_value());
  CAF_CHECK(tail.logs.empty());
  // Without Last-Event-ID, from_beginning=true replays everything.
  auto all = follow(port, id, "?from_beginning=true", {}, 10s);
  CAF_CHECK_EQUAL(join(all.ids()), join({"1", "2", "3", "4", "5"}));
}

} // namespace

// clang-format off
CAF_TEST(Last-Event-ID resumes a finished job also after a restart) {
  // clang-format on
  scratch_dir data{"troupe-e2e-resume"};
  std::string id;
  job_reaper reaper;
  {
    e2e::daemon node{job_daemon(2, data.path())};
    id = submit_ok(node.port(), {{"command", "for i in 1 2 3 4 5; do echo line$i; done"}});
    reaper.add(id);
    auto info = wait_terminal(node.port(), id);
    CAF_REQUIRE_EQUAL(json_field(info, "/status"), "succeeded");
    check_resume_after_two(node.port(), id);
    node.terminate();
    auto status = node.wait_exit(20s);
    CAF_REQUIRE(status.has_value());
    CAF_CHECK_EQUAL(status->to_string(), "exit code 0");
  }
  e2e::daemon again{job_daemon(2, data.path())};
  CAF_CHECK_EQUAL(json_field(job_info(again.port(), id), "/status"), "succeeded");
  check_resume_after_two(again.port(), id);
}

CAF_TEST(a graceful shutdown stops a running job and marks it lost) {
  scratch_dir data{"troupe-e2e-term"};
  std::string id;
  job_reaper reaper;
  {
    e2e::daemon node{job_daemon(2, data.path())};
    id = submit_ok(node.port(), {{"command", "echo started; sleep 60"}});
    reaper.add(id);
    auto stream = open_sse(node.port(), "/jobs/" + id + "/stream?from_beginning=true");
    CAF_REQUIRE(stream.next_of_type("log", 20s).has_value());
    CAF_CHECK(!job_processes(id).empty());
    node.terminate();
    auto status = node.wait_exit(20s);
    CAF_REQUIRE(status.has_value());
    CAF_CHECK_EQUAL(status->to_string(), "exit code 0");
    CAF_CHECK(poll_until([&] { return job_processes(id).empty(); }, 3s));
  }
  e2e::daemon again{job_daemon(2, data.path())};
  auto info = wait_job(
      again.port(), id, [](const std::string& s) { return s != "running"; }, 10s);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "lost");
  CAF_CHECK_EQUAL(join(log_lines(again.port(), id)), join({"started"}));
}

// 10 ------------------------------------------------------------------------

// clang-format off
CAF_TEST(a job running at kill -9 is lost and its process killed on restart) {
  // clang-format on
  scratch_dir data{"troupe-e2e-kill9"};
  std::string id;
  job_reaper reaper;
  std::vector<pid_t> orphans;
  {
    e2e::daemon node{job_daemon(2, data.path())};
    id = submit_ok(node.port(), {{"command", "echo started; sleep 60"}});
    reaper.add(id);
    auto stream = open_sse(node.port(), "/jobs/" + id + "/stream?from_beginning=true");
    auto first = stream.next_of_type("log", 20s);
    CAF_REQUIRE(first.has_value());
    CAF_CHECK_EQUAL(json_field(first->json(), "/line"), "started");
    orphans = job_processes(id);
    CAF_CHECK(!orphans.empty());
    node.kill9();
    auto status = node.wait_exit(20s);
    CAF_REQUIRE(status.has_value());
    CAF_CHECK(status->signaled && status->value == SIGKILL);
  }
  // Whether the orphan outlived the daemon is not the contract; report it.
  size_t survivors = 0;
  for (auto pid : orphans)
    survivors += process_alive(pid) ? 1 : 0;
  CAF_MESSAGE(survivors << " of " << orphans.size() << " job processes survived the kill -9");
  e2e::daemon again{job_daemon(2, data.path())};
  auto port = again.port();
  auto info = wait_job(
      port, id, [](const std::string& s) { return s != "running"; }, 20s);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "lost");
  CAF_CHECK(info["reason"].is_string());
  CAF_CHECK_EQUAL(json_field(info, "/success"), "false");
  // The orphans are killed at start-up, before the job is marked lost; allow
  // a moment for SIGKILL to be delivered to processes that are not our
  // children.
  CAF_CHECK(poll_until([&] { return job_processes(id).empty(); }, 3s));
  for (auto pid : orphans)
    CAF_CHECK(!process_alive(pid));
  // The line written before the crash is still served.
  CAF_CHECK_EQUAL(join(log_lines(port, id)), join({"started"}));
  auto got = follow(port, id, "?from_beginning=true", {}, 10s);
  CAF_REQUIRE(got.complete.has_value());
  CAF_CHECK_EQUAL(join(got.lines()), join({"started"}));
  CAF_CHECK_EQUAL(join(got.ids()), join({"1"}));
  CAF_CHECK_EQUAL(json_field(got.complete->json(), "/status"), "lost");
}
