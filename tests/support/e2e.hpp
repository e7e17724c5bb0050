#pragma once

// End-to-end harness: runs the real troupe binary and talks HTTP/SSE to it.
// Every call blocks with a bounded timeout; nothing sleeps to wait for an event.
// Beast stays in e2e.cpp so the test files compile quickly.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <nlohmann/json.hpp>

namespace troupe::e2e {

/// ASan keeps freed memory in quarantine and adds shadow memory, so a
/// sanitized daemon's heap says nothing about troupe's: heap bounds are
/// checked in the normal build only (the sanitizer build still runs the case).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool heap_bounds_checked = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool heap_bounds_checked = false;
#else
inline constexpr bool heap_bounds_checked = true;
#endif
#else
inline constexpr bool heap_bounds_checked = true;
#endif

using namespace std::chrono_literals;

using duration = std::chrono::milliseconds;

/// Name/value pairs: environment variables of a child, or HTTP header fields.
using string_pairs = std::vector<std::pair<std::string, std::string>>;
using environment = string_pairs;
using header_list = string_pairs;

// -- scratch directories ------------------------------------------------------

/// A fresh directory under $TMPDIR (mkdtemp), removed recursively when
/// destroyed unless `keep()` was called.
class scratch_dir {
public:
  explicit scratch_dir(const std::string& prefix = "troupe-e2e");
  ~scratch_dir();
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;

  const std::string& path() const { return path_; }

  /// Leaves the directory on disk after destruction.
  void keep() { keep_ = true; }

private:
  std::string path_;
  bool keep_ = false;
};

// -- processes ----------------------------------------------------------------

/// How a child process ended.
struct exit_status {
  bool signaled = false;
  /// The exit code, or the signal number when `signaled`.
  int value = 0;

  bool exited_with(int code) const { return !signaled && value == code; }
  bool exited_nonzero() const { return !signaled && value != 0; }
  std::string to_string() const;
};

/// Result of running the troupe binary to completion.
struct run_result {
  /// Empty when the process did not end within the timeout (it was killed).
  std::optional<exit_status> status;
  std::string out;
  std::string err;
};

/// What is wrong with `res` as a refused start (exit code 2, `message` on
/// stderr, no "listening on", no `data_dir` created); empty when nothing is.
std::string startup_refusal_problem(const run_result& res, const std::string& message,
                                    const std::string& data_dir);

/// Runs `$TROUPE_BIN args...` with a clean environment plus `env`, in a fresh
/// working directory, and captures its exit status, stdout and stderr.
run_result run_troupe(const std::vector<std::string>& args, const environment& env = {},
                      duration timeout = 20s);

/// How to start a daemon.
struct daemon_options {
  /// Appended after `serve --listen 127.0.0.1:0 --data-dir D --log-format json`.
  std::vector<std::string> args;
  /// Added to the clean environment (PATH, HOME), e.g. TROUPE_* overrides.
  environment env;
  /// An existing data directory to use (and never remove); empty means a
  /// fresh one owned by the daemon object.
  std::string data_dir;
  /// How long to wait for the "listening on" log line.
  duration startup_timeout = 20s;
  /// A command that runs troupe, placed before it (absolute path first),
  /// e.g. {"/usr/bin/setpriv", "--reuid=nobody", ...} to run it as another user.
  std::vector<std::string> wrapper;
  /// Configures an admin token (TROUPE_AUTH__TOKENS) that the request
  /// helpers send to this daemon's port unless a test sets Authorization
  /// itself (an empty value sends none). Off, or when `env` sets any
  /// TROUPE_AUTH__ variable, the daemon's own auth settings apply.
  bool default_token = true;
};

/// A running `troupe serve` process, its captured output (stdout and stderr
/// merged, line by line) and its port. Throws std::runtime_error (with the
/// captured output) if the process does not announce its port in time.
/// The destructor SIGKILLs the process group if still running and reaps it.
class daemon {
public:
  explicit daemon(daemon_options opts = {});
  ~daemon();
  daemon(const daemon&) = delete;
  daemon& operator=(const daemon&) = delete;

  /// The port parsed from the "listening on 127.0.0.1:PORT" log line.
  uint16_t port() const;

  /// The admin token the harness configured ("" if none).
  const std::string& token() const;

  pid_t pid() const;

  const std::string& data_dir() const;

  /// Keeps the data directory after destruction (it stays removable by the
  /// caller); only meaningful when the daemon created it.
  void keep_data_dir();

  /// Sends SIGTERM.
  void terminate();

  /// Sends SIGKILL to the daemon process (not its group).
  void kill9();

  /// True while the process has not been reaped and has not exited.
  bool running();

  /// Waits until the process exits (polling waitpid every 10 ms) and then
  /// briefly for the end of its output. Empty on timeout.
  std::optional<exit_status> wait_exit(duration timeout = 20s);

  /// All output lines so far.
  std::vector<std::string> output() const;

  /// All output so far as one string, for failure messages.
  std::string output_text() const;

  /// Waits for an output line (searching from line `from`, so earlier lines
  /// count too) that satisfies `pred`. Empty on timeout or end of output.
  std::optional<std::string> wait_for_line(const std::function<bool(const std::string&)>& pred,
                                           duration timeout = 20s, size_t from = 0) const;

  /// Waits for an output line that contains a match for `re`.
  std::optional<std::string> wait_for_line(const std::regex& re, duration timeout = 20s,
                                           size_t from = 0) const;

private:
  struct state;
  std::unique_ptr<state> state_;
};

// -- HTTP ---------------------------------------------------------------------

/// A complete HTTP response, or a transport failure (status 0, `error` set).
struct response {
  int status = 0;
  std::string error;
  header_list headers;
  std::string body;

  /// The first header field named `name` (case-insensitive).
  std::optional<std::string> header(std::string_view name) const;

  /// The body parsed as JSON; a discarded value (`is_discarded()`) if invalid.
  nlohmann::json json() const;

  /// Status, headers and body, for failure messages.
  std::string to_string() const;
};

/// The token the request helpers send to `port` (a daemon of this process
/// registers it; "" if none).
std::string token_for(uint16_t port);

/// Sends one request over a fresh connection to 127.0.0.1:port and reads the
/// response; the connection is closed afterwards. Adds the port's token as
/// `Authorization: Bearer` unless `headers` has an Authorization field (an
/// empty one is not sent).
response request(uint16_t port, const std::string& method, const std::string& target,
                 const header_list& headers = {}, const std::string& body = {},
                 duration timeout = 10s);

/// Shorthand for a GET request.
response get(uint16_t port, const std::string& target, const header_list& headers = {},
             duration timeout = 10s);

/// A keep-alive connection: several requests, one TCP connection.
class connection {
public:
  explicit connection(uint16_t port, duration timeout = 10s);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Writes one request and reads its response.
  response request(const std::string& method, const std::string& target,
                   const header_list& headers = {}, const std::string& body = {});

  /// Writes raw bytes (e.g. several pipelined requests) without reading.
  bool send_raw(const std::string& bytes);

  /// Reads the next response (for pipelining after `send_raw`).
  response read_response(bool head_request = false);

  /// False after a connect, read or write failure, a timeout or a close.
  bool is_open() const;

  /// The last transport error, if any.
  const std::string& error() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// What `raw_exchange` saw.
struct raw_result {
  std::string data;
  /// The server closed the connection.
  bool closed = false;
  /// The timeout elapsed before the server closed.
  bool timed_out = false;
  std::string error;
};

/// Writes raw bytes and reads until the server closes or the timeout elapses.
raw_result raw_exchange(uint16_t port, const std::string& bytes, duration timeout = 10s);

/// Splits raw bytes into complete HTTP responses (incomplete tail ignored).
std::vector<response> parse_responses(const std::string& bytes);

// -- server-sent events -------------------------------------------------------

/// One dispatched server-sent event.
/// Calls `pred` every `period` until it holds or `timeout` passes: for state
/// that gives no completion signal (an external server, a background sweep).
bool poll_until(const std::function<bool()>& pred, duration timeout = 30s,
                duration period = std::chrono::milliseconds(20));

struct sse_event {
  /// The last event ID at dispatch time (WHATWG semantics).
  std::string id;
  std::string type = "message";
  std::string data;

  /// `data` parsed as JSON; a discarded value if invalid.
  nlohmann::json json() const;
};

/// Incremental WHATWG event-stream parser: feed it bytes, get events.
class sse_parser {
public:
  std::vector<sse_event> feed(std::string_view bytes);

  /// Number of comment lines (": ping") seen.
  size_t comments() const { return comments_; }

private:
  void on_line(std::vector<sse_event>& out);

  std::string line_;
  bool after_cr_ = false;
  std::string data_;
  std::string type_;
  std::string last_id_;
  size_t comments_ = 0;
};

/// A streaming GET with `Accept: text/event-stream`, read incrementally.
class sse_stream {
public:
  sse_stream(sse_stream&&) noexcept;
  sse_stream& operator=(sse_stream&&) noexcept;
  ~sse_stream();

  /// The response status; 0 if the request failed (see `error()`).
  int status() const;
  const header_list& headers() const;
  std::optional<std::string> header(std::string_view name) const;
  /// True if the body uses chunked transfer encoding.
  bool chunked() const;

  /// The next event; empty when the timeout elapsed (`timed_out()`) or the
  /// stream ended (`ended()`).
  std::optional<sse_event> next(duration timeout = 10s);

  /// Skips events until one of type `type` arrives; empty on timeout or end.
  std::optional<sse_event> next_of_type(const std::string& type, duration timeout = 10s);

  /// The server finished the response or closed the connection.
  bool ended() const;
  /// The last `next` returned empty because its timeout elapsed.
  bool timed_out() const;
  /// A transport error other than a clean end, if any.
  const std::string& error() const;
  /// Every event returned or skipped so far, in order.
  const std::vector<sse_event>& received() const;
  /// Comment lines seen so far.
  size_t comments() const;

  /// Internals, built by open_sse().
  struct impl;
  explicit sse_stream(std::unique_ptr<impl> ptr);

private:
  std::unique_ptr<impl> impl_;
};

/// Opens an SSE stream: sends the GET (plus `headers`) and reads the response
/// header. Check `status()` before reading events. `receive_buffer` > 0
/// sets the socket's SO_RCVBUF before connecting: a slow client that is not
/// reading then holds little in the kernel, and the server's queue fills.
sse_stream open_sse(uint16_t port, const std::string& target = "/events",
                    const header_list& headers = {}, duration timeout = 10s,
                    int receive_buffer = 0);

/// Waits until an event of `type` has been published: replays /events from
/// the start (`Last-Event-ID: 0`) and follows it live. Empty on timeout.
std::optional<sse_event> wait_for_event(uint16_t port, const std::string& type,
                                        duration timeout = 20s);

// -- small helpers for assertions ---------------------------------------------

/// True if `haystack` contains `needle`.
inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// The value at JSON pointer `pointer` ("/error/code"): a string as is,
/// anything else dumped; if absent, a "<missing ...>" text quoting `j`, so a
/// failed equality check shows what came back.
std::string json_field(const nlohmann::json& j, const std::string& pointer);

/// Like above, on the body of `res`; quotes the whole response if it is not
/// JSON.
std::string json_field(const response& res, const std::string& pointer);

/// The events of `type` in a `GET /events` JSON body.
std::vector<nlohmann::json> events_of_type(const nlohmann::json& body, const std::string& type);

} // namespace troupe::e2e
