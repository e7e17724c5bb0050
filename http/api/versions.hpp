#pragma once

#include <string>
#include <utility>
#include <vector>

namespace troupe {

/// The libraries the node was built against and their versions ("1.10.0"), read
/// from their headers, for GET /version. yaml-cpp 0.7 declares no version.
std::vector<std::pair<std::string, std::string>> library_versions();

} // namespace troupe
