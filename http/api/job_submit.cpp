#include "http/api/job_submit.hpp"

#include <utility>

#include "http/gate.hpp"
#include "http/multipart.hpp"

namespace troupe {

const char* const accepted_submission_types =
    "application/json, application/yaml (or application/x-yaml, text/yaml, text/x-yaml) "
    "or multipart/form-data";

std::optional<body_format> submission_format(std::string_view content_type) {
  auto type = http::media_type(content_type);
  if (type == "application/json")
    return body_format::json;
  if (http::is_json_or_yaml(type))
    return body_format::yaml;
  if (type == "multipart/form-data")
    return body_format::multipart;
  return std::nullopt;
}

body_bytes request_body(const http::request& req, std::shared_ptr<const void> req_owner) {
  if (req.body_file.empty())
    return {req.body, std::move(req_owner)};
  auto file = std::make_shared<const http::mapped_file>(req.body_file);
  auto bytes = file->bytes();
  return {bytes, std::move(file)};
}

std::optional<std::string> cancel_refusal(const std::string& job_id,
                                          const std::string& submitted_by,
                                          const std::string& principal, http::role granted) {
  if (granted == http::role::admin || submitted_by == principal)
    return std::nullopt;
  return "job " + job_id + " was submitted by another token; cancelling it needs the admin role";
}

std::shared_ptr<task_pool> task_pool::make(size_t limit, launcher launch) {
  return std::shared_ptr<task_pool>(new task_pool(limit, std::move(launch)));
}

task_pool::task_pool(size_t limit, launcher launch)
    : limit_(std::max<size_t>(limit, 1)), launch_(std::move(launch)) {}

void task_pool::submit(task t) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (running_ >= limit_) {
      waiting_.push_back(std::move(t));
      return;
    }
    ++running_;
  }
  launch_([self = shared_from_this(), t = std::move(t)]() mutable { self->work(std::move(t)); });
}

void task_pool::work(task first) {
  for (auto t = std::move(first);;) {
    try {
      t();
    } catch (...) {
      // Tasks handle their errors; one that did not must not cost a worker.
    }
    // Released outside the lock: what a task holds may submit to this pool.
    t = nullptr;
    std::lock_guard<std::mutex> guard{mtx_};
    if (waiting_.empty()) {
      --running_;
      return;
    }
    t = std::move(waiting_.front());
    waiting_.pop_front();
  }
}

size_t task_pool::running() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return running_;
}

size_t task_pool::waiting() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return waiting_.size();
}

} // namespace troupe
