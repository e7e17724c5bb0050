#include "http/api/job_json.hpp"

#include <nlohmann/json.hpp>

#include "runtime/ground/clock.hpp"

namespace troupe {

using nlohmann::json;

namespace {

json time_or_null(int64_t ns) {
  return ns == 0 ? json(nullptr) : json(rfc3339(ns));
}

/// Replaces every value of the spec's `env` map.
void redact_env(json& spec) {
  if (!spec.is_object())
    return;
  auto env = spec.find("env");
  if (env == spec.end() || !env->is_object())
    return;
  for (auto& value : *env)
    value = redacted_env_value;
}

} // namespace

std::string to_api_json(const persistence::job_record& r) {
  json j{{"id", r.id},
         {"job_id", r.id},
         {"name", r.name},
         {"status", r.status},
         {"success", r.success ? json(*r.success) : json(nullptr)},
         {"exit_code", r.exit_code ? json(*r.exit_code) : json(nullptr)},
         {"signal", r.signal ? json(*r.signal) : json(nullptr)},
         {"reason", r.reason.empty() ? json(nullptr) : json(r.reason)},
         {"queued_at", time_or_null(r.queued_at)},
         {"start_time", time_or_null(r.started_at)},
         {"end_time", time_or_null(r.ended_at)},
         {"attempt", r.attempt},
         {"retries", r.retries},
         {"priority", r.priority},
         {"labels", r.labels},
         {"node", r.node},
         {"request_id", r.request_id.empty() ? json(nullptr) : json(r.request_id)},
         {"submitted_by", r.submitted_by.empty() ? json(nullptr) : json(r.submitted_by)}};
  auto spec = json::parse(r.spec, nullptr, false);
  if (!spec.is_discarded()) {
    redact_env(spec);
    j["spec"] = std::move(spec);
  }
  return j.dump();
}

} // namespace troupe
