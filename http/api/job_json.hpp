#pragma once

#include <string>

#include "persistence/jobs.hpp"

namespace troupe {

/// Shown instead of each value of a spec's `env`.
inline constexpr const char* redacted_env_value = "<redacted>";

/// The record as the API shows it (times in RFC 3339, null when unset). The
/// spec's `env` keeps its names but every value reads redacted: they are
/// often secrets, and only the job needs them.
std::string to_api_json(const persistence::job_record& r);

} // namespace troupe
