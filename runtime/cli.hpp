#pragma once

#include <string>
#include <vector>

namespace troupe::cli {

/// Runs the `troupe` command line; returns the process exit code.
int main(const std::vector<std::string>& args);

} // namespace troupe::cli
