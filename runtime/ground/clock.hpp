#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe {

/// Wall-clock now, nanoseconds since the Unix epoch.
int64_t now_ns();

/// RFC 3339 UTC with millisecond precision, e.g. 2026-11-22T05:00:00.123Z.
std::string rfc3339(int64_t ns);

/// Parses RFC 3339 (`2026-11-22T05:00:00Z`, optional fraction, `Z` or
/// `±HH:MM`) or Unix seconds; nanoseconds since the epoch, nullopt if invalid.
std::optional<int64_t> parse_time(std::string_view text);

} // namespace troupe
