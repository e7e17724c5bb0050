#pragma once

// A job's specification as users submit it (JSON, or YAML with
// Content-Type: application/yaml), parsed and validated with errors that name
// the field.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/ground/spec_document.hpp"

namespace troupe {

struct job_resources {
  /// RLIMIT_CPU in seconds (0 = unlimited).
  uint64_t cpu_seconds = 0;
  /// RLIMIT_AS in MiB (0 = unlimited).
  uint64_t memory_mb = 0;
  /// RLIMIT_NOFILE (0 = inherit).
  uint64_t open_files = 0;
};

struct job_spec {
  /// Human name (default: empty; the API shows the id then).
  std::string name;
  /// argv to exec; a string command becomes {"/bin/sh", "-c", command}.
  std::vector<std::string> argv;
  /// True when the command was given as a string (run by /bin/sh -c).
  bool shell = false;
  std::map<std::string, std::string> env;
  /// Relative to the workspace; never escapes it.
  std::string cwd;
  /// 0 = no timeout.
  uint64_t timeout_seconds = 0;
  /// 0–100; higher runs first.
  int priority = 50;
  std::map<std::string, std::string> labels;
  /// Extra attempts after a failure.
  int retries = 0;
  job_resources resources;
};

/// Parses a JSON document. Unknown fields and wrong types throw spec_error.
/// `command` is required unless `default_command` is given (seed endpoints).
job_spec parse_job_spec_json(const std::string& body,
                             const std::optional<std::string>& default_command = std::nullopt);

/// Parses a YAML document with the same rules.
job_spec parse_job_spec_yaml(const std::string& body,
                             const std::optional<std::string>& default_command = std::nullopt);

/// The spec as a JSON object (stored with the job and shown by the API).
std::string to_json(const job_spec& spec);

/// Reads back what to_json wrote (trusted input; throws spec_error if corrupt).
job_spec job_spec_from_json(const std::string& json);

} // namespace troupe
