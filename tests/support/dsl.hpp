#pragma once

// Wraps CAF's test DSL: 0.17.6's dsl.hpp uses an undefined FAIL(...).

#include <caf/all.hpp>
#include <caf/test/unit_test.hpp>

#ifndef FAIL
#define FAIL(...) CAF_FAIL(__VA_ARGS__)
#endif

#include <caf/test/dsl.hpp>

#include "actors/interfaces.hpp"

namespace troupe::test {

/// Actor system config with troupe's message types registered.
struct test_config : caf::actor_system_config {
  test_config();
};

/// Deterministic scheduler fixture with troupe's types.
using deterministic_fixture = test_coordinator_fixture<test_config>;

} // namespace troupe::test
