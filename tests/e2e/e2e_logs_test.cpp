#define CAF_SUITE e2e_logs
#include "support/dsl.hpp"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include "support/capture_server.hpp"
#include "support/e2e.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// Every value pushed to the capture server for one job instance, in push
/// order: {line, labels, metadata}.
struct pushed {
  std::string ts;
  std::string line;
  json labels;
  json metadata;
};

std::vector<pushed> pushed_for(const test::capture_server& srv, const std::string& instance) {
  std::vector<pushed> out;
  for (auto& req : srv.requests()) {
    if (req.answered / 100 != 2)
      continue; // refused pushes do not count as delivered
    auto body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.contains("streams"))
      continue;
    for (auto& s : body["streams"]) {
      if (s["stream"].value("instance", "") != instance)
        continue;
      for (auto& v : s["values"])
        out.push_back({v[0].get<std::string>(), v[1].get<std::string>(), s["stream"],
                       v.size() > 2 ? v[2] : json::object()});
    }
  }
  return out;
}

std::string submit(uint16_t port, const std::string& command, const std::string& rid = {}) {
  e2e::header_list headers{{"Content-Type", "application/json"}};
  if (!rid.empty())
    headers.emplace_back("X-Request-ID", rid);
  auto res = e2e::request(port, "POST", "/jobs", headers,
                          json{{"name", "counter"}, {"command", command}}.dump());
  CAF_REQUIRE_EQUAL(res.status, 201);
  return res.json()["job_id"].get<std::string>();
}

/// Waits (bounded) until the server received `n` values of `instance`.
std::vector<pushed> wait_pushed(const test::capture_server& srv, const std::string& instance,
                                size_t n, std::chrono::seconds timeout = 60s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto got = pushed_for(srv, instance);
    if (got.size() >= n || std::chrono::steady_clock::now() > deadline)
      return got;
    srv.wait_for(srv.count() + 1, 200ms);
  }
}

/// Checks lines "1".."n", each exactly once and in order.
void check_numbered(const std::vector<pushed>& got, size_t n) {
  CAF_REQUIRE_EQUAL(got.size(), n);
  size_t wrong = 0;
  for (size_t i = 0; i < n; ++i)
    if (got[i].line != std::to_string(i + 1))
      ++wrong;
  CAF_CHECK_EQUAL(wrong, 0u);
}

e2e::daemon_options with_loki(const std::string& url, e2e::environment extra = {}) {
  e2e::daemon_options opts;
  opts.env = {{"TROUPE_LOGS__LOKI__URL", url},
              {"TROUPE_LOGS__LOKI__BATCH_WAIT", "100ms"},
              {"TROUPE_LOGS__LOKI__BACKOFF_INITIAL", "50ms"},
              {"TROUPE_LOGS__LOKI__BACKOFF_MAX", "200ms"},
              {"TROUPE_LOGS__LOKI__BREAKER_COOLDOWN", "200ms"},
              {"TROUPE_LOGS__NAMESPACE", "e2e"}};
  opts.env.insert(opts.env.end(), extra.begin(), extra.end());
  return opts;
}

} // namespace

CAF_TEST(ten thousand job lines reach Loki once in order with labels and metadata) {
  test::capture_server loki;
  e2e::daemon node{with_loki(loki.url())};
  auto id = submit(node.port(), "seq 1 10000", "rid-e2e-1");
  auto got = wait_pushed(loki, id, 10000);
  check_numbered(got, 10000);
  auto& first = got.front();
  CAF_CHECK_EQUAL(first.labels["service"], "counter");
  CAF_CHECK_EQUAL(first.labels["namespace"], "e2e");
  CAF_CHECK_EQUAL(first.labels["source"], "job");
  CAF_CHECK_EQUAL(first.labels["level"], "info");
  CAF_CHECK(!first.labels.value("node", "").empty());
  CAF_CHECK(!first.labels.contains("request_id"));
  CAF_CHECK_EQUAL(first.metadata.value("request_id", ""), "rid-e2e-1");
  CAF_CHECK(first.ts.find_first_not_of("0123456789") == std::string::npos);
  CAF_CHECK(first.ts.size() >= 19); // nanoseconds since the epoch, as a string
  auto reqs = loki.requests();
  CAF_CHECK_EQUAL(reqs.front().target, "/loki/api/v1/push");
  CAF_CHECK_EQUAL(reqs.front().headers["content-type"], "application/json");
  // Batches flush at 100 entries.
  for (auto& r : reqs) {
    size_t values = 0;
    auto body = json::parse(r.body); // (a range over a temporary's member dangles)
    for (auto& s : body["streams"])
      values += s["values"].size();
    CAF_CHECK(values <= 100);
  }
}

CAF_TEST(errors and rate limits delay lines but lose none and duplicate none) {
  test::capture_server loki;
  loki.script({500, {}, "down"}, 3);
  loki.script({429, {{"Retry-After", "1"}}, ""}, 2);
  loki.script({503, {}, ""}, 2);
  e2e::daemon node{with_loki(loki.url(), {{"TROUPE_LOGS__LOKI__GZIP", "false"}})};
  auto id = submit(node.port(), "seq 1 2000");
  check_numbered(wait_pushed(loki, id, 2000), 2000);
  auto line = node.wait_for_line(std::regex{"Loki push failed"}, 1s);
  CAF_CHECK(line.has_value());
}

CAF_TEST(the outbox survives kill - 9 while Loki is down) {
  test::capture_server loki;
  loki.set_default({503, {}, ""});
  std::string data_dir;
  std::string id;
  {
    e2e::daemon node{with_loki(loki.url())};
    node.keep_data_dir();
    data_dir = node.data_dir();
    id = submit(node.port(), "seq 1 500");
    // The job ends (its lines are committed) while every push fails.
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto job = e2e::get(node.port(), "/jobs/" + id).json();
      if (job["status"] == "succeeded")
        break;
      loki.wait_for(loki.count() + 1, 100ms);
    }
    CAF_REQUIRE(pushed_for(loki, id).empty());
    node.kill9();
    node.wait_exit();
  }
  loki.set_default({204, {}, ""});
  e2e::daemon_options opts = with_loki(loki.url());
  opts.data_dir = data_dir;
  e2e::daemon again{opts};
  auto got = wait_pushed(loki, id, 500);
  check_numbered(got, 500);
  std::error_code ec;
  std::filesystem::remove_all(data_dir, ec);
}

CAF_TEST(logs are queried by request id and followed live) {
  e2e::daemon node;
  auto id = submit(node.port(), "echo first; echo second >&2", "abc");
  // Wait for the job to end, then query its lines by request id.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  std::vector<json> lines;
  while (std::chrono::steady_clock::now() < deadline) {
    auto res = e2e::get(node.port(), "/logs?request_id=abc&source=job");
    CAF_REQUIRE_EQUAL(res.status, 200);
    lines.clear();
    std::istringstream in{res.body};
    for (std::string l; std::getline(in, l);)
      lines.push_back(json::parse(l));
    if (lines.size() >= 2)
      break;
    e2e::get(node.port(), "/jobs/" + id);
  }
  CAF_REQUIRE_EQUAL(lines.size(), 2u);
  CAF_CHECK_EQUAL(lines[0]["line"], "first");
  CAF_CHECK_EQUAL(lines[0]["level"], "info");
  CAF_CHECK_EQUAL(lines[1]["line"], "second");
  CAF_CHECK_EQUAL(lines[1]["level"], "error");
  CAF_CHECK_EQUAL(lines[1]["labels"]["instance"], id);
  CAF_CHECK_EQUAL(lines[1]["request_id"], "abc");
  // troupe's own line about that request carries the id too.
  auto own = e2e::get(node.port(), "/logs?request_id=abc&service=troupe");
  CAF_CHECK(own.body.find("POST /jobs 201") != std::string::npos);
  // Following: a new matching line arrives as an SSE event.
  auto follow = e2e::open_sse(node.port(), "/logs?follow=true&service=late");
  CAF_REQUIRE_EQUAL(follow.status(), 200);
  e2e::request(node.port(), "POST", "/jobs", {{"Content-Type", "application/json"}},
               json{{"name", "late"}, {"command", "echo arrived"}}.dump());
  auto ev = follow.next_of_type("log", 20s);
  CAF_REQUIRE(ev.has_value());
  auto data = ev->json();
  CAF_CHECK_EQUAL(data["line"], "arrived");
  auto bad = e2e::get(node.port(), "/logs?since=yesterday");
  CAF_CHECK_EQUAL(bad.status, 400);
}

CAF_TEST(
    the local log store is kept under logs.max_bytes and job logs start at the oldest kept line) {
  e2e::daemon_options opts;
  opts.env = {{"TROUPE_LOGS__MAX_BYTES", "1MiB"}, {"TROUPE_JOBS__SWEEP_INTERVAL", "200ms"}};
  e2e::daemon node{opts};
  // About 6 MiB of output in 60,000 numbered lines.
  auto id =
      submit(node.port(),
             "awk 'BEGIN { s = sprintf(\"%090d\", 0); for (i = 1; i <= 60000; i++) print i, s }'");
  auto trimmed = node.wait_for_line(std::regex{"log retention: removed lines"}, 60s);
  if (!trimmed)
    CAF_FAIL("no log retention line: " << node.output_text());
  std::string status;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (status != "succeeded" && std::chrono::steady_clock::now() < deadline)
    status = e2e::get(node.port(), "/jobs/" + id).json().value("status", "");
  CAF_REQUIRE_EQUAL(status, "succeeded");
  // Retention runs until the table is under the cap: the log keeps its
  // newest lines, in order, up to the last one.
  // Until it is, a download races the trimming of its own front (a gap is
  // then what retention did): two downloads that agree say it is done.
  std::vector<std::string> lines;
  std::vector<std::string> previous;
  CAF_CHECK(e2e::poll_until(
      [&] {
        auto body = e2e::get(node.port(), "/jobs/" + id + "/logs", {}, 60s).body;
        previous = std::move(lines);
        lines.clear();
        for (size_t pos = 0, nl; (nl = body.find('\n', pos)) != std::string::npos; pos = nl + 1)
          lines.push_back(body.substr(pos, body.find(' ', pos) - pos));
        return !lines.empty() && lines.size() < 20000 && lines == previous;
      },
      60s));
  CAF_REQUIRE(!lines.empty());
  CAF_CHECK_EQUAL(lines.back(), "60000");
  auto first = std::stoul(lines.front());
  CAF_CHECK_GREATER(first, 40000u);
  CAF_CHECK_EQUAL(lines.size(), 60000u - first + 1); // no gap after the oldest kept line
  // The SSE replay from the beginning starts at the oldest kept line too.
  auto stream = e2e::open_sse(node.port(), "/jobs/" + id + "/stream?from_beginning=true");
  CAF_REQUIRE_EQUAL(stream.status(), 200);
  auto ev = stream.next_of_type("log", 20s);
  CAF_REQUIRE(ev.has_value());
  CAF_CHECK_GREATER_OR_EQUAL(std::stoul(ev->id), first);
}

CAF_TEST(following from Last - Event - ID replays a backlog larger than the SSE queue) {
  e2e::daemon_options opts;
  opts.env = {{"TROUPE_HTTP__SSE_QUEUE_LIMIT", "64"}};
  e2e::daemon node{opts};
  auto id = submit(node.port(), "seq 1 3000");
  std::string status;
  CAF_REQUIRE(e2e::poll_until(
      [&] {
        status = e2e::get(node.port(), "/jobs/" + id).json().value("status", "");
        return status == "succeeded";
      },
      60s));
  // 3000 stored matches, the client reading at its own pace: the replay
  // waits for it instead of overflowing the 64-event queue.
  auto follow =
      e2e::open_sse(node.port(), "/logs?follow=true&instance=" + id, {{"Last-Event-ID", "0"}});
  CAF_REQUIRE_EQUAL(follow.status(), 200);
  size_t n = 0;
  std::string last;
  while (n < 3000) {
    auto ev = follow.next_of_type("log", 20s);
    if (!ev)
      break;
    last = ev->json().value("line", "");
    if (last != std::to_string(n + 1))
      break;
    ++n;
  }
  CAF_CHECK_EQUAL(n, 3000u);
  CAF_CHECK_EQUAL(last, "3000");
  // /events replays the same way: more stored events than the queue holds.
  for (int i = 0; i < 40; ++i)
    submit(node.port(), "true");
  uint64_t newest = 0;
  CAF_REQUIRE(e2e::poll_until(
      [&] {
        auto page = e2e::get(node.port(), "/events?since=0&limit=1000").json();
        size_t done = 0;
        for (auto& ev : page["events"])
          if (ev.value("type", "") == "job.succeeded")
            ++done;
        newest = page.value("next_since", uint64_t{0});
        return done == 41;
      },
      60s));
  CAF_REQUIRE_GREATER(newest, 64u);
  auto events = e2e::open_sse(node.port(), "/events", {{"Last-Event-ID", "0"}});
  CAF_REQUIRE_EQUAL(events.status(), 200);
  uint64_t expect = 1;
  while (expect <= newest) {
    auto ev = events.next(20s);
    if (!ev || ev->id != std::to_string(expect))
      break;
    ++expect;
  }
  CAF_CHECK_EQUAL(expect, newest + 1); // every event once, in order
  // A Last-Event-ID past the newest event resumes from the newest (it used
  // to wrap around and spin); the next event arrives live.
  auto far = e2e::open_sse(node.port(), "/events", {{"Last-Event-ID", "18446744073709551615"}});
  CAF_REQUIRE_EQUAL(far.status(), 200);
  submit(node.port(), "true");
  auto next = far.next(20s);
  CAF_REQUIRE(next.has_value());
  CAF_CHECK_EQUAL(next->id, std::to_string(newest + 1));
}

CAF_TEST(a burst of output keeps the daemon heap bounded) {
  // 400,000 lines of 100 bytes (40 MB): if anything buffered the burst, the
  // heap would grow by tens of MB; credit-based reading keeps it flat.
  e2e::daemon node;
  auto id =
      submit(node.port(),
             "awk 'BEGIN { s = sprintf(\"%099d\", 0); for (i = 0; i < 400000; i++) print s }'");
  auto anon_kb = [&] {
    std::ifstream in("/proc/" + std::to_string(node.pid()) + "/status");
    for (std::string l; std::getline(in, l);)
      if (l.rfind("RssAnon:", 0) == 0)
        return std::stol(l.substr(8));
    return 0L;
  };
  long peak = 0;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  std::string status;
  while (std::chrono::steady_clock::now() < deadline) {
    peak = std::max(peak, anon_kb());
    status = e2e::get(node.port(), "/jobs/" + id).json().value("status", "");
    if (status == "succeeded" || status == "failed")
      break;
  }
  CAF_REQUIRE_EQUAL(status, "succeeded");
  CAF_MESSAGE("peak anonymous RSS during the burst: " << peak / 1024 << " MiB");
  if (e2e::heap_bounds_checked)
    CAF_CHECK_LESS(peak, 96L * 1024);
  // Downloading the 40 MB log streams it in pages: the heap does not grow by
  // the size of the log (it did when the body was built in memory).
  auto before = anon_kb();
  std::atomic<bool> downloading{true};
  std::atomic<long> download_peak{before};
  std::thread sampler{[&] {
    while (downloading) {
      download_peak = std::max(download_peak.load(), anon_kb());
      std::this_thread::sleep_for(1ms); // the sampling period
    }
  }};
  auto logs = e2e::get(node.port(), "/jobs/" + id + "/logs", {}, 60s);
  downloading = false;
  sampler.join();
  CAF_CHECK_EQUAL(logs.status, 200);
  CAF_CHECK_EQUAL(logs.header("content-type").value_or(""), "text/plain; charset=utf-8");
  CAF_CHECK_EQUAL(std::count(logs.body.begin(), logs.body.end(), '\n'), 400000);
  CAF_MESSAGE("anonymous RSS growth while downloading the log: " << (download_peak - before) / 1024
                                                                 << " MiB");
  if (e2e::heap_bounds_checked)
    CAF_CHECK_LESS(download_peak - before, 16L * 1024);
}
