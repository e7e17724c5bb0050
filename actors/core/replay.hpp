#pragma once

// Replay-then-follow, written once: a client's stream of stored history (log
// lines, events, a job's log) that goes on with live items. The store is the
// source of truth and the live path only a shortcut: a client that resumes,
// misses items (a gap) or falls behind reads from the store, a page at a time,
// the next once it has taken enough of the last — counted in events and in
// bytes — and goes back to live delivery at the end of the stored data. So a
// slow client costs no memory however chatty the producer, and it sees every
// item once, in order.
//
// What differs between users (what is read, how it is rendered, what the
// cursor counts) is the `replay_follow::reader` they plug in; the actors keep
// only their own protocol (subscriptions, status events, the end).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/actor_cast.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

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
/// queued and a keep-alive ping fit. Empty when nothing may be sent now: the
/// stream closed, or the client is behind (more than a quarter of the byte
/// capacity, or too many events, queued).
inline replay_budget replay_page_budget(const http::sse_stream& stream, size_t max_page) {
  if (stream.closed())
    return {};
  auto cap = stream.capacity();
  auto page = std::max<size_t>(1, std::min(max_page, cap > 1 ? (cap - 1) / 2 : 1));
  auto half_bytes = std::max<size_t>(1, stream.capacity_bytes() / 2);
  auto queued = stream.backlog();
  auto queued_bytes = stream.backlog_bytes();
  if (queued > 0 && (queued + page + 1 > cap || queued_bytes > half_bytes / 2))
    return {};
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
  /// The most events the page may hold.
  size_t max_events() const { return budget_.events; }

private:
  replay_budget budget_;
  size_t events_ = 0;
  size_t bytes_ = 0;
};

/// True when a client is so far behind that live items should not be queued
/// for it: its stream drops them and reads them from the store once the
/// client caught up, instead of queueing until the client is cut off.
inline bool client_behind(const http::sse_stream& stream) {
  return stream.backlog() * 2 > stream.capacity() ||
         stream.backlog_bytes() * 2 > stream.capacity_bytes();
}

/// One item of a stream, rendered: its seq (the SSE `id:`), event name and
/// data. (A download renders a whole page as one item of raw bytes.)
struct replay_item {
  uint64_t seq = 0;
  std::string event;
  std::string data;
};

/// What one store read found.
struct replay_page {
  /// In seq order.
  std::vector<replay_item> items;
  /// Every seq up to here was looked at (items filtered out, gaps the
  /// retention left): the cursor moves here.
  uint64_t covered = 0;
  /// The read stopped before the end of the stored data (the page was full,
  /// an item did not fit, a scan bound): the next page follows at once.
  bool more = false;
};

/// The cursor, the pacing and the live gate of one replay-then-follow client.
/// A member of the stream actor's state; the actor handles `replay_atom` with
/// step() and passes live items through admit().
class replay_follow {
public:
  /// Reads the page after seq `after` within `fill` (fill.take() per item,
  /// stopping at the first it refuses); may throw (a store failure).
  using reader = std::function<replay_page(uint64_t after, replay_fill& fill)>;

  replay_follow() = default;
  replay_follow(std::shared_ptr<http::sse_stream> stream, size_t max_page, reader read)
      : stream_(std::move(stream)), max_page_(max_page), read_(std::move(read)) {}

  http::sse_stream& stream() const { return *stream_; }
  /// The highest seq handled (sent, filtered out or skipped over).
  uint64_t cursor() const { return cursor_; }
  /// The cursor says where the client is (a Last-Event-ID, a subscription's
  /// answer, or the first live item when following from now).
  bool tracking() const { return tracking_; }
  /// Reading the store: live items are dropped meanwhile (the reads reach them).
  bool replaying() const { return replaying_; }

  /// The client is at `seq` (it resumes after it, or follows from there on).
  void resume_after(uint64_t seq) {
    cursor_ = seq;
    tracking_ = true;
  }

  /// Follows from `seq` on unless the cursor is already past it.
  void follow_from(uint64_t seq) {
    cursor_ = tracking_ ? std::max(cursor_, seq) : seq;
    tracking_ = true;
  }

  /// Drops live items from now on: the caller runs step() itself next.
  void hold() { replaying_ = true; }

  /// The client going away ends the actor (until then the stream's callback
  /// keeps it alive; closing drops the callback and with it the reference).
  template <class Self> void end_with_client(Self* self) {
    stream_->on_close([hdl = caf::actor_cast<caf::actor>(self)] {
      caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
    });
  }

  /// `source` (the bus, the router, the controller) going down ends the
  /// stream: it held the subscription, and the client resumes with
  /// Last-Event-ID from the store.
  template <class Self, class Source> void end_with(Self* self, const Source& source) {
    self->monitor(source);
    self->set_down_handler([self, stream = stream_](caf::down_msg&) {
      stream->close();
      self->quit();
    });
  }

  /// Reads from the store (unless already doing so): step() runs next.
  template <class Self> void start(Self* self) {
    if (replaying_)
      return;
    replaying_ = true;
    self->send(self, replay_atom::value);
  }

  /// The `replay_atom` handler: sends the next page if the client has room
  /// (else tries again shortly), each item through `deliver(item)` (false:
  /// the stream is done, the actor quits). Returns true once the replay
  /// reached the end of the stored data: live delivery goes on from there.
  template <class Self, class Deliver> bool step(Self* self, Deliver&& deliver) {
    if (stream_->closed()) {
      self->quit();
      return false;
    }
    auto budget = replay_page_budget(*stream_, max_page_);
    if (!budget) {
      self->delayed_send(self, std::chrono::milliseconds(10), replay_atom::value);
      return false;
    }
    replay_fill fill{budget};
    replay_page page;
    try {
      page = read_(cursor_, fill);
    } catch (const std::exception&) {
      if (!stream_->closed())
        stream_->close();
      self->quit();
      return false;
    }
    for (auto& item : page.items) {
      if (item.seq <= cursor_)
        continue;
      cursor_ = item.seq;
      if (!deliver(item)) {
        self->quit();
        return false;
      }
    }
    cursor_ = std::max(cursor_, page.covered);
    if (page.more) {
      self->send(self, replay_atom::value);
      return false;
    }
    replaying_ = false;
    return true;
  }

  /// A live item with `seq` arrived: true if it is to be sent now (the
  /// cursor moved to it). False if it is a duplicate, or the store provides
  /// it: a replay is running, or starts because the item does not follow on
  /// the cursor (a gap) or the client is behind.
  template <class Self> bool admit(Self* self, uint64_t seq) {
    if (replaying_)
      return false;
    if (!tracking_)
      resume_after(seq - 1); // following from now: this is where it starts
    if (seq <= cursor_)
      return false;
    if (seq > cursor_ + 1 || client_behind(*stream_)) {
      start(self);
      return false;
    }
    cursor_ = seq;
    return true;
  }

  /// Live items `first`..`last` that are not for this client (filtered out):
  /// the cursor passes them, unless they do not follow on it (a gap starts a
  /// replay, which looks at what came before them).
  template <class Self> void pass(Self* self, uint64_t first, uint64_t last) {
    if (replaying_)
      return;
    if (!tracking_)
      resume_after(first - 1);
    if (first > cursor_ + 1) {
      start(self);
      return;
    }
    cursor_ = std::max(cursor_, last);
  }

private:
  std::shared_ptr<http::sse_stream> stream_;
  size_t max_page_ = 500;
  reader read_;
  uint64_t cursor_ = 0;
  bool tracking_ = false;
  bool replaying_ = false;
};

} // namespace troupe
