#pragma once

// Pacing of replays of stored history (log lines, events) into an SSE stream:
// a page at a time, the next once the client has taken enough of the last,
// so a backlog of any length never overflows the client's queue.

#include <algorithm>
#include <chrono>
#include <cstddef>

#include "actors/interfaces.hpp"
#include "http/router.hpp"

namespace troupe {

/// How many events the next page may hold: at most `max_page` and about half
/// the client's queue, so that a page, what is still queued and a keep-alive
/// ping fit. 0 when the actor must not send now: it quit (the stream closed)
/// or scheduled `replay_atom` for itself again (the client is behind).
template <class Self>
size_t next_replay_page(Self* self, const http::sse_stream& stream, size_t max_page) {
  if (stream.closed()) {
    self->quit();
    return 0;
  }
  auto cap = stream.capacity();
  auto page = std::max<size_t>(1, std::min(max_page, cap > 1 ? (cap - 1) / 2 : 1));
  auto queued = stream.backlog();
  if (queued > 0 && queued + page + 1 > cap) {
    self->delayed_send(self, std::chrono::milliseconds(10), replay_atom::value);
    return 0;
  }
  return page;
}

} // namespace troupe
