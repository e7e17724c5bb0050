#define CAF_SUITE reconcile
#include "support/dsl.hpp"

#include "actors/apps/reconcile.hpp"

using namespace troupe;

namespace {

reconcile_view inst(std::string id, uint32_t rev, bool ready, int64_t at = 0,
                    bool leaving = false) {
  return reconcile_view{std::move(id), rev, ready, leaving, at};
}

using ids = std::vector<std::string>;

} // namespace

CAF_TEST(an app coming up starts the desired count) {
  auto p = plan_reconcile(3, 1, {});
  CAF_CHECK_EQUAL(p.start, 3u);
  CAF_CHECK(p.drain.empty());
}

CAF_TEST(instances on their way out do not count) {
  auto p = plan_reconcile(2, 1, {inst("a", 1, true), inst("b", 1, false, 0, true)});
  CAF_CHECK_EQUAL(p.start, 1u);
}

CAF_TEST(scale in drains unready instances first then the newest) {
  auto p =
      plan_reconcile(1, 1, {inst("a", 1, true, 1), inst("b", 1, true, 3), inst("c", 1, false, 2)});
  CAF_CHECK_EQUAL(p.start, 0u);
  CAF_CHECK_EQUAL(p.drain, (ids{"c", "b"}));
}

CAF_TEST(scale to zero drains every instance) {
  auto p = plan_reconcile(0, 1, {inst("a", 1, true), inst("b", 1, true)});
  CAF_CHECK_EQUAL(p.drain.size(), 2u);
}

CAF_TEST(a rolling replace surges one new instance and drains nothing yet) {
  auto p = plan_reconcile(2, 2, {inst("a", 1, true), inst("b", 1, true)});
  CAF_CHECK_EQUAL(p.start, 1u);
  CAF_CHECK(p.drain.empty());
}

CAF_TEST(a rolling replace waits while the new instance is not ready) {
  auto p = plan_reconcile(2, 2, {inst("a", 1, true), inst("b", 1, true), inst("n", 2, false)});
  CAF_CHECK_EQUAL(p.start, 0u);
  CAF_CHECK(p.drain.empty());
}

CAF_TEST(a ready new instance lets one old drain and never fewer ready than desired) {
  auto p =
      plan_reconcile(2, 2, {inst("a", 1, true, 1), inst("b", 1, true, 2), inst("n", 2, true, 3)});
  CAF_CHECK_EQUAL(p.start, 0u);
  CAF_CHECK_EQUAL(p.drain, (ids{"b"}));
}

CAF_TEST(after one old drained the next surge follows) {
  auto p =
      plan_reconcile(2, 2, {inst("a", 1, true), inst("b", 1, true, 0, true), inst("n", 2, true)});
  CAF_CHECK_EQUAL(p.start, 1u);
  CAF_CHECK(p.drain.empty());
}

CAF_TEST(an unready old instance drains during a replace without waiting) {
  auto p = plan_reconcile(2, 2, {inst("a", 1, false), inst("b", 1, true), inst("n", 2, false)});
  CAF_CHECK_EQUAL(p.drain, (ids{"a"}));
}

CAF_TEST(the replace finishes with only new instances) {
  auto p = plan_reconcile(2, 2, {inst("n", 2, true), inst("m", 2, true), inst("b", 1, true)});
  CAF_CHECK_EQUAL(p.drain, (ids{"b"}));
  auto done = plan_reconcile(2, 2, {inst("n", 2, true), inst("m", 2, true)});
  CAF_CHECK_EQUAL(done.start, 0u);
  CAF_CHECK(done.drain.empty());
}
