#define CAF_SUITE job
#include "support/dsl.hpp"

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <mutex>

#include <sys/stat.h>
#include <sys/wait.h>

#include "actors/core/names.hpp"
#include "actors/core/store.hpp"
#include "actors/jobs/job.hpp"
#include "actors/jobs/job_controller.hpp"
#include "actors/jobs/job_spec.hpp"
#include "persistence/jobs.hpp"
#include "support/temp_dir.hpp"

// The real job actor (under the real controller) on the deterministic
// coordinator. A scripted launcher stands in for fork/exec: the test decides
// when a launch ends and what the process reports.

using namespace troupe;
using namespace std::chrono_literals;
namespace js = persistence::job_status;

namespace {

/// A watch that only records what the job actor asks of it.
struct fake_watch : process::watch {
  std::vector<uint8_t> resumed;
  bool closed = false;
  void resume(uint8_t stream) override { resumed.push_back(stream); }
  void close() override { closed = true; }
  void begin() override {}
};

/// A launch the job actor asked for, waiting for the test to end it.
struct pending_launch {
  launch_request req;
  std::function<void(launch_result)> done;
};

/// A real process in a group of its own that the job actor may signal;
/// the test reaps it to see which signal ended it.
struct sleeper {
  pid_t pid = -1;
  explicit sleeper(const std::string& dir) {
    process::spawn_options opts;
    opts.argv = {"/bin/sleep", "60"};
    opts.cwd = dir;
    auto c = process::spawn(opts);
    for (int fd : {c.pidfd, c.out_fd, c.err_fd})
      ::close(fd);
    pid = c.pid;
  }
  /// Waits for its end (a signal was already sent): the signal, or 0.
  int wait_signal() {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid)
      return -1;
    pid = -1;
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  }
  ~sleeper() {
    if (pid > 0) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

/// Collects a job's updates.
struct recorder_state {
  static inline const char* name = "update_recorder";
};

job_subscriber_actor::behavior_type
update_recorder(job_subscriber_actor::stateful_pointer<recorder_state>,
                std::shared_ptr<std::vector<job_update>> out) {
  return {[out](job_update& up) { out->push_back(std::move(up)); }};
}

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);
  std::shared_ptr<std::vector<pending_launch>> launches =
      std::make_shared<std::vector<pending_launch>>();
  std::shared_ptr<std::vector<job_update>> updates = std::make_shared<std::vector<job_update>>();
  job_controller_actor ctl;

  fixture() {
    enroll(sys, names::store, st);
    auto ctx = std::make_shared<job_env>();
    ctx->env = env;
    ctx->cfg.concurrency = 1;
    ctx->cfg.sweep_interval = 24h;
    ctx->cfg.cancel_grace = 2s;
    ctx->detach_janitor = false; // its kills run in this test's deterministic scheduler
    ctx->node_name = "test-node";
    ctx->base_env = {"PATH=/usr/bin:/bin"};
    // The controller's janitor on the test scheduler: its /proc scan for a
    // crashed job actor then ends within consume_messages(), not whenever a
    // thread of its own gets to it.
    ctx->detach_janitor = false;
    auto l = launches;
    ctx->launcher = [l](launch_request req, std::function<void(launch_result)> done) {
      l->push_back(pending_launch{std::move(req), std::move(done)});
    };
    ctl = sys.spawn(job_controller, std::shared_ptr<const job_env>{ctx});
    consume_messages();
  }

  ~fixture() override {
    caf::anon_send_exit(ctl, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    withdraw(sys, names::store);
    run_until([] { return false; });
  }

  /// Submits a shell job and runs until its launch is asked for.
  std::string submit(const std::string& command, uint64_t timeout_seconds = 0) {
    job_spec spec;
    spec.argv = {"/bin/sh", "-c", command};
    spec.shell = true;
    spec.timeout_seconds = timeout_seconds;
    persistence::job_record r;
    r.id = persistence::new_job_id();
    r.spec = to_json(spec);
    r.workspace = dir.path();
    auto h = self->request(ctl, caf::infinite, submit_atom::value, persistence::encode(r));
    consume_messages();
    h.receive([](std::string&) {},
              [](caf::error& err) { CAF_FAIL("submit failed: " << to_string(err)); });
    auto job = job_of(r.id);
    auto rec = sys.spawn(update_recorder, updates);
    auto s = self->request(job, caf::infinite, subscribe_atom::value, rec);
    consume_messages();
    s.receive([](uint64_t) {}, [](caf::error& err) { CAF_FAIL(to_string(err)); });
    return r.id;
  }

  job_actor job_of(const std::string& id) {
    auto& running =
        deref<job_controller_actor::stateful_base<job_controller_state>>(ctl).state.running;
    auto i = running.find(id);
    CAF_REQUIRE(i != running.end());
    return i->second;
  }

  persistence::job_record record(const std::string& id) {
    auto r = persistence::get_job(*env, id);
    CAF_REQUIRE(r.has_value());
    return *r;
  }

  /// Ends the pending launch with `r` (as the launcher's thread would).
  std::shared_ptr<fake_watch> launched(pending_launch& l, pid_t pid) {
    auto w = std::make_shared<fake_watch>();
    launch_result r;
    r.pid = pid;
    r.watch = w;
    l.done(std::move(r));
    consume_messages();
    return w;
  }

  /// The process ends: both pipes at EOF, then its exit status.
  void process_ends(pending_launch& l, int code, int sig) {
    for (uint8_t stream : {1, 2}) {
      process::output o;
      o.stream = stream;
      o.eof = true;
      l.req.cb.on_output(std::move(o));
    }
    l.req.cb.on_exit(process::exit_status{code, sig});
    consume_messages();
  }

  std::vector<std::string> statuses() {
    std::vector<std::string> out;
    for (auto& u : *updates)
      if (!u.status.empty())
        out.push_back(u.status);
    return out;
  }
};

bool has(const std::vector<std::string>& env, const std::string& kv) {
  return std::find(env.begin(), env.end(), kv) != env.end();
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(job_tests, fixture)

CAF_TEST(the job is running while its process launches off the actor) {
  auto id = submit("true");
  CAF_REQUIRE_EQUAL(launches->size(), 1u);
  auto& l = launches->front();
  CAF_CHECK_EQUAL(l.req.opts.argv, (std::vector<std::string>{"/bin/sh", "-c", "true"}));
  CAF_CHECK_EQUAL(l.req.opts.cwd, dir.path());
  CAF_CHECK_EQUAL(l.req.workspace, dir.path());
  CAF_CHECK(has(l.req.opts.env, "TROUPE_JOB_ID=" + id));
  CAF_CHECK(!l.req.opts.user.has_value());
  CAF_CHECK_EQUAL(record(id).status, js::running);
  CAF_CHECK_EQUAL(record(id).pgid, 0);
  sleeper proc{dir.path()};
  auto w = launched(l, proc.pid);
  CAF_CHECK_EQUAL(record(id).pgid, proc.pid);
  process_ends(l, 0, 0);
  // The exit takes the rest of the group with it.
  CAF_CHECK_EQUAL(proc.wait_signal(), SIGKILL);
  auto rec = record(id);
  CAF_CHECK_EQUAL(rec.status, js::succeeded);
  CAF_CHECK_EQUAL(rec.exit_code.value_or(-1), 0);
  CAF_CHECK_EQUAL(rec.pgid, 0);
  CAF_CHECK_EQUAL(statuses(), (std::vector<std::string>{js::succeeded}));
  CAF_CHECK(w->closed);
}

CAF_TEST(a process that cannot start fails the attempt with the reason) {
  auto id = submit("true");
  CAF_REQUIRE_EQUAL(launches->size(), 1u);
  launch_result r;
  r.error = "cannot start: /bin/sh: Permission denied";
  r.exit_code = 127;
  launches->front().done(std::move(r));
  consume_messages();
  auto rec = record(id);
  CAF_CHECK_EQUAL(rec.status, js::failed);
  CAF_CHECK_EQUAL(rec.reason, "cannot start: /bin/sh: Permission denied");
  CAF_CHECK_EQUAL(rec.exit_code.value_or(-1), 127);
  CAF_CHECK_EQUAL(statuses(), (std::vector<std::string>{js::failed}));
}

CAF_TEST(a job cancelled while starting is killed once its process exists) {
  auto id = submit("sleep 60");
  CAF_REQUIRE_EQUAL(launches->size(), 1u);
  auto c = self->request(ctl, caf::infinite, cancel_atom::value, id);
  consume_messages();
  CAF_CHECK_EQUAL(record(id).status, js::running);
  sleeper proc{dir.path()};
  auto& l = launches->front();
  launched(l, proc.pid);
  CAF_CHECK_EQUAL(proc.wait_signal(), SIGKILL);
  process_ends(l, -1, SIGKILL);
  c.receive([](std::string& s) { CAF_CHECK_EQUAL(s, js::cancelled); },
            [](caf::error& err) { CAF_FAIL(to_string(err)); });
  auto rec = record(id);
  CAF_CHECK_EQUAL(rec.status, js::cancelled);
  CAF_CHECK_EQUAL(rec.signal.value_or(0), SIGKILL);
}

CAF_TEST(the timeout counts from the start of the process) {
  auto id = submit("sleep 60", 5);
  CAF_REQUIRE_EQUAL(launches->size(), 1u);
  auto stop = [&] { return deref<job_actor::stateful_base<job_state>>(job_of(id)).state.stop; };
  // However long the launch takes, no timeout runs yet.
  advance_time(10s);
  consume_messages();
  CAF_CHECK(stop() == job_state::stop_kind::none);
  sleeper proc{dir.path()};
  auto& l = launches->front();
  launched(l, proc.pid);
  advance_time(4s);
  consume_messages();
  CAF_CHECK(stop() == job_state::stop_kind::none);
  advance_time(1s);
  consume_messages();
  CAF_CHECK(stop() == job_state::stop_kind::timed_out);
  CAF_CHECK_EQUAL(proc.wait_signal(), SIGTERM);
  process_ends(l, -1, SIGTERM);
  auto rec = record(id);
  CAF_CHECK_EQUAL(rec.status, js::timed_out);
  CAF_CHECK_EQUAL(rec.reason, "timed out after 5s");
}

CAF_TEST(a launch that ends after its job actor is killed kills the orphan) {
  auto id = submit("sleep 60");
  CAF_REQUIRE_EQUAL(launches->size(), 1u);
  caf::anon_send_exit(job_of(id), caf::exit_reason::kill);
  consume_messages();
  sleeper proc{dir.path()};
  auto w = std::make_shared<fake_watch>();
  launch_result r;
  r.pid = proc.pid;
  r.watch = w;
  launches->front().done(std::move(r));
  consume_messages();
  CAF_CHECK_EQUAL(proc.wait_signal(), SIGKILL);
  CAF_CHECK(w->closed);
  CAF_CHECK_EQUAL(record(id).status, js::failed);
}

CAF_TEST(a node shutdown while starting ends the attempt as lost) {
  auto id = submit("sleep 60");
  CAF_REQUIRE_EQUAL(launches->size(), 1u);
  auto h = self->request(job_of(id), caf::infinite, shutdown_atom::value);
  consume_messages();
  sleeper proc{dir.path()};
  auto& l = launches->front();
  launched(l, proc.pid);
  CAF_CHECK_EQUAL(proc.wait_signal(), SIGKILL);
  process_ends(l, -1, SIGKILL);
  bool answered = false;
  h.receive([&](ok_atom) { answered = true; }, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(answered);
  CAF_CHECK_EQUAL(record(id).status, js::lost);
}

CAF_TEST(output read before the end resumes the pipe) {
  auto id = submit("true");
  auto& l = launches->front();
  sleeper proc{dir.path()};
  auto w = launched(l, proc.pid);
  // A batch without lines (only a partial one so far) asks for more at once.
  process::output o;
  o.stream = 2;
  l.req.cb.on_output(std::move(o));
  consume_messages();
  CAF_CHECK_EQUAL(w->resumed, (std::vector<uint8_t>{2}));
  process_ends(l, 3, 0);
  CAF_CHECK_EQUAL(record(id).status, js::failed);
  CAF_CHECK_EQUAL(record(id).exit_code.value_or(-1), 3);
}

CAF_TEST_FIXTURE_SCOPE_END()

// -- the real launcher and the environment --------------------------------------

namespace {

struct launch_fixture {
  test::temp_dir dir;
  std::shared_ptr<process::io> io = std::make_shared<process::io>();
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::string> events;
  std::optional<launch_result> result;

  launch_request request(const std::string& command) {
    launch_request req;
    req.workspace = dir.path();
    req.cwd_shown = dir.path();
    req.opts.argv = {"/bin/sh", "-c", command};
    req.opts.cwd = dir.path();
    req.cb.on_output = [this](process::output o) {
      std::lock_guard<std::mutex> guard{mtx};
      events.push_back(o.eof ? "eof" : "output");
      if (!o.eof && result && result->watch)
        result->watch->resume(o.stream);
      cv.notify_all();
    };
    req.cb.on_exit = [this](process::exit_status) {
      std::lock_guard<std::mutex> guard{mtx};
      events.push_back("exit");
      cv.notify_all();
    };
    return req;
  }

  void launch(launch_request req) {
    launch_process(*io, std::nullopt, std::move(req), [this](launch_result r) {
      std::lock_guard<std::mutex> guard{mtx};
      events.push_back("done");
      result = std::move(r);
      cv.notify_all();
    });
  }

  bool wait_for(size_t n) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, 20s, [&] { return events.size() >= n; });
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(launch_tests, launch_fixture)

CAF_TEST(the launch is reported before anything the process does) {
  CAF_REQUIRE_EQUAL(::chmod(dir.path().c_str(), 0755), 0);
  launch(request("echo hi"));
  // done, output, two EOFs and the exit, in whatever order after done.
  CAF_REQUIRE(wait_for(5));
  std::lock_guard<std::mutex> guard{mtx};
  CAF_CHECK_EQUAL(events.front(), "done");
  CAF_REQUIRE(result.has_value());
  CAF_CHECK(result->error.empty());
  CAF_CHECK(result->pid > 0);
  // The workspace was made private before the spawn.
  struct stat st;
  CAF_REQUIRE_EQUAL(::stat(dir.path().c_str(), &st), 0);
  CAF_CHECK_EQUAL(st.st_mode & 07777, 0700u);
}

CAF_TEST(a missing working directory is reported and nothing runs) {
  auto req = request("true");
  req.opts.cwd = dir / "no-such-dir";
  req.cwd_shown = "no-such-dir";
  launch(std::move(req));
  CAF_REQUIRE(wait_for(1));
  std::lock_guard<std::mutex> guard{mtx};
  CAF_REQUIRE(result.has_value());
  CAF_CHECK_EQUAL(result->error, "working directory no-such-dir does not exist in the workspace");
  CAF_CHECK_EQUAL(result->exit_code, -1);
  CAF_CHECK(!result->watch);
}

CAF_TEST(jobs inherit only the allowed names and what inherit_env matches) {
  std::vector<std::string> daemon_env{"PATH=/usr/bin",
                                      "HOME=/root",
                                      "LANG=C.UTF-8",
                                      "LC_ALL=C",
                                      "TZ=UTC",
                                      "USER=root",
                                      "SHELL=/bin/bash",
                                      "LOGNAME=root",
                                      "SECRET_TOKEN_X=s3cr3t",
                                      "LOKI_PASSWORD=pw",
                                      "TROUPE_AUTH__TOKENS=[]",
                                      "CI=true",
                                      "AWS_REGION=eu",
                                      "AWS_SECRET=k",
                                      "NOEQUALS"};
  auto none = inherited_environment(daemon_env, "");
  CAF_CHECK_EQUAL(none,
                  (std::vector<std::string>{"PATH=/usr/bin", "HOME=/root", "LANG=C.UTF-8",
                                            "LC_ALL=C", "TZ=UTC", "USER=root", "SHELL=/bin/bash"}));
  auto some = inherited_environment(daemon_env, "CI,AWS_R*");
  CAF_CHECK(has(some, "CI=true"));
  CAF_CHECK(has(some, "AWS_REGION=eu"));
  CAF_CHECK(!has(some, "AWS_SECRET=k"));
  // Even a catch-all never hands out troupe's own settings.
  auto all = inherited_environment(daemon_env, "*");
  CAF_CHECK(has(all, "LOKI_PASSWORD=pw"));
  CAF_CHECK(!has(all, "TROUPE_AUTH__TOKENS=[]"));
}

CAF_TEST(a jobs user brings its own USER HOME SHELL and LOGNAME) {
  job_env ctx;
  ctx.node_name = "n1";
  ctx.base_env = {"PATH=/usr/bin", "HOME=/root", "USER=root", "SHELL=/bin/bash"};
  job_identity who;
  who.user = "nobody";
  who.home = "/nonexistent";
  who.shell = "/usr/sbin/nologin";
  ctx.cfg.identity = who;
  persistence::job_record rec;
  rec.id = "job-1";
  rec.attempt = 2;
  rec.request_id = "req-1";
  job_spec spec;
  spec.env = {{"SHELL", "/bin/sh"}, {"TROUPE_JOB_ID", "forged"}};
  auto env = job_environment(ctx, rec, spec);
  CAF_CHECK_EQUAL(
      env, (std::vector<std::string>{"HOME=/nonexistent", "LOGNAME=nobody", "PATH=/usr/bin",
                                     "SHELL=/bin/sh", "TROUPE_JOB_ATTEMPT=2", "TROUPE_JOB_ID=job-1",
                                     "TROUPE_NODE=n1", "TROUPE_REQUEST_ID=req-1", "USER=nobody"}));
}

CAF_TEST_FIXTURE_SCOPE_END()
