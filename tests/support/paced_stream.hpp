#pragma once

// A stand-in for the HTTP side of an SSE stream or chunked download: it
// queues what producers send, like the server's per-client queue, and the
// test plays the client by draining it when it wants (a slow reader). It
// records the largest backlog seen, in events and bytes, and drops the
// stream like the server does when a limit is passed.

#include <algorithm>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "http/router.hpp"

namespace troupe::test {

class paced_stream final : public http::sse_stream {
public:
  struct item {
    std::string id;
    std::string event;
    std::string data;
  };

  paced_stream(size_t capacity, size_t capacity_bytes)
      : capacity_(capacity), capacity_bytes_(capacity_bytes) {}

  bool send(std::string_view id, std::string_view event, std::string_view data) override {
    return push(item{std::string{id}, std::string{event}, std::string{data}});
  }
  bool comment(std::string_view) override { return !closed_; }
  bool write(std::string_view bytes) override {
    return bytes.empty() || push(item{{}, {}, std::string{bytes}});
  }
  void close() override { mark_closed(); }
  void abort() override {
    aborted = true;
    mark_closed();
  }
  bool closed() const override { return closed_; }
  size_t backlog() const override { return queue_.size(); }
  size_t capacity() const override { return capacity_; }
  size_t backlog_bytes() const override { return queued_bytes_; }
  size_t capacity_bytes() const override { return capacity_bytes_; }
  void on_close(std::function<void()> fn) override {
    if (closed_)
      fn();
    else
      callbacks_.push_back(std::move(fn));
  }

  /// The client reads everything queued so far.
  void drain() {
    received.insert(received.end(), queue_.begin(), queue_.end());
    queue_.clear();
    queued_bytes_ = 0;
  }

  /// What the server would count for an event: SSE lines and chunk framing.
  static size_t bytes_of(const item& x) {
    return x.id.size() + x.event.size() + x.data.size() + 29;
  }

  /// Events the client has read, in order.
  std::vector<item> received;
  size_t peak_events = 0;
  size_t peak_bytes = 0;
  /// The largest single event queued.
  size_t largest = 0;
  /// A limit was passed: the server would have dropped the client.
  bool overflowed = false;
  bool aborted = false;

private:
  bool push(item x) {
    if (closed_)
      return false;
    auto n = bytes_of(x);
    largest = std::max(largest, n);
    queue_.push_back(std::move(x));
    queued_bytes_ += n;
    peak_events = std::max(peak_events, queue_.size());
    peak_bytes = std::max(peak_bytes, queued_bytes_);
    if (queue_.size() > capacity_ || queued_bytes_ > capacity_bytes_) {
      overflowed = true;
      mark_closed();
      return false;
    }
    return true;
  }

  void mark_closed() {
    if (closed_)
      return;
    closed_ = true;
    auto cbs = std::move(callbacks_);
    for (auto& f : cbs)
      f();
  }

  size_t capacity_;
  size_t capacity_bytes_;
  bool closed_ = false;
  std::vector<item> queue_;
  size_t queued_bytes_ = 0;
  std::vector<std::function<void()>> callbacks_;
};

} // namespace troupe::test
