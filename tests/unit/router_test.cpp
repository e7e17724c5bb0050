#define CAF_SUITE router
#include "support/dsl.hpp"
