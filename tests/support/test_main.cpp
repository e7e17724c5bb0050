// The CAF test runner's main(); every suite links against this.
#include "support/dsl.hpp"

#include <caf/test/unit_test_impl.hpp>

namespace troupe::test {

test_config::test_config() {
  add_troupe_types(*this);
}

} // namespace troupe::test
