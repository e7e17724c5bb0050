#include "runtime/ground/process.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <linux/close_range.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>

#include "runtime/ground/clock.hpp"
#include "runtime/ground/packed_lines.hpp"

namespace troupe::process {

namespace net = boost::asio;

namespace {

[[noreturn]] void fail(const std::string& what, int err) {
  throw std::system_error(err, std::generic_category(), what);
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

struct spawn_attrs {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  spawn_attrs() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~spawn_attrs() {
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
  }
};

} // namespace

namespace {

bool has_limits(const limits& l) {
  return l.cpu_seconds != 0 || l.memory_mb != 0 || l.open_files != 0;
}

/// A record of the raw getdents64 syscall.
struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

/// Marks every descriptor above 2 close-on-exec, from a listing of
/// /proc/self/fd below the open /proc `proc_dir`: async-signal-safe, and as
/// fast with a million-descriptor limit as with a small one. 0 or an errno.
int mark_inherited_cloexec(int proc_dir) {
  // "self" is looked up here, in the caller: a listing of another process's
  // table (say, /proc/self/fd opened before fork) would miss what that
  // process closed meanwhile while our copy still holds it.
  int dir = ::openat(proc_dir, "self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0)
    return errno;
  alignas(linux_dirent64) char buf[4096];
  for (;;) {
    auto n = ::syscall(SYS_getdents64, dir, buf, sizeof(buf));
    if (n < 0) {
      int err = errno;
      ::close(dir);
      return err;
    }
    if (n == 0)
      break;
    for (long pos = 0; pos < n;) {
      auto* ent = reinterpret_cast<linux_dirent64*>(buf + pos);
      pos += ent->d_reclen;
      int fd = 0;
      bool number = ent->d_name[0] != '\0';
      for (const char* c = ent->d_name; *c != '\0'; ++c) {
        if (*c < '0' || *c > '9') {
          number = false;
          break;
        }
        fd = fd * 10 + (*c - '0');
      }
      if (number && fd > 2 && fd != dir && ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 &&
          errno != EBADF) {
        int err = errno;
        ::close(dir);
        return err;
      }
    }
  }
  ::close(dir);
  return 0;
}

/// fork + exec for children with rlimits, cgroups or another user:
/// posix_spawn has none of them, and setting them after the spawn would race
/// with the child.
/// Between fork and exec the child calls only async-signal-safe functions
/// and raw syscalls (credentials are per thread in Linux: the child has one).
pid_t fork_exec(const spawn_options& opts, char* const* argv, char* const* envp, int out_w,
                int err_w) {
  auto lim = [](uint64_t v) { return rlimit{static_cast<rlim_t>(v), static_cast<rlim_t>(v)}; };
  rlimit cpu = lim(opts.rlimits.cpu_seconds);
  rlimit as = lim(opts.rlimits.memory_mb * 1024 * 1024);
  rlimit nofile = lim(opts.rlimits.open_files);
  const char* cwd = opts.cwd.empty() ? nullptr : opts.cwd.c_str();
  bool switch_user = opts.user.has_value();
  uid_t uid = switch_user ? opts.user->uid : 0;
  gid_t gid = switch_user ? opts.user->gid : 0;
  std::vector<gid_t> groups;
  if (switch_user)
    groups.assign(opts.user->groups.begin(), opts.user->groups.end());
  bool try_close_range = opts.sweep == fd_sweep::close_range;
  std::vector<const char*> cgroup_procs;
  for (auto& p : opts.cgroup_procs)
    cgroup_procs.push_back(p.c_str());
  // Opened here: opening /proc in the child is safe too, but a missing /proc
  // is better known now.
  int proc_dir = ::open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    auto e = errno;
    if (proc_dir >= 0)
      ::close(proc_dir);
    fail("pipe", e);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    auto e = errno;
    ::close(report[0]);
    ::close(report[1]);
    if (proc_dir >= 0)
      ::close(proc_dir);
    fail("fork", e);
  }
  if (pid == 0) {
    auto die = [&](int err) {
      (void)!::write(report[1], &err, sizeof(err));
      ::_exit(127);
    };
    ::setpgid(0, 0);
    // "0" moves the writer: the child joins its groups while still root.
    for (const char* procs : cgroup_procs) {
      int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
      if (fd < 0 || ::write(fd, "0", 1) != 1)
        die(errno);
      ::close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2})
      ::signal(sig, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out_w, 1) < 0 || ::dup2(err_w, 2) < 0)
      die(errno);
    // No descriptor of troupe (sockets, the store, the lock) may reach a job.
    if (!try_close_range || ::close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0) {
      int err = proc_dir >= 0 ? mark_inherited_cloexec(proc_dir) : ENOENT;
      if (err != 0)
        die(err);
    }
    if ((cpu.rlim_cur != 0 && ::setrlimit(RLIMIT_CPU, &cpu) != 0) ||
        (as.rlim_cur != 0 && ::setrlimit(RLIMIT_AS, &as) != 0) ||
        (nofile.rlim_cur != 0 && ::setrlimit(RLIMIT_NOFILE, &nofile) != 0))
      die(errno);
    // Groups first: they can only change while still root.
    if (switch_user && (::syscall(SYS_setgroups, groups.size(), groups.data()) != 0 ||
                        ::syscall(SYS_setresgid, gid, gid, gid) != 0 ||
                        ::syscall(SYS_setresuid, uid, uid, uid) != 0))
      die(errno);
    // As the job's user: a directory it may not enter fails here.
    if (cwd != nullptr && ::chdir(cwd) != 0)
      die(errno);
    ::execvpe(argv[0], argv, envp);
    die(errno);
  }
  ::close(report[1]);
  if (proc_dir >= 0)
    ::close(proc_dir);
  int err = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == sizeof(err)) {
    ::waitpid(pid, nullptr, 0);
    fail("cannot start " + opts.argv[0], err);
  }
  return pid;
}

} // namespace

child spawn(const spawn_options& opts) {
  if (opts.argv.empty())
    throw std::invalid_argument("empty command");
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    fail("pipe", errno);
  if (::pipe2(err, O_CLOEXEC) != 0) {
    auto e = errno;
    ::close(out[0]);
    ::close(out[1]);
    fail("pipe", e);
  }
  std::vector<char*> argv;
  for (auto& s : opts.argv)
    argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& s : opts.env)
    envp.push_back(const_cast<char*>(s.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  if (has_limits(opts.rlimits) || opts.user || opts.sweep != fd_sweep::close_range ||
      !opts.cgroup_procs.empty()) {
    try {
      pid = fork_exec(opts, argv.data(), envp.data(), out[1], err[1]);
    } catch (...) {
      for (int fd : {out[0], out[1], err[0], err[1]})
        ::close(fd);
      throw;
    }
    ::close(out[1]);
    ::close(err[1]);
  } else {
    spawn_attrs a;
    // Own process group (pgid = pid), default signal mask and dispositions:
    // the daemon blocks SIGTERM/SIGINT and ignores SIGPIPE, children must not.
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2})
      sigaddset(&defaults, s);
    posix_spawnattr_setflags(&a.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                          POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK);
    posix_spawnattr_setpgroup(&a.attr, 0);
    posix_spawnattr_setsigmask(&a.attr, &none);
    posix_spawnattr_setsigdefault(&a.attr, &defaults);
    posix_spawn_file_actions_addopen(&a.actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&a.actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&a.actions, err[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&a.actions, 3);
    if (!opts.cwd.empty())
      posix_spawn_file_actions_addchdir_np(&a.actions, opts.cwd.c_str());
    // posix_spawnp: a bare command name is looked up in PATH like a shell does.
    auto rc = ::posix_spawnp(&pid, argv[0], &a.actions, &a.attr, argv.data(), envp.data());
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
      ::close(out[0]);
      ::close(err[0]);
      fail("cannot start " + opts.argv[0], rc);
    }
  }
  child c;
  c.pid = pid;
  c.pidfd = pidfd_open(pid);
  c.out_fd = out[0];
  c.err_fd = err[0];
  if (c.pidfd < 0) {
    auto e = errno;
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(out[0]);
    ::close(err[0]);
    fail("pidfd_open", e);
  }
  return c;
}

bool signal_group(pid_t pgid, int sig) {
  if (pgid <= 0)
    return false;
  return ::kill(-pgid, sig) == 0;
}

bool group_alive(pid_t pgid) {
  return pgid > 0 && (::kill(-pgid, 0) == 0 || errno == EPERM);
}

// -- io -------------------------------------------------------------------------

struct io::impl {
  net::io_context ctx{1};
  net::executor_work_guard<net::io_context::executor_type> guard = net::make_work_guard(ctx);
  std::thread thread;
  // Blocking tasks get a thread of their own: a slow spawn or workspace
  // walk never delays the pipes of running children.
  net::io_context blocking_ctx{1};
  net::executor_work_guard<net::io_context::executor_type> blocking_guard =
      net::make_work_guard(blocking_ctx);
  std::thread blocking_thread;
};

namespace {

class watch_impl final : public watch, public std::enable_shared_from_this<watch_impl> {
public:
  watch_impl(net::io_context& ctx, const child& c, size_t max_line, callbacks cb)
      : ctx_(ctx), out_(ctx, c.out_fd), err_(ctx, c.err_fd), pidfd_(ctx, c.pidfd),
        max_line_(max_line), cb_(std::move(cb)) {}

  void begin() override {
    net::post(ctx_, [self = shared_from_this()] {
      if (self->begun_ || self->closed_)
        return;
      self->begun_ = true;
      self->read(1);
      self->read(2);
      self->wait_exit();
    });
  }

  void resume(uint8_t stream) override {
    net::post(ctx_, [self = shared_from_this(), stream] {
      if (!self->closed_)
        self->read(stream);
    });
  }

  void close() override {
    net::post(ctx_, [self = shared_from_this()] { self->shutdown(); });
  }

private:
  struct pipe_state {
    std::string partial;
    char buf[64 * 1024];
    bool eof = false;
  };

  net::posix::stream_descriptor& fd(uint8_t s) { return s == 1 ? out_ : err_; }
  pipe_state& st(uint8_t s) { return s == 1 ? out_state_ : err_state_; }

  void read(uint8_t s) {
    auto& p = st(s);
    if (p.eof)
      return;
    fd(s).async_read_some(net::buffer(p.buf),
                          [self = shared_from_this(), s](boost::system::error_code ec, size_t n) {
                            self->on_read(s, ec, n);
                          });
  }

  void on_read(uint8_t s, boost::system::error_code ec, size_t n) {
    if (closed_)
      return;
    auto& p = st(s);
    output o;
    o.stream = s;
    o.ts_ns = now_ns();
    if (n > 0)
      split(p, std::string_view{p.buf, n}, o);
    if (ec) {
      // EOF (or an error, which ends the stream just the same).
      if (!p.partial.empty())
        emit(o, p.partial);
      p.partial.clear();
      p.eof = true;
      o.eof = true;
      boost::system::error_code ignored;
      fd(s).close(ignored);
    }
    if (o.count == 0 && !o.eof) {
      read(s); // only a partial line so far
      return;
    }
    cb_.on_output(std::move(o));
  }

  static void emit(output& o, std::string_view line) {
    troupe::pack_line(o.lines, line);
    ++o.count;
  }

  void split(pipe_state& p, std::string_view data, output& o) {
    o.lines.reserve(data.size() + data.size() / 8 + 64);
    size_t pos = 0;
    while (pos < data.size()) {
      auto nl = data.find('\n', pos);
      auto piece =
          data.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
      // Over-long lines are cut into max_line pieces, never dropped.
      while (p.partial.size() + piece.size() > max_line_) {
        auto take = max_line_ - p.partial.size();
        p.partial.append(piece.substr(0, take));
        emit(o, p.partial);
        p.partial.clear();
        piece.remove_prefix(take);
      }
      if (nl == std::string_view::npos) {
        p.partial.append(piece);
        break;
      }
      // A line complete within this read is packed straight from the buffer.
      std::string_view line = piece;
      if (!p.partial.empty()) {
        p.partial.append(piece);
        line = p.partial;
      }
      if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
      emit(o, line);
      p.partial.clear();
      pos = nl + 1;
    }
  }

  void wait_exit() {
    pidfd_.async_wait(net::posix::stream_descriptor::wait_read,
                      [self = shared_from_this()](boost::system::error_code ec) {
                        if (ec)
                          return;
                        self->reap();
                      });
  }

  void reap() {
    siginfo_t info{};
    if (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.native_handle()), &info, WEXITED | WNOHANG) !=
            0 ||
        info.si_pid == 0) {
      // Spurious wake-up: wait again. (ECHILD means someone else reaped it.)
      if (errno == ECHILD) {
        cb_.on_exit(exit_status{-1, 0});
        return;
      }
      wait_exit();
      return;
    }
    exit_status es;
    if (info.si_code == CLD_EXITED)
      es.exit_code = info.si_status;
    else
      es.signal = info.si_status;
    boost::system::error_code ignored;
    pidfd_.close(ignored);
    if (!closed_)
      cb_.on_exit(es);
  }

  /// Stops reporting. The pidfd wait stays armed so the child is still
  /// reaped when it ends (no zombie for the daemon's lifetime).
  void shutdown() {
    if (closed_)
      return;
    closed_ = true;
    boost::system::error_code ignored;
    out_.close(ignored);
    err_.close(ignored);
    if (!begun_) {
      // Never begun: nothing waits on the pidfd, so reap here (the caller
      // killed the process) or let the kernel do it once it ends.
      begun_ = true;
      wait_exit();
    }
  }

  net::io_context& ctx_;
  net::posix::stream_descriptor out_;
  net::posix::stream_descriptor err_;
  net::posix::stream_descriptor pidfd_;
  size_t max_line_;
  callbacks cb_;
  pipe_state out_state_;
  pipe_state err_state_;
  bool begun_ = false;
  bool closed_ = false;
};

} // namespace

io::io() : impl_(std::make_unique<impl>()) {
  impl_->thread = std::thread([this] { impl_->ctx.run(); });
  impl_->blocking_thread = std::thread([this] { impl_->blocking_ctx.run(); });
}

io::~io() {
  // Blocking tasks first: one may still hand a child to the pipe thread.
  impl_->blocking_guard.reset();
  impl_->blocking_ctx.stop();
  if (impl_->blocking_thread.joinable())
    impl_->blocking_thread.join();
  impl_->guard.reset();
  impl_->ctx.stop();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

std::shared_ptr<watch> io::start(const child& c, size_t max_line, callbacks cb) {
  auto w = prepare(c, max_line, std::move(cb));
  w->begin();
  return w;
}

std::shared_ptr<watch> io::prepare(const child& c, size_t max_line, callbacks cb) {
  return std::make_shared<watch_impl>(impl_->ctx, c, max_line, std::move(cb));
}

void io::post_blocking(std::function<void()> task) {
  net::post(impl_->blocking_ctx, std::move(task));
}

} // namespace troupe::process
