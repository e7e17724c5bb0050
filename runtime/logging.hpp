#pragma once

// Structured logging through spdlog: `text` for people, `json` (one object per
// line) for machines. Every line carries the request id of the HTTP call being
// served on that thread, if any.

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/logger.h>

namespace troupe::logging {

/// Configures the shared sink and formatter. `format` is json or text.
/// Safe to call again (tests, embedding hosts).
void setup(const std::string& level, const std::string& format);

/// The logger of one component (`http`, `store`, `supervisor` …).
std::shared_ptr<spdlog::logger> get(const std::string& component);

/// The request id bound to the calling thread ("" if none).
const std::string& current_request_id();

/// Binds a request id to the calling thread for the scope's lifetime.
class request_scope {
public:
  explicit request_scope(std::string id);
  ~request_scope();
  request_scope(const request_scope&) = delete;
  request_scope& operator=(const request_scope&) = delete;

private:
  std::string previous_;
};

/// Appends `s` to `out` as the contents of a JSON string (no quotes).
void append_json_escaped(std::string& out, std::string_view s);

} // namespace troupe::logging
