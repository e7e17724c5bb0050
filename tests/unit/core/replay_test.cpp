#define CAF_SUITE replay
#include "support/dsl.hpp"

#include <map>
#include <stdexcept>

#include "actors/core/replay.hpp"
#include "support/paced_stream.hpp"

// The shared replay-then-follow mechanism on its own: a stand-in store (a map
// of seq → text), a stream actor that does nothing but use replay_follow, and
// a client (test::paced_stream) that reads when the test says so. Its users
// (event_stream, log_stream, job_stream, log_download) have their own suites.

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// The store: items by seq; `high_water` is the highest seq ever given
/// (retention may have removed the newest), `failing` makes reads throw.
struct fake_store {
  std::map<uint64_t, std::string> items;
  uint64_t high_water = 0;
  bool failing = false;
  size_t reads = 0;

  void add(uint64_t first, uint64_t last, size_t width = 10) {
    for (auto s = first; s <= last; ++s) {
      auto text = std::to_string(s);
      text.resize(std::max(width, text.size()), '.');
      items[s] = text;
    }
    high_water = std::max(high_water, last);
  }
};

replay_follow::reader read_from(std::shared_ptr<fake_store> store) {
  return [store](uint64_t after, replay_fill& fill) {
    ++store->reads;
    if (store->failing)
      throw std::runtime_error("store failure");
    replay_page page;
    page.covered = after;
    for (auto i = store->items.upper_bound(after); i != store->items.end(); ++i) {
      replay_item item{i->first, "item", i->second};
      if (!fill.take(sse_event_bytes(std::to_string(item.seq), item.event, item.data))) {
        page.more = true;
        return page;
      }
      page.covered = i->first;
      page.items.push_back(std::move(item));
      if (fill.full()) {
        page.more = true;
        return page;
      }
    }
    page.covered = std::max(page.covered, store->high_water);
    return page;
  };
}

/// Live items arrive as their seq (committed to the store first); `pass`
/// messages are items filtered out for this client.
using follower_actor = caf::typed_actor<caf::reacts_to<uint64_t>, caf::reacts_to<uint64_t, bool>,
                                        caf::reacts_to<replay_atom>>;

struct follower_state {
  static inline const char* name = "follower";
  replay_follow follow;
  std::shared_ptr<fake_store> store;
  /// Times the replay reached the end of the store.
  size_t caught_up = 0;
};

follower_actor::behavior_type follower(follower_actor::stateful_pointer<follower_state> self,
                                       std::shared_ptr<http::sse_stream> out,
                                       std::shared_ptr<fake_store> store,
                                       std::optional<uint64_t> resume, size_t max_page) {
  self->state.store = store;
  self->state.follow = replay_follow{out, max_page, read_from(store)};
  if (resume) {
    self->state.follow.resume_after(*resume);
    self->state.follow.start(self);
  }
  auto send = [self](const replay_item& item) {
    return self->state.follow.stream().send(std::to_string(item.seq), item.event, item.data);
  };
  return {
      [self, send](uint64_t seq) {
        if (self->state.follow.admit(self, seq) &&
            !send(replay_item{seq, "item", self->state.store->items.at(seq)}))
          self->quit();
      },
      [self](uint64_t seq, bool) { self->state.follow.pass(self, seq, seq); },
      [self, send](replay_atom) {
        if (self->state.follow.step(self, send))
          ++self->state.caught_up;
      },
  };
}

struct fixture : test::deterministic_fixture {
  std::shared_ptr<fake_store> store = std::make_shared<fake_store>();

  follower_actor start(std::shared_ptr<test::paced_stream> out, std::optional<uint64_t> resume,
                       size_t max_page = 500) {
    auto f = sys.spawn(follower, out, store, resume, max_page);
    consume_messages();
    return f;
  }

  follower_state& state(const follower_actor& f) {
    return deref<follower_actor::stateful_base<follower_state>>(f).state;
  }

  /// Commits items first..last and sends them live, one message each.
  void live(const follower_actor& f, uint64_t first, uint64_t last) {
    store->add(first, last);
    for (auto s = first; s <= last; ++s)
      caf::anon_send(f, s);
    consume_messages();
  }

  /// A client that reads: drains and lets the pacing timer fire (bounded).
  void read_all(test::paced_stream& out, const follower_actor& f) {
    for (int i = 0; i < 10'000; ++i) {
      out.drain();
      advance_time(10ms);
      consume_messages();
      if (!state(f).follow.replaying() && out.backlog() == 0)
        break;
    }
    out.drain();
  }

  static std::vector<uint64_t> seqs(const test::paced_stream& out) {
    std::vector<uint64_t> got;
    for (auto& e : out.received)
      got.push_back(std::stoull(e.id));
    return got;
  }

  static std::vector<uint64_t> range(uint64_t first, uint64_t last) {
    std::vector<uint64_t> out;
    for (auto s = first; s <= last; ++s)
      out.push_back(s);
    return out;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(replay_tests, fixture)

CAF_TEST(a resumed client reads the stored items after its cursor then follows live) {
  store->add(1, 50);
  auto out = std::make_shared<test::paced_stream>(1000, 1 << 20);
  auto f = start(out, 20);
  CAF_CHECK(!state(f).follow.replaying());
  CAF_CHECK_EQUAL(state(f).caught_up, 1u);
  CAF_CHECK_EQUAL(state(f).follow.cursor(), 50u);
  live(f, 51, 53);
  out->drain();
  CAF_CHECK_EQUAL(seqs(*out), range(21, 53));
}

CAF_TEST(pages are bounded by the page size and half the client queue in events and bytes) {
  store->add(1, 400, 1000); // 400 items of 1 KB; the client holds 16 KiB
  auto out = std::make_shared<test::paced_stream>(64, 16 << 10);
  auto f = start(out, 0);
  CAF_CHECK_GREATER(out->backlog(), 0u);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_bytes, (16u << 10) / 2 + out->largest);
  read_all(*out, f);
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_bytes, (16u << 10) / 2 + out->largest);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_events, 64u / 2);
  CAF_CHECK_EQUAL(seqs(*out), range(1, 400));
  // Small items: the page size bounds a page (100 items, 15 reads).
  store->items.clear();
  store->add(401, 500);
  auto small = std::make_shared<test::paced_stream>(1000, 1 << 20);
  auto reads = store->reads;
  auto g = start(small, 400, 7);
  read_all(*small, g);
  CAF_CHECK_EQUAL(store->reads - reads, 15u);
  CAF_CHECK_EQUAL(seqs(*small), range(401, 500));
}

CAF_TEST(a client that does not read is never sent more than its queue holds) {
  store->add(1, 1000);
  auto out = std::make_shared<test::paced_stream>(64, 1 << 20);
  auto f = start(out, 0);
  auto reads = store->reads;
  // The client reads nothing: the replay waits, it does not read on.
  for (int i = 0; i < 100; ++i) {
    advance_time(10ms);
    consume_messages();
  }
  CAF_CHECK_EQUAL(store->reads, reads);
  CAF_CHECK(!out->overflowed);
  CAF_CHECK(state(f).follow.replaying());
  read_all(*out, f);
  CAF_CHECK_EQUAL(seqs(*out), range(1, 1000));
}

CAF_TEST(live items during a replay are dropped and the replay reaches them once) {
  store->add(1, 300);
  auto out = std::make_shared<test::paced_stream>(64, 1 << 20);
  auto f = start(out, 0);
  CAF_REQUIRE(state(f).follow.replaying());
  live(f, 301, 400); // while the client reads nothing
  // Two pages of 31 are queued (a page, what is queued and a ping fit);
  // none of the live items is.
  CAF_CHECK_EQUAL(out->backlog(), 62u);
  read_all(*out, f);
  live(f, 401, 402);
  out->drain();
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_EQUAL(seqs(*out), range(1, 402));
}

CAF_TEST(a live item after a gap starts a replay that fills the gap in order) {
  auto out = std::make_shared<test::paced_stream>(1000, 1 << 20);
  auto f = start(out, std::nullopt);
  CAF_CHECK(!state(f).follow.tracking());
  live(f, 10, 12); // following from now: starts at the first live item
  CAF_CHECK_EQUAL(state(f).follow.cursor(), 12u);
  store->add(13, 15); // committed, never delivered live
  live(f, 16, 16);
  live(f, 16, 17); // 16 again: a duplicate
  out->drain();
  CAF_CHECK_EQUAL(seqs(*out), range(10, 17));
}

CAF_TEST(a client that falls behind reads the rest from the store) {
  auto out = std::make_shared<test::paced_stream>(64, 1 << 20);
  auto f = start(out, 0);
  live(f, 1, 3000);
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_events, 64u / 2 + 1);
  CAF_CHECK(state(f).follow.replaying());
  read_all(*out, f);
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_EQUAL(seqs(*out), range(1, 3000));
}

CAF_TEST(items filtered out move the cursor and a gap before them still replays) {
  store->add(1, 5);
  auto out = std::make_shared<test::paced_stream>(1000, 1 << 20);
  auto f = start(out, 5);
  store->add(6, 8);
  CAF_CHECK(!state(f).follow.replaying());
  caf::anon_send(f, uint64_t{6}, true);
  caf::anon_send(f, uint64_t{7}, true);
  consume_messages();
  CAF_CHECK_EQUAL(state(f).follow.cursor(), 7u);
  live(f, 9, 9);
  out->drain();
  // 6 and 7 were not for this client; 8 came without a live message: the
  // gap before 9 is read from the store.
  CAF_CHECK_EQUAL(seqs(*out), (std::vector<uint64_t>{8, 9}));
}

CAF_TEST(paging goes on past seqs the retention removed) {
  store->add(1, 100);
  for (uint64_t s = 10; s <= 60; ++s)
    store->items.erase(s);
  store->add(101, 101);
  store->high_water = 120; // 102..120 were removed too
  auto out = std::make_shared<test::paced_stream>(1000, 1 << 20);
  auto f = start(out, 0, 5);
  read_all(*out, f);
  auto want = range(1, 9);
  for (auto s : range(61, 101))
    want.push_back(s);
  CAF_CHECK_EQUAL(seqs(*out), want);
  CAF_CHECK_EQUAL(state(f).follow.cursor(), 120u);
  live(f, 121, 121); // follows on the high water mark: no replay
  CAF_CHECK_EQUAL(out->backlog(), 1u);
}

CAF_TEST(a store failure closes the stream and ends the follower) {
  store->add(1, 10);
  store->failing = true;
  auto out = std::make_shared<test::paced_stream>(1000, 1 << 20);
  auto f = start(out, 0);
  CAF_CHECK(out->closed());
  CAF_CHECK(deref(f).getf(caf::abstract_actor::is_terminated_flag));
}

CAF_TEST(a closed stream ends the follower at its next step) {
  store->add(1, 1000);
  auto out = std::make_shared<test::paced_stream>(64, 1 << 20);
  auto f = start(out, 0);
  out->close();
  advance_time(10ms);
  consume_messages();
  CAF_CHECK(deref(f).getf(caf::abstract_actor::is_terminated_flag));
}

CAF_TEST_FIXTURE_SCOPE_END()
