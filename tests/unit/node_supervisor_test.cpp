#define CAF_SUITE node_supervisor
#include "support/dsl.hpp"
