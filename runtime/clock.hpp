#pragma once

#include <cstdint>
#include <string>

namespace troupe {

/// Wall-clock now, nanoseconds since the Unix epoch.
int64_t now_ns();

/// RFC 3339 UTC with millisecond precision, e.g. 2026-11-22T05:00:00.123Z.
std::string rfc3339(int64_t ns);

} // namespace troupe
