// `troupe`: a thin main over the embeddable runtime.
#include "runtime/cli.hpp"

int main(int argc, char** argv) {
  return troupe::cli::main({argv + 1, argv + argc});
}
