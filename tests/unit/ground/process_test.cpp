#define CAF_SUITE process
#include "support/dsl.hpp"

#include <condition_variable>
#include <csignal>
#include <mutex>
#include <optional>
#include <thread>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ground/packed_lines.hpp"
#include "runtime/ground/process.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// Collects what a watch reports; the test thread waits on it with a bound.
struct collector {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::string> out;
  std::vector<std::string> err;
  bool out_eof = false;
  bool err_eof = false;
  std::optional<process::exit_status> exit;
  std::shared_ptr<process::watch> watch;
  pid_t pid = -1;

  process::callbacks callbacks() {
    process::callbacks cb;
    cb.on_output = [this](process::output o) {
      std::lock_guard<std::mutex> guard{mtx};
      auto& dst = o.stream == 1 ? out : err;
      troupe::for_each_packed(o.lines, [&](std::string_view l) { dst.emplace_back(l); });
      if (o.eof)
        (o.stream == 1 ? out_eof : err_eof) = true;
      else
        watch->resume(o.stream);
      cv.notify_all();
    };
    cb.on_exit = [this](process::exit_status es) {
      std::lock_guard<std::mutex> guard{mtx};
      exit = es;
      cv.notify_all();
    };
    return cb;
  }

  bool wait_done() {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, 20s, [this] { return out_eof && err_eof && exit.has_value(); });
  }
};

struct fixture {
  process::io io;
  test::temp_dir dir;

  std::unique_ptr<collector> run(process::spawn_options opts, size_t max_line = 1024) {
    auto c = std::make_unique<collector>();
    auto child = process::spawn(opts);
    std::lock_guard<std::mutex> guard{c->mtx};
    c->pid = child.pid;
    c->watch = io.start(child, max_line, c->callbacks());
    return c;
  }

  process::spawn_options shell(std::string script) {
    process::spawn_options opts;
    opts.argv = {"/bin/sh", "-c", std::move(script)};
    opts.env = {"PATH=/usr/bin:/bin", "GREETING=hi"};
    opts.cwd = dir.path();
    return opts;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(process_tests, fixture)

CAF_TEST(lines are split on newlines and a partial last line is flushed) {
  auto c = run(shell("printf 'a\\nbb\\r\\nccc'; printf 'e1\\ne2\\n' >&2"));
  CAF_REQUIRE(c->wait_done());
  CAF_CHECK_EQUAL(c->out, (std::vector<std::string>{"a", "bb", "ccc"}));
  CAF_CHECK_EQUAL(c->err, (std::vector<std::string>{"e1", "e2"}));
  CAF_CHECK_EQUAL(c->exit->exit_code, 0);
}

CAF_TEST(over long lines are split into pieces and never dropped) {
  auto c = run(shell("printf '%0100d\\n' 0"), 16);
  CAF_REQUIRE(c->wait_done());
  CAF_REQUIRE_EQUAL(c->out.size(), 7u);
  std::string joined;
  for (auto& piece : c->out) {
    CAF_CHECK(piece.size() <= 16);
    joined += piece;
  }
  CAF_CHECK_EQUAL(joined, std::string(100, '0'));
}

CAF_TEST(exit codes and terminating signals are reported) {
  auto failed = run(shell("exit 7"));
  CAF_REQUIRE(failed->wait_done());
  CAF_CHECK_EQUAL(failed->exit->exit_code, 7);
  CAF_CHECK_EQUAL(failed->exit->signal, 0);
  auto killed = run(shell("kill -TERM $$"));
  CAF_REQUIRE(killed->wait_done());
  CAF_CHECK_EQUAL(killed->exit->signal, SIGTERM);
}

CAF_TEST(the child gets its environment and working directory) {
  auto c = run(shell("echo $GREETING; pwd"));
  CAF_REQUIRE(c->wait_done());
  CAF_REQUIRE_EQUAL(c->out.size(), 2u);
  CAF_CHECK_EQUAL(c->out[0], "hi");
  CAF_CHECK_EQUAL(c->out[1], dir.path());
}

CAF_TEST(rlimits hold from the first instruction of the child) {
  auto opts = shell("ulimit -n; ulimit -v; ulimit -t");
  opts.rlimits.open_files = 32;
  opts.rlimits.memory_mb = 256;
  opts.rlimits.cpu_seconds = 9;
  auto c = run(opts);
  CAF_REQUIRE(c->wait_done());
  CAF_CHECK_EQUAL(c->out, (std::vector<std::string>{"32", "262144", "9"}));
}

CAF_TEST(a command that does not exist fails to spawn with a reason) {
  process::spawn_options opts;
  opts.argv = {"/no/such/program"};
  std::string what;
  try {
    process::spawn(opts);
  } catch (const std::system_error& e) {
    what = e.what();
  }
  CAF_CHECK(what.find("/no/such/program") != std::string::npos);
  opts.rlimits.open_files = 16; // the fork path reports the same way
  what.clear();
  try {
    process::spawn(opts);
  } catch (const std::system_error& e) {
    what = e.what();
  }
  CAF_CHECK(what.find("/no/such/program") != std::string::npos);
}

CAF_TEST(signalling the group reaches every process of the job) {
  // A background sleep in the same group holds stdout open: EOF proves it died.
  auto c = run(shell("sleep 30 & echo started; wait"));
  {
    std::unique_lock<std::mutex> guard{c->mtx};
    CAF_REQUIRE(c->cv.wait_for(guard, 20s, [&] { return !c->out.empty(); }));
  }
  CAF_CHECK_NOT_EQUAL(::getpgid(c->pid), ::getpgid(0));
  CAF_CHECK(process::group_alive(c->pid));
  CAF_CHECK(process::signal_group(c->pid, SIGKILL));
  CAF_REQUIRE(c->wait_done());
  CAF_CHECK_EQUAL(c->exit->signal, SIGKILL);
}

/// A descriptor of the test process without FD_CLOEXEC, far above the
/// others: what a child must never inherit.
struct leaked_fd {
  int fd = -1;
  leaked_fd() {
    int base = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    fd = ::fcntl(base, F_DUPFD, 300); // F_DUPFD leaves FD_CLOEXEC off
    ::close(base);
  }
  ~leaked_fd() { ::close(fd); }
};

/// `ls /proc/self/fd` as the child sees it: ls's own listing holds the
/// lowest free number, so anything inherited beyond 0-2 shows up as a fourth
/// or later entry.
const std::vector<std::string> only_std_fds{"0", "1", "2", "3"};

CAF_TEST(a child inherits only fds 0 to 2 on either spawn path) {
  leaked_fd leak;
  CAF_REQUIRE(leak.fd >= 300);
  auto plain = run(shell("ls /proc/self/fd"));
  CAF_REQUIRE(plain->wait_done());
  CAF_CHECK_EQUAL(plain->out, only_std_fds);
  auto limited = shell("ls /proc/self/fd");
  limited.rlimits.open_files = 64; // the fork path
  auto forked = run(limited);
  CAF_REQUIRE(forked->wait_done());
  CAF_CHECK_EQUAL(forked->out, only_std_fds);
}

CAF_TEST(the proc scan fallback marks every inherited fd close on exec) {
  leaked_fd leak;
  CAF_REQUIRE(leak.fd >= 300);
  auto opts = shell("ls /proc/self/fd");
  opts.sweep = process::fd_sweep::scan; // as when close_range fails
  auto c = run(opts);
  CAF_REQUIRE(c->wait_done());
  CAF_CHECK_EQUAL(c->out, only_std_fds);
  CAF_CHECK_EQUAL(c->exit->exit_code, 0);
}

CAF_TEST(a child runs as the given user with its groups) {
  CAF_REQUIRE_EQUAL(::geteuid(), 0u);
  auto* pw = ::getpwnam("nobody");
  CAF_REQUIRE(pw != nullptr);
  auto secret = dir.path() + "/secret";
  ::close(::open(secret.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  // The workspace of such a job is its own (host::hand_over_workspace).
  CAF_REQUIRE_EQUAL(::chown(dir.path().c_str(), pw->pw_uid, pw->pw_gid), 0);
  auto opts = shell("id -u; id -g; id -G; cat " + secret +
                    " >/dev/null 2>&1 && echo read || echo denied; pwd");
  opts.user = process::credentials{pw->pw_uid, pw->pw_gid, {pw->pw_gid}};
  auto c = run(opts);
  CAF_REQUIRE(c->wait_done());
  auto uid = std::to_string(pw->pw_uid);
  auto gid = std::to_string(pw->pw_gid);
  CAF_REQUIRE_EQUAL(c->out.size(), 5u);
  CAF_CHECK_EQUAL(c->out[0], uid);
  CAF_CHECK_EQUAL(c->out[1], gid);
  CAF_CHECK_EQUAL(c->out[2], gid);
  CAF_CHECK_EQUAL(c->out[3], "denied");
  CAF_CHECK_EQUAL(c->out[4], dir.path());
}

CAF_TEST(a working directory the user may not enter fails the spawn) {
  CAF_REQUIRE_EQUAL(::geteuid(), 0u);
  auto* pw = ::getpwnam("nobody");
  CAF_REQUIRE(pw != nullptr);
  auto opts = shell("true");
  CAF_REQUIRE_EQUAL(::chmod(dir.path().c_str(), 0700), 0); // root's alone
  opts.user = process::credentials{pw->pw_uid, pw->pw_gid, {pw->pw_gid}};
  std::string what;
  try {
    process::spawn(opts);
  } catch (const std::system_error& e) {
    what = e.what();
  }
  CAF_CHECK(what.find("Permission denied") != std::string::npos);
}

CAF_TEST(blocking tasks run in order on a thread of their own) {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<int> order;
  std::thread::id ran_on;
  for (int i = 0; i < 3; ++i)
    io.post_blocking([&, i] {
      std::lock_guard<std::mutex> guard{mtx};
      order.push_back(i);
      ran_on = std::this_thread::get_id();
      cv.notify_all();
    });
  std::unique_lock<std::mutex> guard{mtx};
  CAF_REQUIRE(cv.wait_for(guard, 20s, [&] { return order.size() == 3; }));
  CAF_CHECK_EQUAL(order, (std::vector<int>{0, 1, 2}));
  CAF_CHECK_NOT_EQUAL(ran_on, std::this_thread::get_id());
}

CAF_TEST_FIXTURE_SCOPE_END()
