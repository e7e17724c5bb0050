#define CAF_SUITE retrying_request
#include "support/dsl.hpp"

#include <map>

#include "actors/core/names.hpp"
#include "actors/core/retrying_request.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// A store that fails its first `failures` writes.
struct flaky_store_state {
  static inline const char* name = "flaky_store";
  int failures = 0;
  int writes = 0;
};

store_actor::behavior_type flaky_store(store_actor::stateful_pointer<flaky_store_state> self,
                                       int failures) {
  self->state.failures = failures;
  return {
      [self](write_atom, write_batch&) -> caf::result<write_result> {
        ++self->state.writes;
        if (self->state.failures-- > 0)
          return caf::make_error(ec::store_failure, std::string{"disk full"});
        return write_result{};
      },
      [](flush_atom) { return ok_atom::value; },
      [](shutdown_atom) { return ok_atom::value; },
      [](commit_atom) {},
      [](status_atom) {
        return component_status{"flaky_store", true, {}};
      },
  };
}

/// Writes one batch through write_to_store when told, retrying per policy.
struct writer_state {
  static inline const char* name = "writer";
  std::map<uint64_t, std::function<void()>> deferred;
  uint64_t next = 0;
  int committed = 0;
  int gave_up = 0;
  caf::error last_error;
};

using writer_ptr = caf::stateful_actor<writer_state>*;

caf::behavior writer(writer_ptr self, retry_policy policy) {
  return {
      [self, policy](write_atom) {
        defer_fn defer = [self](std::chrono::milliseconds delay, std::function<void()> fn) {
          auto key = self->state.next++;
          self->state.deferred.emplace(key, std::move(fn));
          self->delayed_send(self, delay, deferred_atom::value, key);
        };
        write_to_store(
            self, policy, defer, write_batch{write_op{write_op::put, "meta", "k", "v"}},
            [self] { ++self->state.committed; },
            [self](const caf::error& err) {
              ++self->state.gave_up;
              self->state.last_error = err;
            });
      },
      [self](deferred_atom, uint64_t key) {
        auto fn = std::move(self->state.deferred.at(key));
        self->state.deferred.erase(key);
        fn();
      },
  };
}

// consume_messages(), not run(): run() would fire the retry timers early.
struct fixture : test::deterministic_fixture {
  std::vector<caf::actor> spawned;

  ~fixture() override {
    withdraw(sys, names::store);
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    run();
  }

  caf::actor start_writer(retry_policy policy) {
    auto w = sys.spawn(writer, policy);
    spawned.push_back(w);
    return w;
  }

  store_actor start_store(int failures) {
    auto st = sys.spawn(flaky_store, failures);
    spawned.push_back(caf::actor_cast<caf::actor>(st));
    return st;
  }

  writer_state& state(const caf::actor& w) {
    return deref<caf::stateful_actor<writer_state>>(w).state;
  }

  int writes(const store_actor& st) {
    return deref<store_actor::stateful_base<flaky_store_state>>(st).state.writes;
  }
};

constexpr retry_policy three_quick{3, 10ms, 30s};

} // namespace

CAF_TEST_FIXTURE_SCOPE(retrying_request_tests, fixture)

CAF_TEST(a write to a running store commits on the first attempt) {
  auto st = start_store(0);
  enroll(sys, names::store, st);
  auto w = start_writer(three_quick);
  caf::anon_send(w, write_atom::value);
  consume_messages();
  CAF_CHECK_EQUAL(state(w).committed, 1);
  CAF_CHECK_EQUAL(writes(st), 1);
  CAF_CHECK(state(w).deferred.empty());
}

CAF_TEST(a store that is away is waited for one delay at a time) {
  auto w = start_writer(three_quick);
  caf::anon_send(w, write_atom::value);
  consume_messages();
  CAF_CHECK_EQUAL(state(w).committed, 0);
  CAF_CHECK_EQUAL(state(w).deferred.size(), 1u);
  // The store comes back (its supervisor restarted it) before the retry.
  auto st = start_store(0);
  enroll(sys, names::store, st);
  advance_time(9ms);
  consume_messages();
  CAF_CHECK_EQUAL(writes(st), 0);
  advance_time(1ms);
  consume_messages();
  CAF_CHECK_EQUAL(writes(st), 1);
  CAF_CHECK_EQUAL(state(w).committed, 1);
  CAF_CHECK_EQUAL(state(w).gave_up, 0);
}

CAF_TEST(an error reply is retried and the write lands once) {
  auto st = start_store(2);
  enroll(sys, names::store, st);
  auto w = start_writer(three_quick);
  caf::anon_send(w, write_atom::value);
  consume_messages();
  for (int i = 0; i < 2; ++i) {
    advance_time(10ms);
    consume_messages();
  }
  CAF_CHECK_EQUAL(writes(st), 3);
  CAF_CHECK_EQUAL(state(w).committed, 1);
  CAF_CHECK_EQUAL(state(w).gave_up, 0);
}

CAF_TEST(after the last retry the caller gives up with the last error) {
  auto st = start_store(10);
  enroll(sys, names::store, st);
  auto w = start_writer(three_quick);
  caf::anon_send(w, write_atom::value);
  consume_messages();
  for (int i = 0; i < 5; ++i) {
    advance_time(10ms);
    consume_messages();
  }
  CAF_CHECK_EQUAL(writes(st), 4); // the first attempt and three retries
  CAF_CHECK_EQUAL(state(w).committed, 0);
  CAF_CHECK_EQUAL(state(w).gave_up, 1);
  CAF_CHECK_EQUAL(state(w).last_error.code(), static_cast<uint8_t>(ec::store_failure));
}

CAF_TEST(without retries a missing store fails the write at once) {
  auto w = start_writer(no_retry);
  caf::anon_send(w, write_atom::value);
  consume_messages();
  CAF_CHECK_EQUAL(state(w).gave_up, 1);
  CAF_CHECK(state(w).deferred.empty());
  CAF_CHECK_EQUAL(state(w).last_error.code(), static_cast<uint8_t>(ec::unavailable));
  CAF_CHECK(to_string(state(w).last_error).find("store is not running") != std::string::npos);
}

CAF_TEST_FIXTURE_SCOPE_END()
