// `troupe`: a thin main over the embeddable runtime.
#include <sys/prctl.h>

#include "runtime/cli.hpp"

int main(int argc, char** argv) {
  // First thing: a process of the same user (a job, when jobs.user is not
  // set) may then neither read /proc/PID/environ (tokens, passwords in
  // TROUPE_*) nor ptrace troupe. Core dumps go with it.
  ::prctl(PR_SET_DUMPABLE, 0);
  return troupe::cli::main({argv + 1, argv + argc});
}
