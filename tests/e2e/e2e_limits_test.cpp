#define CAF_SUITE e2e_limits
#include "support/dsl.hpp"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "persistence/jobs.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "support/e2e.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// Writes `n` ended job records straight into a data dir's store (as many
/// jobs would leave); ids in key order. `labels(i)` labels the i-th.
std::vector<std::string>
put_jobs(const std::string& data_dir, size_t n,
         const std::function<std::map<std::string, std::string>(size_t)>& labels) {
  std::vector<std::string> ids(n);
  for (auto& id : ids)
    id = persistence::new_job_id();
  std::sort(ids.begin(), ids.end());
  auto env = persistence::lmdb_env::open(data_dir + "/store", 4ull << 30);
  persistence::txn t{*env, false};
  for (size_t i = 0; i < n; ++i) {
    persistence::job_record r;
    r.id = ids[i];
    r.name = "bulk-" + std::to_string(i);
    r.status = persistence::job_status::succeeded;
    r.success = true;
    r.exit_code = 0;
    r.spec = R"({"command":"true"})";
    r.queued_at = r.started_at = r.ended_at = now_ns();
    r.labels = labels(i);
    t.put("jobs", r.id, persistence::encode(r));
  }
  t.commit();
  return ids;
}

/// Anonymous resident memory of a process (its heap), in KiB.
long anon_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string l; std::getline(in, l);)
    if (l.rfind("RssAnon:", 0) == 0)
      return std::stol(l.substr(8));
  return 0;
}

/// A 503 from a full read queue: code `busy` and a Retry-After.
bool is_busy(const e2e::response& res) {
  return res.status == 503 && e2e::json_field(res, "/error/code") == "busy" &&
         res.header("retry-after").has_value();
}

} // namespace

CAF_TEST(a sparse job filter pages through bounded pages) {
  e2e::scratch_dir data{"troupe-limits"};
  // 25,000 jobs; two carry the label asked for, far apart.
  auto ids = put_jobs(data.path(), 25'000, [](size_t i) {
    std::map<std::string, std::string> l{{"kind", "bulk"}};
    if (i == 100 || i == 24'000)
      l["rare"] = "yes";
    return l;
  });
  e2e::daemon_options opts;
  opts.data_dir = data.path();
  e2e::daemon node{opts};
  // Newest first, 10,000 records looked at per page: the first page finds
  // job 24,000, the second none (an empty page that still goes on), the
  // third job 100 and ends.
  std::vector<size_t> sizes;
  std::vector<std::string> found;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto res = e2e::get(node.port(), "/jobs?label=rare:yes&limit=10" +
                                         (cursor.empty() ? "" : "&cursor=" + cursor));
    CAF_REQUIRE_EQUAL(res.status, 200);
    auto body = res.json();
    sizes.push_back(body["jobs"].size());
    for (auto& job : body["jobs"])
      found.push_back(job.value("id", ""));
    if (body["next_cursor"].is_null())
      break;
    cursor = body["next_cursor"].get<std::string>();
  }
  CAF_CHECK_EQUAL(sizes, (std::vector<size_t>{1, 0, 1}));
  CAF_CHECK_EQUAL(found, (std::vector<std::string>{ids[24'000], ids[100]}));
  // `limit` still ends a page first when matches are dense.
  auto dense = e2e::get(node.port(), "/jobs?label=kind:bulk&limit=1000").json();
  CAF_CHECK_EQUAL(dense["jobs"].size(), 1000u);
  CAF_CHECK_EQUAL(e2e::json_field(dense, "/next_cursor"), ids[25'000 - 1000]);
}

CAF_TEST(GET logs and GET jobs answer while huge logs are scanned) {
  e2e::scratch_dir data{"troupe-limits"};
  auto ids = put_jobs(data.path(), 50, [](size_t) { return std::map<std::string, std::string>{}; });
  auto big = ids.back();
  auto wide = ids.front();
  {
    // 1,000,000 stored lines of one job, in batches as a job writes them.
    auto env = persistence::lmdb_env::open(data.path() + "/store", 4ull << 30);
    persistence::txn t{*env, false};
    for (uint64_t first = 1; first <= 1'000'000; first += 10'000) {
      persistence::log_op_builder b{log_labels{"huge", big, "job", "", "default", "n"}};
      for (uint64_t i = first; i < first + 10'000; ++i)
        b.add(now_ns(), 1, "info", "line " + std::to_string(i) + std::string(40, '.'));
      persistence::append_log_op(t, persistence::log_key(big, first), b.take());
    }
    // And 200 lines of 60 KB (12 MB) of another job.
    persistence::log_op_builder b{log_labels{"wide", wide, "job", "", "default", "n"}};
    for (int i = 1; i <= 200; ++i)
      b.add(now_ns(), 1, "info", std::to_string(i) + std::string(60'000, '.'));
    persistence::append_log_op(t, persistence::log_key(wide, 1), b.take());
    t.commit();
  }
  e2e::daemon_options opts;
  opts.data_dir = data.path();
  e2e::daemon node{opts};
  // A page of long lines ends at about 8 MiB, whatever the limit; the next
  // page goes on where it ended.
  // (Its lines come after the million others: the first pages, 100,000
  // lines looked at each, are empty.)
  size_t wide_lines = 0;
  std::string after = "0";
  for (int page = 0; page < 30 && !after.empty(); ++page) {
    auto res = e2e::get(node.port(), "/logs?instance=" + wide + "&limit=10000&after=" + after);
    CAF_REQUIRE_EQUAL(res.status, 200);
    auto n = static_cast<size_t>(std::count(res.body.begin(), res.body.end(), '\n'));
    if (wide_lines == 0 && n > 0)
      CAF_CHECK_LESS(n, 200u);
    CAF_CHECK_LESS_OR_EQUAL(res.body.size(), (8u << 20) + 70'000);
    wide_lines += n;
    after =
        res.header("x-more").value_or("") == "true" ? res.header("x-next-after").value_or("") : "";
  }
  CAF_CHECK_EQUAL(wide_lines, 200u);
  // Clients paging through the whole table with a filter nothing matches:
  // every page looks at 100,000 lines.
  std::atomic<bool> stop{false};
  std::atomic<int> pages{0};
  std::atomic<int> busy{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> scanners;
  for (int c = 0; c < 3; ++c)
    scanners.emplace_back([&] {
      std::string after = "0";
      while (!stop) {
        auto res = e2e::get(node.port(), "/logs?service=nothing&after=" + after, {}, 30s);
        if (is_busy(res)) {
          ++busy;
          continue;
        }
        if (res.status != 200 || !res.body.empty()) {
          ++failures;
          return;
        }
        ++pages;
        after = res.header("x-more").value_or("") == "true"
                    ? res.header("x-next-after").value_or("0")
                    : "0";
      }
    });
  CAF_REQUIRE(e2e::poll_until([&] { return pages >= 3 || failures > 0; }, 60s));
  auto before = pages.load();
  int jobs_ok = 0;
  int logs_ok = 0;
  int wrong = 0;
  for (int round = 0; round < 10; ++round) {
    auto jobs = e2e::get(node.port(), "/jobs?limit=5", {}, 30s);
    if (is_busy(jobs))
      ++busy;
    else if (jobs.status == 200 && jobs.json()["jobs"].size() == 5)
      ++jobs_ok;
    else
      ++wrong;
    auto logs = e2e::get(node.port(), "/logs?instance=" + big + "&limit=3", {}, 30s);
    if (is_busy(logs))
      ++busy;
    else if (logs.status == 200 && e2e::contains(logs.body, "line 1.") &&
             e2e::contains(logs.body, "line 3."))
      ++logs_ok;
    else
      ++wrong;
    CAF_CHECK_EQUAL(e2e::get(node.port(), "/healthz").status, 200);
  }
  auto during = pages.load() - before;
  stop = true;
  for (auto& t : scanners)
    t.join();
  CAF_MESSAGE(during << " scan pages ran meanwhile; " << busy << " requests got 503 busy");
  CAF_CHECK_EQUAL(failures.load(), 0);
  CAF_CHECK_GREATER(during, 0); // the scans went on while the others answered
  CAF_CHECK_GREATER(jobs_ok, 0);
  CAF_CHECK_GREATER(logs_ok, 0);
  CAF_CHECK_EQUAL(wrong, 0); // every answer right, or 503 busy with Retry-After
}

CAF_TEST(reads past the read queue get 503 busy with Retry - After) {
  e2e::scratch_dir data{"troupe-limits"};
  {
    auto env = persistence::lmdb_env::open(data.path() + "/store", 4ull << 30);
    persistence::txn t{*env, false};
    for (uint64_t first = 1; first <= 300'000; first += 10'000) {
      persistence::log_op_builder b{log_labels{"huge", "j", "job", "", "default", "n"}};
      for (uint64_t i = first; i < first + 10'000; ++i)
        b.add(now_ns(), 1, "info", "line " + std::to_string(i) + std::string(40, '.'));
      persistence::append_log_op(t, persistence::log_key("j", first), b.take());
    }
    t.commit();
  }
  e2e::daemon_options opts;
  opts.data_dir = data.path();
  opts.env = {{"TROUPE_HTTP__READ_WORKERS", "1"}, {"TROUPE_HTTP__READ_QUEUE", "1"}};
  e2e::daemon node{opts};
  // Six scans of 100,000 lines each, sent at once: one runs, the others
  // find the queue (of one) full.
  std::vector<e2e::response> answers(6);
  std::atomic<int> ready{0};
  std::vector<std::thread> clients;
  for (size_t i = 0; i < answers.size(); ++i)
    clients.emplace_back([&, i] {
      e2e::connection conn{node.port(), 30s};
      ++ready;
      while (ready < static_cast<int>(answers.size()))
        std::this_thread::yield(); // a start line, not a wait for the server
      answers[i] = conn.request("GET", "/logs?service=nothing");
    });
  for (auto& c : clients)
    c.join();
  size_t ok = 0;
  size_t busy = 0;
  for (auto& res : answers) {
    if (res.status == 200)
      ++ok;
    else if (is_busy(res) && res.header("retry-after") == std::optional<std::string>{"1"})
      ++busy;
    else
      CAF_MESSAGE("unexpected: " << res.to_string());
  }
  CAF_CHECK_GREATER_OR_EQUAL(ok, 1u);
  CAF_CHECK_GREATER_OR_EQUAL(busy, 1u);
  CAF_CHECK_EQUAL(ok + busy, answers.size());
}

CAF_TEST(a slow SSE client of a chatty job leaves the heap flat and gets every line) {
  e2e::scratch_dir scratch{"troupe-limits"};
  auto go = scratch.path() + "/go";
  e2e::daemon node;
  // 50,000 lines, then (once the client is connected) 300,000 more.
  auto print = [](int from, int to) {
    return "awk 'BEGIN { p = sprintf(\"%040d\", 0); for (i = " + std::to_string(from) +
           "; i <= " + std::to_string(to) + "; i++) print i \" \" p }'";
  };
  auto command = print(1, 50'000) + "; while [ ! -e " + go + " ]; do sleep 0.02; done; " +
                 print(50'001, 350'000);
  auto submitted =
      e2e::request(node.port(), "POST", "/jobs", {{"Content-Type", "application/json"}},
                   json{{"name", "chatty"}, {"command", command}}.dump());
  CAF_REQUIRE_EQUAL(submitted.status, 201);
  auto id = e2e::json_field(submitted, "/job_id");
  // Wait until the first 50,000 lines are stored (the job waits for the go
  // file after them).
  CAF_REQUIRE(e2e::poll_until(
      [&] {
        auto log = e2e::get(node.port(), "/jobs/" + id + "/logs", {}, 30s);
        return std::count(log.body.begin(), log.body.end(), '\n') == 50'000;
      },
      60s, 50ms));
  // The slow client: a small receive buffer, reads a few events, then stops
  // reading while the stream is still replaying the first 50,000 lines.
  auto slow =
      e2e::open_sse(node.port(), "/jobs/" + id + "/stream?from_beginning=true", {}, 10s, 4096);
  CAF_REQUIRE_EQUAL(slow.status(), 200);
  uint64_t expect = 1; // the next line the client should get
  size_t wrong = 0;
  for (int i = 0; i < 10; ++i) {
    auto ev = slow.next(20s);
    CAF_REQUIRE(ev.has_value());
    if (ev->type == "log" && ev->id != std::to_string(expect++))
      ++wrong;
  }
  auto base = anon_kb(node.pid());
  long peak = base;
  std::ofstream{go} << "go";
  std::string status;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    peak = std::max(peak, anon_kb(node.pid()));
    status = e2e::get(node.port(), "/jobs/" + id).json().value("status", "");
    if (status == "succeeded" || status == "failed")
      break;
  }
  CAF_REQUIRE_EQUAL(status, "succeeded");
  peak = std::max(peak, anon_kb(node.pid()));
  CAF_MESSAGE("heap growth while 300,000 lines went by a slow client: " << (peak - base) / 1024
                                                                        << " MiB");
  if (e2e::heap_bounds_checked)
    CAF_CHECK_LESS(peak - base, 24L * 1024);
  // Now it reads: every line once, in order, then `complete`.
  std::optional<e2e::sse_event> complete;
  for (;;) {
    auto ev = slow.next(30s);
    if (!ev)
      break;
    if (ev->type == "complete") {
      complete = ev;
      break;
    }
    if (ev->type != "log")
      continue;
    if (ev->id != std::to_string(expect))
      ++wrong;
    else if (expect % 10'000 == 0 &&
             ev->json().value("line", "").rfind(std::to_string(expect) + " ", 0) != 0)
      ++wrong;
    ++expect;
  }
  CAF_CHECK_EQUAL(wrong, 0u);
  CAF_CHECK_EQUAL(expect - 1, 350'000u);
  CAF_REQUIRE(complete.has_value());
  CAF_CHECK_EQUAL(complete->json().value("status", ""), "succeeded");
}

CAF_TEST(debug crash accepts only the actors the README names) {
  e2e::daemon_options opts;
  opts.env = {{"TROUPE_DEBUG__FAULT_INJECTION", "true"}};
  e2e::daemon node{opts};
  for (auto name : {"jobs", "logs", "metrics", "nobody"}) {
    auto res = e2e::request(node.port(), "POST", std::string{"/debug/crash/"} + name);
    CAF_CHECK_EQUAL(res.status, 404);
    CAF_CHECK_EQUAL(e2e::json_field(res, "/error/field"), "actor");
    auto message = e2e::json_field(res, "/error/message");
    CAF_CHECK(e2e::contains(message, "store") && e2e::contains(message, "event_bus"));
  }
  // Nothing was killed: the job controller still answers.
  auto ready = e2e::get(node.port(), "/readyz");
  CAF_CHECK_EQUAL(ready.status, 200);
  CAF_CHECK_EQUAL(e2e::json_field(ready, "/checks/jobs/status"), "ok");
  // The named ones still crash.
  CAF_CHECK_EQUAL(e2e::request(node.port(), "POST", "/debug/crash/event_bus").status, 202);
}
