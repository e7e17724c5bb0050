#define CAF_SUITE job_submit
#include "support/dsl.hpp"

#include "http/api/job_submit.hpp"
#include "http/multipart.hpp"
#include "support/temp_dir.hpp"

#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

using namespace troupe;

namespace {

/// A launcher that only records workers; the test runs them when it wants,
/// so which task runs when is decided by the test alone.
struct manual_workers {
  std::shared_ptr<std::vector<std::function<void()>>> started =
      std::make_shared<std::vector<std::function<void()>>>();

  // A recorded worker holds the pool, which holds this launcher: clearing
  // breaks the cycle.
  ~manual_workers() { started->clear(); }

  task_pool::launcher launcher() const {
    return [started = started](std::function<void()> work) { started->push_back(std::move(work)); };
  }

  size_t count() const { return started->size(); }

  void run(size_t i) const { (*started)[i](); }
};

std::string join(const std::vector<int>& xs) {
  std::string out;
  for (auto x : xs)
    out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

bool within(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

const std::string boundary = "xYz";

std::string form(const std::string& spec, const std::string& file) {
  return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n" + spec +
         "\r\n--" + boundary +
         "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.tgz\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         file + "\r\n--" + boundary + "--\r\n";
}

} // namespace

// -- the extraction pool ------------------------------------------------------

CAF_TEST(the pool starts at most its limit of workers and queues the rest) {
  manual_workers workers;
  auto pool = task_pool::make(2, workers.launcher());
  std::vector<int> ran;
  for (int i = 0; i < 5; ++i)
    pool->submit([&ran, i] { ran.push_back(i); });
  // Nothing ran on the submitting thread.
  CAF_CHECK_EQUAL(join(ran), "");
  CAF_CHECK_EQUAL(workers.count(), 2u);
  CAF_CHECK_EQUAL(pool->running(), 2u);
  CAF_CHECK_EQUAL(pool->waiting(), 3u);
  // A worker that finished its task takes the waiting ones, oldest first.
  workers.run(1);
  CAF_CHECK_EQUAL(join(ran), "1,2,3,4");
  CAF_CHECK_EQUAL(pool->running(), 1u);
  CAF_CHECK_EQUAL(pool->waiting(), 0u);
  workers.run(0);
  CAF_CHECK_EQUAL(join(ran), "1,2,3,4,0");
  CAF_CHECK_EQUAL(pool->running(), 0u);
  // An idle pool starts a new worker for the next task.
  pool->submit([&ran] { ran.push_back(5); });
  CAF_CHECK_EQUAL(workers.count(), 3u);
  workers.run(2);
  CAF_CHECK_EQUAL(join(ran), "1,2,3,4,0,5");
}

CAF_TEST(with a limit of one tasks run one after another in FIFO order) {
  manual_workers workers;
  auto pool = task_pool::make(1, workers.launcher());
  std::vector<int> ran;
  size_t running_inside = 0;
  pool->submit([&] {
    running_inside = pool->running();
    ran.push_back(0);
    // Submitted from a task: queued behind the ones already waiting.
    pool->submit([&ran] { ran.push_back(3); });
  });
  pool->submit([&ran] { ran.push_back(1); });
  pool->submit([&ran] { ran.push_back(2); });
  CAF_CHECK_EQUAL(workers.count(), 1u);
  CAF_CHECK_EQUAL(pool->waiting(), 2u);
  workers.run(0);
  CAF_CHECK_EQUAL(running_inside, 1u);
  CAF_CHECK_EQUAL(join(ran), "0,1,2,3");
  CAF_CHECK_EQUAL(workers.count(), 1u);
  CAF_CHECK_EQUAL(pool->running(), 0u);
}

CAF_TEST(a task that throws does not stop its worker) {
  manual_workers workers;
  auto pool = task_pool::make(1, workers.launcher());
  bool ran = false;
  pool->submit([] { throw std::runtime_error("task failed"); });
  pool->submit([&ran] { ran = true; });
  workers.run(0);
  CAF_CHECK(ran);
  CAF_CHECK_EQUAL(pool->running(), 0u);
}

CAF_TEST(a limit below one still runs tasks) {
  manual_workers workers;
  auto pool = task_pool::make(0, workers.launcher());
  bool ran = false;
  pool->submit([&ran] { ran = true; });
  CAF_REQUIRE_EQUAL(workers.count(), 1u);
  workers.run(0);
  CAF_CHECK(ran);
}

// -- cancel permission --------------------------------------------------------

CAF_TEST(admins cancel any job and others only their own) {
  using http::role;
  CAF_CHECK(!cancel_refusal("j1", "ci", "ci", role::submit));
  CAF_CHECK(!cancel_refusal("j1", "ci", "ops", role::admin));
  CAF_CHECK(!cancel_refusal("j1", "", "ops", role::admin));
  // auth.mode none: no principal, admin granted.
  CAF_CHECK(!cancel_refusal("j1", "", "", role::admin));
  auto other = cancel_refusal("j1", "ci", "dev", role::submit);
  CAF_REQUIRE(other.has_value());
  CAF_CHECK_EQUAL(*other,
                  "job j1 was submitted by another token; cancelling it needs the admin role");
  // A job stored before submitters were kept belongs to no token.
  CAF_CHECK(cancel_refusal("j1", "", "dev", role::submit).has_value());
  CAF_CHECK(cancel_refusal("j1", "ci", "dev", role::read).has_value());
}

// -- content types ------------------------------------------------------------

CAF_TEST(only json yaml and multipart bodies are accepted) {
  CAF_CHECK(submission_format("application/json") == body_format::json);
  CAF_CHECK(submission_format("Application/JSON; charset=utf-8") == body_format::json);
  CAF_CHECK(submission_format(" application/json ") == body_format::json);
  for (auto yaml : {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
                    "TEXT/YAML;charset=utf-8"})
    CAF_CHECK(submission_format(yaml) == body_format::yaml);
  CAF_CHECK(submission_format("multipart/form-data; boundary=x") == body_format::multipart);
  // What a browser may send cross-origin without a preflight, and untyped bodies.
  CAF_CHECK(!submission_format("application/x-www-form-urlencoded"));
  CAF_CHECK(!submission_format("text/plain"));
  CAF_CHECK(!submission_format(""));
  CAF_CHECK(!submission_format("application/jsonx"));
  CAF_CHECK(!submission_format("application/json-seq"));
  std::string accepted = accepted_submission_types;
  CAF_CHECK(accepted.find("application/json") != std::string::npos);
  CAF_CHECK(accepted.find("application/yaml") != std::string::npos);
  CAF_CHECK(accepted.find("multipart/form-data") != std::string::npos);
}

// -- bodies streamed to a file ------------------------------------------------

CAF_TEST(an upload in a file is read through a mapping without a copy) {
  test::temp_dir dir;
  auto path = dir / "upload";
  std::string archive(1 << 20, '\0');
  for (size_t i = 0; i < archive.size(); ++i)
    archive[i] = static_cast<char>(i * 7);
  std::ofstream(path, std::ios::binary) << form(R"({"command":"true"})", archive);
  http::request req;
  req.body_file = path;
  auto body = request_body(req, nullptr);
  CAF_REQUIRE(body.owner != nullptr);
  auto parts = http::parse_multipart("multipart/form-data; boundary=" + boundary, body.bytes);
  auto file = http::find_part(parts, "file");
  auto spec = http::find_part(parts, "spec");
  CAF_REQUIRE(file != nullptr && spec != nullptr);
  CAF_CHECK(file->data == archive);
  CAF_CHECK_EQUAL(std::string{spec->data}, R"({"command":"true"})");
  // The parts are views into the mapped file, not copies.
  CAF_CHECK(within(file->data, body.bytes));
  CAF_CHECK(within(spec->data, body.bytes));
  // The server removes the file once the request is done: the mapping lives on.
  CAF_REQUIRE_EQUAL(::unlink(path.c_str()), 0);
  CAF_CHECK(file->data == archive);
}

CAF_TEST(a body in memory is used in place) {
  auto req = std::make_shared<http::request>();
  req->body = R"({"command":"true"})";
  auto body = request_body(*req, req);
  CAF_CHECK_EQUAL(static_cast<const void*>(body.bytes.data()),
                  static_cast<const void*>(req->body.data()));
  CAF_CHECK_EQUAL(body.bytes.size(), req->body.size());
  CAF_CHECK(body.owner == req);
}

CAF_TEST(an empty or missing upload file) {
  test::temp_dir dir;
  std::ofstream(dir / "empty").flush();
  http::request req;
  req.body_file = dir / "empty";
  CAF_CHECK_EQUAL(request_body(req, nullptr).bytes.size(), 0u);
  req.body_file = dir / "missing";
  std::string what;
  try {
    request_body(req, nullptr);
  } catch (const std::system_error& e) {
    what = e.what();
  }
  CAF_CHECK(what.find("opening upload '" + req.body_file + "'") != std::string::npos);
}
