#pragma once

// The config checks whose rules live above the ground floor: API tokens as
// the server's token table takes them, metrics.mapping as the metrics wing
// names series, pushgateway grouping labels as Prometheus and troupe's series
// allow. load_config (ground) checks everything else.

#include "runtime/ground/config.hpp"

namespace troupe {

/// Throws config_error naming the key (or token element) and the reason.
void check_config(const config& c);

/// load_config, then check_config: what the CLI and a host program load.
config load_node_config(const config_sources& src);

} // namespace troupe
