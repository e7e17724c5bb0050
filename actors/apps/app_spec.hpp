#pragma once

// An app's specification (issue 12, the AutoServe seed's shape) as users
// register it in YAML or JSON, validated with errors that name the dotted
// field path (`spec.scaling.maxReplicas`, `spec.env[2].name`), and what an
// instance is started with: its argv with $PORT expanded and its environment.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/ground/expose.hpp"
#include "runtime/ground/spec_document.hpp"

namespace troupe {

/// A command as written: one string run by `/bin/sh -c`, or an argv.
struct app_command {
  /// The argv, or one element holding the shell command.
  std::vector<std::string> words;
  bool shell = false;
};

/// A health probe (Kubernetes semantics: readiness gates traffic, liveness
/// failures restart the instance).
struct app_probe {
  enum class kind { http_get, tcp_socket, exec };
  kind type = kind::http_get;
  /// httpGet: request path (starts with '/').
  std::string path = "/";
  /// httpGet/tcpSocket: the containerPort probed (0: the first port); the
  /// instance's own port for it comes from app_port_index.
  int port = 0;
  /// exec: run in the instance's environment; exit 0 is success.
  app_command command;
  int initial_delay_seconds = 0;
  int interval_seconds = 5;
  int timeout_seconds = 2;
  int failure_threshold = 3;
  int success_threshold = 1;
};

/// Limits of one instance; 0 = none.
struct app_resources {
  /// Thousandths of a CPU ("500m", "0.5" → 500; 1 → 1000).
  uint64_t cpu_millis = 0;
  /// Bytes ("512Mi", "1G", 1048576).
  uint64_t memory_bytes = 0;
};

/// `behavior.scaleUp|scaleDown` (HPA's): how fast replicas may change.
struct app_scaling_rate {
  struct rule {
    /// Pods or Percent.
    std::string type = "Percent";
    int value = 100;
    int period_seconds = 15;
  };
  int stabilization_window_seconds = 0;
  std::vector<rule> policies;
  /// Max, Min or Disabled (no change in this direction).
  std::string select_policy = "Max";
};

/// `scaling.policy` (issue 14): validated and stored here, acted on by the
/// autoscaler. Absent metric blocks are nullopt; a value of 0 is "not set"
/// where the field is optional.
struct app_scaling_policy {
  /// auto or manual.
  std::string mode = "manual";
  int cooldown_seconds = 30;
  int evaluation_seconds = 5;
  double tolerance = 0.1;
  /// For minReplicas 0: no request for this long scales to zero (0: never).
  int idle_seconds = 0;
  struct http_metric {
    double target_rps_per_replica = 0;
    double max_p95_latency_ms = 0;
    int scale_out_threshold_pct = 80;
    int scale_in_threshold_pct = 30;
    int window_seconds = 20;
  };
  std::optional<http_metric> http;
  /// Percent of `resources.cpu` / `resources.memory`.
  std::optional<int> cpu_target_utilization_pct;
  std::optional<int> memory_target_utilization_pct;
  std::optional<double> connections_target_per_replica;
  struct redis_queue {
    std::string url;
    std::string key;
    double target_per_replica = 0;
    int64_t activation_length = 0;
  };
  std::optional<redis_queue> queue_redis;
  struct jobs_queue {
    /// NAME=VALUE: troupe's queued jobs with this label.
    std::string label;
    double target_per_replica = 0;
  };
  std::optional<jobs_queue> queue_jobs;
  app_scaling_rate scale_up;
  app_scaling_rate scale_down;
  int activation_timeout_seconds = 30;
  int activation_max_pending_requests = 1000;
};

struct app_scaling {
  int min_replicas = 1;
  int max_replicas = 1;
  /// Desired count when the app comes up.
  int replicas = 1;
  app_scaling_policy policy;
};

struct app_env_var {
  std::string name;
  std::string value;
  /// `valueFrom: sdk`: troupe provides the value (TROUPE_APP, TROUPE_INSTANCE,
  /// TROUPE_NODE, PORT, PORT_<n>).
  bool from_sdk = false;
};

struct app_spec {
  /// metadata.name: a DNS label (lower-case letters, digits, '-'; <= 63).
  std::string name;
  std::map<std::string, std::string> labels;
  /// spec.type (only http).
  std::string type = "http";
  app_command command;
  /// Appended to the argv; with a shell command they are $1, $2, ...
  std::vector<std::string> args;
  /// Absolute directory the instance runs in (empty: troupe decides).
  std::string working_dir;
  /// spec.ports[].containerPort in order; an instance gets its own port per
  /// entry (PORT, PORT_1, ...). Never empty: no `ports` is one port, 0.
  std::vector<int> container_ports;
  std::optional<app_probe> readiness;
  std::optional<app_probe> liveness;
  app_resources resources;
  app_scaling scaling;
  std::vector<app_env_var> env;
  int drain_seconds = 30;
  int grace_period_seconds = 10;
  /// Always, OnFailure or Never.
  std::string restart_policy = "Always";
  /// spec.expose: how the built-in proxy reaches the app; without it the
  /// app is reached at /{name}/… on the proxy's listener.
  std::optional<expose_rule> expose;
};

/// Parses a JSON document. Unknown fields, wrong types and out-of-range
/// values throw spec_error naming the dotted field path.
app_spec parse_app_spec_json(const std::string& body);

/// Parses a YAML document with the same rules.
app_spec parse_app_spec_yaml(const std::string& body);

/// By content type: YAML for application/yaml, application/x-yaml, text/yaml
/// (parameters ignored); JSON otherwise.
app_spec parse_app_spec(const std::string& body, const std::string& content_type);

/// The stored form: the full spec in its input shape with every default
/// written out; parse_app_spec_json(to_json(s)) gives `s` back.
std::string to_json(const app_spec& spec);

/// What the API shows: to_json with env values and the password of
/// queue.redis.url replaced by "<redacted>".
std::string to_api_json(const app_spec& spec);

/// `text` with $PORT and ${PORT} replaced by ports[0], and $PORT_<n> /
/// ${PORT_<n>} by ports[n] (n >= 1 and within `ports`); other text is kept.
/// `$PORTS` is not a reference ($PORT must end the name).
std::string expand_port(const std::string& text, const std::vector<uint16_t>& ports);

/// The argv an instance runs: command (argv form: words and args with ports
/// expanded; shell form: /bin/sh -c COMMAND NAME ARGS..., the shell expands
/// $PORT from the environment).
std::vector<std::string> app_argv(const app_spec& spec, const std::vector<uint16_t>& ports);

/// Who an instance is, for its environment.
struct instance_identity {
  std::string instance_id;
  std::string node;
  /// The instance's own ports, one per spec.container_ports entry.
  std::vector<uint16_t> ports;
};

/// The variables an instance gets besides the inherited base environment:
/// the spec's env values, then PORT, PORT_<n>, TROUPE_APP, TROUPE_INSTANCE
/// and TROUPE_NODE (troupe's win: the spec cannot set them).
std::map<std::string, std::string> app_instance_env(const app_spec& spec,
                                                    const instance_identity& who);

/// The index in spec.container_ports a probe targets (its `port`, or 0).
size_t app_port_index(const app_spec& spec, const app_probe& probe);

} // namespace troupe
