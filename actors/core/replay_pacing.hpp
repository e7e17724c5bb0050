#pragma once

// Pacing of replays of stored history (log lines, events) into an SSE stream:
// a page at a time, the next once the client has taken enough of the last,
// so a backlog of any length never overflows the client's queue — counted in
// events and in bytes (a page of long lines must not fill the byte cap).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string_view>

#include "actors/interfaces.hpp"
#include "http/router.hpp"

namespace troupe {

/// What the next replay page may hold.
struct replay_budget {
  size_t events = 0;
  size_t bytes = 0;
  explicit operator bool() const { return events > 0; }
};

/// How much the next page may hold: at most `max_page` events and about half
/// the client's queue, in events and in bytes, so that a page, what is still
/// queued and a keep-alive ping fit. Empty when the actor must not send now:
/// it quit (the stream closed) or scheduled `replay_atom` for itself again
/// (the client is behind: more than a quarter of the byte capacity queued).
template <class Self>
replay_budget next_replay_page(Self* self, const http::sse_stream& stream, size_t max_page) {
  if (stream.closed()) {
    self->quit();
    return {};
  }
  auto cap = stream.capacity();
  auto page = std::max<size_t>(1, std::min(max_page, cap > 1 ? (cap - 1) / 2 : 1));
  auto half_bytes = std::max<size_t>(1, stream.capacity_bytes() / 2);
  auto queued = stream.backlog();
  auto queued_bytes = stream.backlog_bytes();
  if (queued > 0 && (queued + page + 1 > cap || queued_bytes > half_bytes / 2)) {
    self->delayed_send(self, std::chrono::milliseconds(10), replay_atom::value);
    return {};
  }
  return {page, half_bytes - std::min(queued_bytes, half_bytes)};
}

/// About the bytes an event takes in a stream's queue (SSE and chunk framing
/// included).
inline size_t sse_event_bytes(std::string_view id, std::string_view event, std::string_view data) {
  return id.size() + event.size() + data.size() + 40;
}

/// Fills one replay page: the first item always fits (a replay must make
/// progress, however long one line is), later ones only within the budget.
class replay_fill {
public:
  explicit replay_fill(replay_budget budget) : budget_(budget) {}

  /// True if an item of `bytes` fits; then it is counted.
  bool take(size_t bytes) {
    if (events_ > 0 && (events_ >= budget_.events || bytes_ + bytes > budget_.bytes))
      return false;
    ++events_;
    bytes_ += bytes;
    return true;
  }

  /// No further item fits in events (bytes are only known per item).
  bool full() const { return events_ >= budget_.events; }
  size_t events() const { return events_; }

private:
  replay_budget budget_;
  size_t events_ = 0;
  size_t bytes_ = 0;
};

/// True when a client is so far behind that live events should not be queued
/// for it: its stream drops them and reads them from the store once the
/// client caught up, instead of queueing until the client is cut off.
inline bool client_behind(const http::sse_stream& stream) {
  return stream.backlog() * 2 > stream.capacity() ||
         stream.backlog_bytes() * 2 > stream.capacity_bytes();
}

} // namespace troupe
