#define CAF_SUITE event_bus
#include "support/dsl.hpp"
