#define CAF_SUITE e2e_submit

#include "support/dsl.hpp"

#include "support/e2e.hpp"
#include "support/files.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using namespace troupe::e2e;
using troupe::test::read_file;
using troupe::test::write_file;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// -- set-up and helpers -------------------------------------------------------

daemon_options submit_daemon(environment extra = {}) {
  daemon_options opts;
  opts.env = {{"TROUPE_JOBS__CONCURRENCY", "2"}, {"TROUPE_JOBS__CANCEL_GRACE", "2s"}};
  opts.env.insert(opts.env.end(), extra.begin(), extra.end());
  return opts;
}

std::string unique_token(const std::string& prefix) {
  std::random_device rd;
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 1000000);
}

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

bool is_terminal(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "cancelled" ||
         status == "timed_out" || status == "lost";
}

json wait_terminal(uint16_t port, const std::string& id) {
  json last;
  poll_until([&] {
    last = get(port, "/jobs/" + id).json();
    return last.is_object() && is_terminal(last.value("status", ""));
  });
  return last;
}

/// Entries of a directory (none if it does not exist).
std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{dir, ec})
    out.push_back(entry.path().filename().string());
  return out;
}

/// Runs a shell command that must succeed.
void shell(const std::string& cmd) {
  auto rc = std::system(cmd.c_str());
  if (rc != 0)
    CAF_FAIL("command failed (" << rc << "): " << cmd);
}

const std::string boundary = "----troupe-e2e-submit-4b1e";

header_list multipart_headers() {
  return {{"Content-Type", "multipart/form-data; boundary=" + boundary}};
}

/// A multipart body with the archive as its `file` field.
std::string archive_form(const std::string& archive) {
  return "--" + boundary +
         "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.bin\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         archive + "\r\n--" + boundary + "--\r\n";
}

/// A project directory with a ci.sh printing a marker.
struct project {
  scratch_dir dir{"troupe-e2e-submit"};
  std::string src = dir.path() + "/src";
  std::string marker = unique_token("submit-marker");

  project() {
    write_file(src + "/ci.sh", "#!/bin/sh\necho " + marker + "\n", 0755);
    write_file(src + "/data.txt", "some data\n");
  }

  /// `tar cf - . | <compressor>` into a file; its bytes.
  std::string packed(const std::string& compressor, const std::string& name) const {
    auto out = dir.path() + "/" + name;
    shell("tar cf - -C '" + src + "' . | " + compressor + " > '" + out + "'");
    return read_file(out);
  }
};

struct fixture {
  e2e::daemon node{submit_daemon()};
  uint16_t port = node.port();
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(e2e_submit_tests, fixture)

CAF_TEST(env values are redacted wherever troupe shows the job but reach the job) {
  auto secret = unique_token("s3cret-value");
  json spec{{"name", "redaction"},
            {"command", R"(printf '%s\n' "$API_KEY" | tr a-z A-Z)"},
            {"env", {{"API_KEY", secret}, {"OTHER", "plain"}}}};
  auto res = request(port, "POST", "/jobs", {{"Content-Type", "application/json"}}, spec.dump());
  CAF_REQUIRE_EQUAL(res.status, 201);
  auto id = json_field(res, "/job_id");
  auto info = wait_terminal(port, id);
  CAF_CHECK_EQUAL(json_field(info, "/status"), "succeeded");
  // The job saw the value: it printed it upper-cased.
  auto log = get(port, "/jobs/" + id + "/logs");
  CAF_CHECK_EQUAL(log.body, upper(secret) + "\n");
  // GET /jobs/{id}: names kept, values redacted.
  CAF_CHECK_EQUAL(json_field(info, "/spec/env/API_KEY"), "<redacted>");
  CAF_CHECK_EQUAL(json_field(info, "/spec/env/OTHER"), "<redacted>");
  // The harness submits with its admin token, named e2e.
  CAF_CHECK_EQUAL(json_field(info, "/submitted_by"), "e2e");
  CAF_CHECK(!contains(info.dump(), secret));
  // GET /jobs.
  auto list = get(port, "/jobs");
  CAF_CHECK_EQUAL(list.status, 200);
  CAF_CHECK(contains(list.body, "\"API_KEY\":\"<redacted>\""));
  CAF_CHECK(!contains(list.body, secret));
  // Events, as JSON and as the replayed SSE stream, and the job's stream.
  CAF_REQUIRE(wait_for_event(port, "job.succeeded").has_value());
  auto events = get(port, "/events?since=0&limit=1000");
  CAF_CHECK(!events_of_type(events.json(), "job.queued").empty());
  CAF_CHECK(!contains(events.body, secret));
  auto sse = open_sse(port, "/events", {{"Last-Event-ID", "0"}});
  CAF_REQUIRE_EQUAL(sse.status(), 200);
  auto replayed = sse.next_of_type("job.succeeded");
  CAF_REQUIRE(replayed.has_value());
  for (auto& ev : sse.received())
    CAF_CHECK(!contains(ev.data, secret));
  auto stream = open_sse(port, "/jobs/" + id + "/stream?from_beginning=true");
  CAF_REQUIRE(stream.next_of_type("complete").has_value());
  for (auto& ev : stream.received())
    CAF_CHECK(!contains(ev.data, secret));
  // troupe's own log lines: on its output and in the log store.
  CAF_CHECK(!contains(node.output_text(), secret));
  auto own = get(port, "/logs?source=troupe&limit=1000");
  CAF_CHECK_EQUAL(own.status, 200);
  CAF_CHECK(!contains(own.body, secret));
}

CAF_TEST(an xz archive needing too much decoder memory is refused and leaves nothing) {
  project proj;
  // hc3: the default match finder would first zero gigabytes of tables.
  auto xz = proj.packed("xz -T1 --lzma2=dict=1GiB,mf=hc3 -c", "p.tar.xz");
  auto res = request(port, "POST", "/jobs", multipart_headers(), archive_form(xz));
  CAF_CHECK_EQUAL(res.status, 400);
  CAF_CHECK_EQUAL(json_field(res, "/error/code"), "invalid_archive");
  CAF_CHECK_EQUAL(json_field(res, "/error/field"), "file");
  auto message = json_field(res, "/error/message");
  CAF_MESSAGE(message);
  CAF_CHECK(contains(message, "1 GiB (1073741824 bytes)"));
  CAF_CHECK(contains(message, "256 MiB (268435456 bytes)"));
  CAF_CHECK(contains(message, "jobs.max_archive_memory_bytes"));
  CAF_CHECK_EQUAL(entries_of(node.data_dir() + "/workspaces").size(), 0u);
  CAF_CHECK_EQUAL(json_field(get(port, "/jobs").json(), "/jobs"), "[]");
  // The same project with xz's default dictionary runs.
  auto fine = proj.packed("xz -T1 -c", "ok.tar.xz");
  auto ok = request(port, "POST", "/jobs", multipart_headers(), archive_form(fine));
  CAF_REQUIRE_EQUAL(ok.status, 201);
  auto done = wait_terminal(port, json_field(ok, "/job_id"));
  CAF_CHECK_EQUAL(json_field(done, "/status"), "succeeded");
}

CAF_TEST(form and untyped bodies create no job) {
  scratch_dir dir{"troupe-e2e-form"};
  auto touched = dir.path() + "/touched";
  auto body = json{{"command", "touch '" + touched + "'"}}.dump();
  for (auto type : {"application/x-www-form-urlencoded", "text/plain", ""}) {
    CAF_MESSAGE("Content-Type: " << type);
    header_list headers;
    if (*type != '\0')
      headers.emplace_back("Content-Type", type);
    auto res = request(port, "POST", "/jobs", headers, body);
    CAF_CHECK_EQUAL(res.status, 415);
    CAF_CHECK_EQUAL(json_field(res, "/error/code"), "unsupported_media_type");
    auto message = json_field(res, "/error/message");
    CAF_CHECK(contains(message, "application/json"));
    CAF_CHECK(contains(message, "application/yaml"));
    CAF_CHECK(contains(message, "multipart/form-data"));
  }
  auto seed = request(port, "POST", "/submit-async",
                      {{"Content-Type", "application/x-www-form-urlencoded"}}, body);
  CAF_CHECK_EQUAL(seed.status, 415);
  CAF_CHECK_EQUAL(json_field(get(port, "/jobs").json(), "/jobs"), "[]");
  CAF_CHECK(!fs::exists(touched));
}

CAF_TEST_FIXTURE_SCOPE_END()

namespace {

struct one_extraction {
  e2e::daemon node{submit_daemon({{"TROUPE_JOBS__MAX_CONCURRENT_EXTRACTIONS", "1"}})};
  uint16_t port = node.port();
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(e2e_submit_one_extraction, one_extraction)

CAF_TEST(many concurrent uploads with one extraction at a time all succeed) {
  project proj;
  auto tgz = proj.packed("gzip -c", "p.tar.gz");
  auto form = archive_form(tgz);
  constexpr size_t uploads = 12;
  std::vector<response> answers(uploads);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < uploads; ++i)
    clients.emplace_back(
        [&, i] { answers[i] = request(port, "POST", "/jobs", multipart_headers(), form, 60s); });
  for (auto& t : clients)
    t.join();
  std::vector<std::string> ids;
  for (auto& res : answers) {
    CAF_CHECK_EQUAL(res.status, 201);
    if (res.status == 201)
      ids.push_back(json_field(res, "/job_id"));
    else
      CAF_MESSAGE(res.to_string());
  }
  CAF_CHECK_EQUAL(ids.size(), uploads);
  for (auto& id : ids) {
    auto done = wait_terminal(port, id);
    CAF_CHECK_EQUAL(json_field(done, "/status"), "succeeded");
    CAF_CHECK_EQUAL(get(port, "/jobs/" + id + "/logs").body, proj.marker + "\n");
  }
}

CAF_TEST_FIXTURE_SCOPE_END()
