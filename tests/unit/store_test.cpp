#define CAF_SUITE store
#include "support/dsl.hpp"
