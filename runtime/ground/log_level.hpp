#pragma once

// The level of a log line, as the pipeline stores it and sinks label it.

#include <string>
#include <string_view>

namespace troupe {

/// A line's level: the string field `level` (else `severity`) of a top-level
/// JSON object, lower-cased and normalised (warning→warn, err→error,
/// fatal/crit→critical, information→info); otherwise the stream's default.
/// Non-JSON lines cost one character check.
std::string detect_level(std::string_view line, bool is_stderr, std::string_view stdout_level,
                         std::string_view stderr_level);

} // namespace troupe
