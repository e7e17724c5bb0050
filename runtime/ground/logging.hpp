#pragma once

// Structured logging through spdlog: `text` for people, `json` (one object per
// line) for machines. Every line carries the request id of the HTTP call being
// served on that thread, if any.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

namespace troupe::logging {

/// Configures the shared sink and formatter. `format` is json or text.
/// From then on troupe's lines are buffered (at most 1024) until
/// start_capture, so the log pipeline gets those logged before it ran.
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

/// One of troupe's own log lines, captured for the log pipeline.
struct captured_line {
  int64_t ts_ns = 0;
  std::string level;
  std::string logger;
  std::string message;
  std::string request_id;
};

/// Starts copying troupe's own log lines into a bounded buffer (at most
/// `capacity` lines; beyond that the oldest are dropped and counted); lines
/// buffered since setup() are kept and `notify` runs at once for them.
/// `notify` runs (outside any lock) when the buffer turns non-empty. Lines of
/// the loggers in `excluded` (the pipeline's own) are never captured.
void start_capture(size_t capacity, std::function<void()> notify,
                   std::vector<std::string> excluded);

/// Stops capturing (the buffer is discarded).
void stop_capture();

/// Takes everything captured so far; `dropped` gets the number of lines lost
/// to the capacity since the last call.
std::vector<captured_line> take_captured(uint64_t& dropped);

/// Appends `s` to `out` as the contents of a JSON string (no quotes). Control
/// characters are escaped and invalid UTF-8 is replaced with U+FFFD.
void append_json_escaped(std::string& out, std::string_view s);

} // namespace troupe::logging
