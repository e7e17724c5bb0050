#include "runtime/config_checks.hpp"

#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/metrics/metrics_model.hpp"
#include "actors/metrics/prometheus.hpp"
#include "http/auth.hpp"
#include "runtime/auth_tokens.hpp"

namespace troupe {

namespace {

/// Why a value is unacceptable; empty when it is fine.
using problem = std::optional<std::string>;

/// Names and tokens are checked by the table the server will use, so the
/// config accepts exactly what the runtime can load.
problem valid_tokens(const std::vector<auth_token>& tokens, const config&) {
  try {
    http::token_table{auth::to_entries(tokens, "auth.tokens")};
  } catch (const http::invalid_token_entry& e) {
    throw config_error(e.where(), e.reason());
  }
  return std::nullopt;
}

problem valid_mapping(const std::string& v, const config&) {
  try {
    metrics::naming{v};
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return std::nullopt;
}

problem valid_grouping(const std::string& v, const config& c) {
  if (v.empty())
    return std::nullopt;
  auto doc = nlohmann::json::parse(v, nullptr, false);
  for (auto& [k, val] : doc.items()) {
    if (!val.is_string())
      return k + ": expected a string value";
    if (!prom::valid_label_name(k) || k == "job")
      return k + ": not a usable label name";
    // The Pushgateway refuses a push whose series carry a grouping label
    // with another value: series labels cannot be grouping labels.
    for (auto series_label :
         {"method", "route", "status", "sink", "upstream", "window", "quantile", "le"})
      if (k == series_label)
        return k + ": is a label of troupe's series, not usable for grouping";
    const auto& r = c.metrics.redis;
    if (c.metrics.mode == "redis" &&
        ((k == "tenant" && val != r.tenant) || (k == "project" && val != r.project)))
      return k + ": must equal metrics.redis." + k +
             " in redis mode (troupe_redis_sse_connections "
             "carries it as a label)";
    if (c.metrics.mode == "proxy" && (k == "tenant" || k == "project"))
      return k + ": not usable for grouping in proxy mode (re-exported upstream series may carry "
                 "it with other values)";
  }
  return std::nullopt;
}

} // namespace

void check_config(const config& c) {
  valid_tokens(c.auth.tokens, c);
  if (auto p = valid_mapping(c.metrics.mapping, c))
    throw config_error("metrics.mapping", *p);
  if (auto p = valid_grouping(c.metrics.pushgateway.grouping, c))
    throw config_error("metrics.pushgateway.grouping", *p);
}

config load_node_config(const config_sources& src) {
  auto c = load_config(src);
  check_config(c);
  return c;
}

} // namespace troupe
