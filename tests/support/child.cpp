#include "support/child.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace troupe::test {

namespace {

pid_t failed(std::string* error, std::string what) {
  if (error)
    *error = std::move(what);
  return -1;
}

} // namespace

pid_t launch_child(const std::vector<std::string>& args, char* const* envp, const std::string& cwd,
                   int out_fd, int err_fd, std::string* error) {
  if (args.empty())
    return failed(error, "nothing to start");
  std::vector<char*> argv;
  for (const auto& arg : args)
    argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int exec_error[2] = {-1, -1}; // the child writes errno here if execve fails
  if (null_fd < 0 || ::pipe2(exec_error, O_CLOEXEC) != 0) {
    auto why = std::string{"open /dev/null or pipe2: "} + std::strerror(errno);
    if (null_fd >= 0)
      ::close(null_fd);
    return failed(error, why);
  }
  auto parent = ::getpid();
  auto pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls until execve.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    ::setpgid(0, 0);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD})
      ::sigaction(sig, &dfl, nullptr);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    // Descriptors the test process opened without O_CLOEXEC stay out.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (::chdir(cwd.c_str()) == 0)
      ::execve(argv[0], argv.data(), envp);
    int err = errno;
    [[maybe_unused]] auto n = ::write(exec_error[1], &err, sizeof(err));
    ::_exit(127);
  }
  int fork_errno = errno;
  ::close(null_fd);
  ::close(exec_error[1]);
  if (pid < 0) {
    ::close(exec_error[0]);
    return failed(error, std::string{"fork: "} + std::strerror(fork_errno));
  }
  ::setpgid(pid, pid); // also from here, so no signal races the child's call
  int err = 0;
  ssize_t n;
  do {
    n = ::read(exec_error[0], &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  ::close(exec_error[0]);
  if (n > 0) {
    int status;
    ::waitpid(pid, &status, 0);
    return failed(error, "cannot execute " + args.front() + ": " + std::strerror(err));
  }
  return pid;
}

} // namespace troupe::test
