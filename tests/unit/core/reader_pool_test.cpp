#define CAF_SUITE reader_pool
#include "support/dsl.hpp"

#include <algorithm>
#include <stdexcept>

#include "actors/core/reader_pool.hpp"

using namespace troupe;

namespace {

struct fixture : test::deterministic_fixture {
  // Scheduled workers: the test coordinator runs them when told to.
  reader_pool pool{sys, 2, 3, false};
  std::vector<int> ran;

  ~fixture() override {
    pool.stop();
    run();
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(reader_pool_tests, fixture)

CAF_TEST(reads run on the workers and past the queue bound they are refused) {
  for (int i = 0; i < 3; ++i)
    CAF_CHECK(pool.submit([this, i] { ran.push_back(i); }));
  CAF_CHECK_EQUAL(pool.pending(), 3u);
  // A fourth would wait beyond http.read_queue: the caller answers 503 busy.
  bool fourth_ran = false;
  CAF_CHECK(!pool.submit([&] { fourth_ran = true; }));
  CAF_CHECK_EQUAL(pool.pending(), 3u);
  CAF_CHECK(ran.empty()); // nothing ran on the caller's thread
  run();
  CAF_CHECK(!fourth_ran);
  std::sort(ran.begin(), ran.end());
  CAF_CHECK_EQUAL(ran, (std::vector<int>{0, 1, 2}));
  CAF_CHECK_EQUAL(pool.pending(), 0u);
  // Room again once they ran.
  CAF_CHECK(pool.submit([this] { ran.push_back(3); }));
  run();
  CAF_CHECK_EQUAL(ran.size(), 4u);
}

CAF_TEST(a failing read gives its place back) {
  CAF_CHECK(pool.submit([] { throw std::runtime_error("store failure"); }));
  run();
  CAF_CHECK_EQUAL(pool.pending(), 0u);
  CAF_CHECK(pool.submit([this] { ran.push_back(1); }));
  run();
  CAF_CHECK_EQUAL(ran.size(), 1u);
}

CAF_TEST(a stopped pool refuses reads and drops queued ones without leaking places) {
  CAF_CHECK(pool.submit([this] { ran.push_back(1); }));
  pool.stop();
  CAF_CHECK(!pool.submit([this] { ran.push_back(2); }));
  run();
  // Whether the queued read ran before the worker stopped or was dropped with
  // its mailbox, its place is given back.
  CAF_CHECK_EQUAL(pool.pending(), 0u);
  CAF_CHECK(ran.size() <= 1u);
}

CAF_TEST_FIXTURE_SCOPE_END()
