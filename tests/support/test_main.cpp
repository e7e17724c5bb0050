#define CAF_TEST_NO_MAIN_GUARD
#include "support/dsl.hpp"

#include <caf/test/unit_test_impl.hpp>
