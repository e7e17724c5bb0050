#pragma once

// The decisions of the job submission routes (http/api/job_routes.cpp), kept
// free of HTTP and actors so that unit tests drive them directly.

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "http/router.hpp"

namespace troupe {

/// What a submission body is, by its Content-Type.
enum class body_format { json, yaml, multipart };

/// The format of a submission body; nullopt for any other media type, a
/// missing Content-Type and form bodies included, so that those are never
/// parsed (a browser sends a form cross-origin without asking).
std::optional<body_format> submission_format(std::string_view content_type);

/// The media types submission_format accepts, for 415 messages.
extern const char* const accepted_submission_types;

/// A request's body bytes and what keeps them valid.
struct body_bytes {
  std::string_view bytes;
  std::shared_ptr<const void> owner;
};

/// The body of `req`: the file the server streamed an upload to, mapped
/// read-only (never read into memory), or else `req.body`, which `req_owner`
/// keeps alive. Throws std::system_error naming the file.
body_bytes request_body(const http::request& req, std::shared_ptr<const void> req_owner);

/// Why the caller may not cancel a job, or nullopt if it may: admins cancel
/// any job, everyone else only the jobs their own token submitted.
std::optional<std::string> cancel_refusal(const std::string& job_id,
                                          const std::string& submitted_by,
                                          const std::string& principal, http::role granted);

/// Runs at most `limit` tasks at once; the others wait in FIFO order. It
/// never blocks its caller: a task starts on a worker the launcher provides
/// (a detached actor), and a worker that finished its task runs the next one
/// waiting before it ends. Thread-safe.
class task_pool : public std::enable_shared_from_this<task_pool> {
public:
  using task = std::function<void()>;
  /// Starts `work` on a thread of its own.
  using launcher = std::function<void(std::function<void()> work)>;

  /// `limit` >= 1.
  static std::shared_ptr<task_pool> make(size_t limit, launcher launch);

  /// Starts `t` on a new worker if fewer than `limit` run, else queues it.
  /// Tasks handle their own errors: an exception escaping one is dropped.
  void submit(task t);

  size_t running() const;
  size_t waiting() const;

private:
  task_pool(size_t limit, launcher launch);
  void work(task first);

  const size_t limit_;
  const launcher launch_;
  mutable std::mutex mtx_;
  size_t running_ = 0;
  std::deque<task> waiting_;
};

} // namespace troupe
