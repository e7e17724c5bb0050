#include "actors/apps/app_spec.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "runtime/ground/text.hpp"
#include "runtime/ground/url.hpp"

namespace troupe {

namespace {

using nlohmann::json;
using kind = doc_value::kind;

// The deepest field is spec.scaling.policy.behavior.scaleUp.policies[i].type;
// deeper containers are kept empty. The value budget bounds YAML aliases.
constexpr doc_limits app_doc_limits{9, 20'000};

constexpr size_t max_name_chars = 63;
constexpr size_t max_labels = 64;
constexpr size_t max_label_value_chars = 256;
constexpr size_t max_words = 256;
constexpr size_t max_word_bytes = 32 * 1024;
constexpr size_t max_ports = 16;
constexpr size_t max_env = 256;
constexpr size_t max_env_name_chars = 256;
constexpr size_t max_env_value_bytes = 32 * 1024;
constexpr size_t max_path_chars = 4096;
constexpr size_t max_probe_path_chars = 1024;
constexpr size_t max_rate_rules = 8;
constexpr size_t max_url_chars = 1024;
constexpr int max_replicas = 1000;
constexpr int max_seconds = 86'400;
constexpr double max_rate = 1e9;
constexpr uint64_t min_memory_bytes = 1ull << 20;
constexpr uint64_t max_memory_bytes = 1ull << 40;
constexpr uint64_t max_cpu_millis = 1024 * 1000;

constexpr const char* redacted = "<redacted>";

/// An object's members by name; unknown names and non-objects throw. A null
/// member (`key: ~`) reads as absent: the default applies.
class object_reader {
public:
  object_reader(const doc_value& v, std::string path, std::initializer_list<std::string_view> known)
      : v_(v), path_(std::move(path)) {
    if (v.type != kind::object)
      throw spec_error(shown(path_), "must be an object");
    for (const auto& [key, value] : v.members)
      if (std::find(known.begin(), known.end(), key) == known.end())
        throw spec_error(field(key), "unknown field");
  }

  const doc_value* get(std::string_view key) const {
    for (const auto& [k, value] : v_.members)
      if (k == key)
        return value.type == kind::null ? nullptr : &value;
    return nullptr;
  }

  std::string field(std::string_view key) const { return join_path(path_, key); }
  const std::string& path() const { return path_; }

  /// Reads an integer member into `out` when present.
  void integer(std::string_view key, int& out, int lo, int hi) const {
    if (auto* x = get(key))
      out = static_cast<int>(read_integer(*x, field(key), lo, hi));
  }

  void number(std::string_view key, double& out, double lo, double hi) const {
    if (auto* x = get(key))
      out = read_number(*x, field(key), lo, hi);
  }

  /// Reads a string member that must be one of `options`.
  void choice(std::string_view key, std::string& out,
              std::initializer_list<std::string_view> options) const {
    auto* x = get(key);
    if (x == nullptr)
      return;
    auto& text = read_string(*x, field(key));
    if (std::find(options.begin(), options.end(), text) != options.end()) {
      out = text;
      return;
    }
    std::string list;
    for (auto o : options)
      list += (list.empty() ? "" : ", ") + std::string{o};
    throw spec_error(field(key), "must be one of " + list + ", got " + describe(*x));
  }

  const doc_value& require(std::string_view key) const {
    auto* x = get(key);
    if (x == nullptr)
      throw spec_error(field(key), "is required");
    return *x;
  }

private:
  static std::string shown(const std::string& path) { return path.empty() ? "body" : path; }

  const doc_value& v_;
  std::string path_;
};

/// A string of at most `limit` bytes, valid UTF-8 (the document checked that).
const std::string& bounded(const doc_value& v, const std::string& field, size_t limit) {
  auto& text = read_string(v, field);
  if (text.size() > limit)
    throw spec_error(field, "must be at most " + std::to_string(limit) + " bytes");
  return text;
}

const doc_value& bounded_list(const doc_value& v, const std::string& field, size_t limit) {
  auto& list = read_array(v, field);
  if (list.items.size() > limit)
    throw spec_error(field, "must have at most " + std::to_string(limit) + " entries");
  return list;
}

bool dns_label(std::string_view s) {
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; };
  return !s.empty() && s.size() <= max_name_chars && std::all_of(s.begin(), s.end(), ok) &&
         s.front() != '-' && s.back() != '-';
}

// -- metadata -------------------------------------------------------------------

void read_metadata(const doc_value& v, app_spec& spec) {
  object_reader r{v, "metadata", {"name", "labels"}};
  auto& name = read_string(r.require("name"), r.field("name"));
  if (!dns_label(name))
    throw spec_error(r.field("name"), "must be a DNS label: 1 to 63 lower-case letters, digits "
                                      "and '-', starting and ending with a letter or digit");
  spec.name = name;
  auto* labels = r.get("labels");
  if (labels == nullptr)
    return;
  auto field = r.field("labels");
  auto& map = read_object(*labels, field);
  if (map.members.size() > max_labels)
    throw spec_error(field, "must have at most " + std::to_string(max_labels) + " entries");
  for (const auto& [key, value] : map.members) {
    auto at = join_path(field, key);
    if (!valid_label_name(key))
      throw spec_error(at, "must be a label name of 1 to 63 characters from A-Z a-z 0-9 _ . - /");
    auto& text = read_string(value, at);
    if (characters(text) > max_label_value_chars)
      throw spec_error(at,
                       "must be at most " + std::to_string(max_label_value_chars) + " characters");
    spec.labels[key] = text;
  }
}

// -- command and process ------------------------------------------------------------

std::vector<std::string> read_words(const doc_value& v, const std::string& field) {
  auto& list = bounded_list(v, field, max_words);
  std::vector<std::string> out;
  for (size_t i = 0; i < list.items.size(); ++i)
    out.push_back(bounded(list.items[i], index_path(field, i), max_word_bytes));
  return out;
}

app_command read_command(const doc_value& v, const std::string& field) {
  if (v.type == kind::string || v.type == kind::plain) {
    if (blank(v.text))
      throw spec_error(field, "must not be empty");
    return {{bounded(v, field, max_word_bytes)}, true};
  }
  if (v.type != kind::array)
    throw spec_error(field, "must be a string (run by /bin/sh -c) or an array of strings");
  auto words = read_words(v, field);
  if (words.empty())
    throw spec_error(field, "must not be empty");
  if (words.front().empty())
    throw spec_error(index_path(field, 0), "must not be empty");
  return {std::move(words), false};
}

std::string read_working_dir(const doc_value& v, const std::string& field) {
  auto& dir = bounded(v, field, max_path_chars);
  if (dir.empty() || dir.front() != '/')
    throw spec_error(field, "must be an absolute path");
  return dir;
}

std::vector<int> read_ports(const doc_value& v, const std::string& field) {
  auto& list = bounded_list(v, field, max_ports);
  std::vector<int> out;
  for (size_t i = 0; i < list.items.size(); ++i) {
    object_reader r{list.items[i], index_path(field, i), {"containerPort"}};
    auto port = static_cast<int>(
        read_integer(r.require("containerPort"), r.field("containerPort"), 1, 65535));
    if (std::find(out.begin(), out.end(), port) != out.end())
      throw spec_error(r.field("containerPort"), "duplicates an earlier containerPort");
    out.push_back(port);
  }
  if (out.empty())
    out.push_back(0);
  return out;
}

// -- probes -----------------------------------------------------------------------

void read_probe_port(const object_reader& r, app_probe& p) {
  if (auto* x = r.get("port"))
    p.port = static_cast<int>(read_integer(*x, r.field("port"), 1, 65535));
}

void read_http_get(const doc_value& v, const std::string& field, app_probe& p) {
  object_reader r{v, field, {"path", "port"}};
  p.type = app_probe::kind::http_get;
  if (auto* x = r.get("path")) {
    auto& path = bounded(*x, r.field("path"), max_probe_path_chars);
    auto bad = [](char c) { return std::iscntrl(static_cast<unsigned char>(c)) || c == ' '; };
    if (path.empty() || path.front() != '/' || std::any_of(path.begin(), path.end(), bad))
      throw spec_error(r.field("path"), "must start with '/' and hold no spaces or control "
                                        "characters");
    p.path = path;
  }
  read_probe_port(r, p);
}

void read_tcp_socket(const doc_value& v, const std::string& field, app_probe& p) {
  object_reader r{v, field, {"port"}};
  p.type = app_probe::kind::tcp_socket;
  read_probe_port(r, p);
}

void read_exec(const doc_value& v, const std::string& field, app_probe& p) {
  object_reader r{v, field, {"command"}};
  p.type = app_probe::kind::exec;
  p.command = read_command(r.require("command"), r.field("command"));
}

app_probe read_probe(const doc_value& v, const std::string& field) {
  object_reader r{v,
                  field,
                  {"httpGet", "tcpSocket", "exec", "initialDelaySeconds", "intervalSeconds",
                   "timeoutSeconds", "failureThreshold", "successThreshold"}};
  app_probe p;
  int handlers = 0;
  if (auto* x = r.get("httpGet"); x && ++handlers)
    read_http_get(*x, r.field("httpGet"), p);
  if (auto* x = r.get("tcpSocket"); x && ++handlers)
    read_tcp_socket(*x, r.field("tcpSocket"), p);
  if (auto* x = r.get("exec"); x && ++handlers)
    read_exec(*x, r.field("exec"), p);
  if (handlers != 1)
    throw spec_error(field, "needs exactly one of httpGet, tcpSocket, exec");
  r.integer("initialDelaySeconds", p.initial_delay_seconds, 0, max_seconds);
  r.integer("intervalSeconds", p.interval_seconds, 1, max_seconds);
  r.integer("timeoutSeconds", p.timeout_seconds, 1, max_seconds);
  r.integer("failureThreshold", p.failure_threshold, 1, 1000);
  r.integer("successThreshold", p.success_threshold, 1, 1000);
  return p;
}

/// The field of a probe's port (`spec.health.httpGet.port`), for errors.
std::string probe_port_field(const std::string& probe_field, const app_probe& p) {
  auto handler = p.type == app_probe::kind::http_get ? "httpGet" : "tcpSocket";
  return join_path(join_path(probe_field, handler), "port");
}

void check_probe_port(const app_spec& spec, const std::optional<app_probe>& p,
                      const std::string& field) {
  if (!p || p->type == app_probe::kind::exec || p->port == 0)
    return;
  auto& ports = spec.container_ports;
  if (std::find(ports.begin(), ports.end(), p->port) == ports.end())
    throw spec_error(probe_port_field(field, *p), "must be one of spec.ports[].containerPort");
}

// -- resources --------------------------------------------------------------------

/// "0.5", "500m", 1, 1.25 → thousandths of a CPU.
uint64_t read_cpu(const doc_value& v, const std::string& field) {
  auto refuse = [&] {
    return spec_error(field, "must be CPUs as a number (0.5, 2) or millicores (500m), from 1m to " +
                                 std::to_string(max_cpu_millis / 1000) + ", got " + describe(v));
  };
  if (v.type != kind::string && v.type != kind::plain && v.type != kind::integer &&
      v.type != kind::floating)
    throw refuse();
  std::string_view text = v.text;
  double millis = 0;
  if (!text.empty() && text.back() == 'm') {
    uint64_t n = 0;
    auto [end, err] = std::from_chars(text.data(), text.data() + text.size() - 1, n);
    if (err != std::errc{} || end != text.data() + text.size() - 1 || text.size() == 1)
      throw refuse();
    millis = static_cast<double>(n);
  } else {
    double cpus = 0;
    auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), cpus);
    if (text.empty() || err != std::errc{} || end != text.data() + text.size())
      throw refuse();
    millis = cpus * 1000;
  }
  if (!(millis >= 1 && millis <= static_cast<double>(max_cpu_millis)) ||
      millis != std::floor(millis))
    throw refuse();
  return static_cast<uint64_t>(millis);
}

/// "512Mi", "1Gi", "1G", "64M", 1048576 → bytes.
uint64_t read_memory(const doc_value& v, const std::string& field) {
  auto refuse = [&] {
    return spec_error(field, "must be bytes or a size with Ki, Mi, Gi, Ti, K, M, G or T "
                             "(512Mi, 1G), from 1Mi to 1Ti, got " +
                                 describe(v));
  };
  if (v.type != kind::string && v.type != kind::plain && v.type != kind::integer)
    throw refuse();
  static constexpr std::pair<std::string_view, uint64_t> units[] = {
      {"Ki", 1ull << 10}, {"Mi", 1ull << 20}, {"Gi", 1ull << 30},  {"Ti", 1ull << 40},
      {"K", 1000},        {"M", 1000'000},    {"G", 1000'000'000}, {"T", 1000'000'000'000}};
  std::string_view text = v.text;
  uint64_t scale = 1;
  for (auto [suffix, factor] : units)
    if (text.size() > suffix.size() && text.substr(text.size() - suffix.size()) == suffix) {
      text.remove_suffix(suffix.size());
      scale = factor;
      break;
    }
  uint64_t n = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || err != std::errc{} || end != text.data() + text.size() ||
      n > max_memory_bytes / scale)
    throw refuse();
  auto bytes = n * scale;
  if (bytes < min_memory_bytes || bytes > max_memory_bytes)
    throw refuse();
  return bytes;
}

app_resources read_resources(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"cpu", "memory"}};
  app_resources out;
  if (auto* x = r.get("cpu"))
    out.cpu_millis = read_cpu(*x, r.field("cpu"));
  if (auto* x = r.get("memory"))
    out.memory_bytes = read_memory(*x, r.field("memory"));
  return out;
}

// -- scaling policy -------------------------------------------------------------------

app_scaling_policy::http_metric read_http_metric(const doc_value& v, const std::string& field) {
  object_reader r{v,
                  field,
                  {"targetRPSPerReplica", "maxP95LatencyMs", "scaleOutThresholdPct",
                   "scaleInThresholdPct", "windowSeconds"}};
  app_scaling_policy::http_metric m;
  r.number("targetRPSPerReplica", m.target_rps_per_replica, 0, max_rate);
  r.number("maxP95LatencyMs", m.max_p95_latency_ms, 0, 3'600'000);
  r.integer("scaleOutThresholdPct", m.scale_out_threshold_pct, 1, 100);
  r.integer("scaleInThresholdPct", m.scale_in_threshold_pct, 0, 100);
  r.integer("windowSeconds", m.window_seconds, 1, 3600);
  if (m.target_rps_per_replica <= 0 && m.max_p95_latency_ms <= 0)
    throw spec_error(field, "needs targetRPSPerReplica or maxP95LatencyMs (above 0)");
  if (m.scale_in_threshold_pct >= m.scale_out_threshold_pct)
    throw spec_error(r.field("scaleInThresholdPct"), "must be below scaleOutThresholdPct (" +
                                                         std::to_string(m.scale_out_threshold_pct) +
                                                         ")");
  return m;
}

int read_utilization(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"targetUtilizationPct"}};
  return static_cast<int>(
      read_integer(r.require("targetUtilizationPct"), r.field("targetUtilizationPct"), 1, 100));
}

/// A target per replica: required and above 0.
double read_target(const object_reader& r, std::string_view key) {
  auto target = read_number(r.require(key), r.field(key), 0, max_rate);
  if (target <= 0)
    throw spec_error(r.field(key), "must be above 0");
  return target;
}

app_scaling_policy::redis_queue read_redis_queue(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"url", "key", "targetPerReplica", "activationLength"}};
  app_scaling_policy::redis_queue q;
  q.url = bounded(r.require("url"), r.field("url"), max_url_chars);
  std::string why;
  if (!redis::parse_url(q.url, &why))
    throw spec_error(r.field("url"), why);
  q.key = bounded(r.require("key"), r.field("key"), max_url_chars);
  if (q.key.empty())
    throw spec_error(r.field("key"), "must not be empty");
  q.target_per_replica = read_target(r, "targetPerReplica");
  if (auto* x = r.get("activationLength"))
    q.activation_length = read_integer(*x, r.field("activationLength"), 0, 1'000'000'000);
  return q;
}

app_scaling_policy::jobs_queue read_jobs_queue(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"label", "targetPerReplica"}};
  app_scaling_policy::jobs_queue q;
  q.label = bounded(r.require("label"), r.field("label"), 64 + max_label_value_chars);
  auto eq = q.label.find('=');
  if (eq == std::string::npos || !valid_label_name(q.label.substr(0, eq)))
    throw spec_error(r.field("label"), "must be NAME=VALUE with a label name of 1 to 63 "
                                       "characters from A-Z a-z 0-9 _ . - /");
  q.target_per_replica = read_target(r, "targetPerReplica");
  return q;
}

void read_queue(const doc_value& v, const std::string& field, app_scaling_policy& p) {
  object_reader r{v, field, {"redis", "jobs"}};
  if (auto* x = r.get("redis"))
    p.queue_redis = read_redis_queue(*x, r.field("redis"));
  if (auto* x = r.get("jobs"))
    p.queue_jobs = read_jobs_queue(*x, r.field("jobs"));
}

app_scaling_rate::rule read_rate_rule(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"type", "value", "periodSeconds"}};
  app_scaling_rate::rule rule;
  r.choice("type", rule.type, {"Pods", "Percent"});
  rule.value = static_cast<int>(read_integer(r.require("value"), r.field("value"), 1, 1000));
  r.integer("periodSeconds", rule.period_seconds, 1, 1800);
  return rule;
}

void read_rate(const doc_value& v, const std::string& field, app_scaling_rate& out) {
  object_reader r{v, field, {"stabilizationWindowSeconds", "policies", "selectPolicy"}};
  r.integer("stabilizationWindowSeconds", out.stabilization_window_seconds, 0, 3600);
  if (auto* x = r.get("policies")) {
    auto& list = bounded_list(*x, r.field("policies"), max_rate_rules);
    if (list.items.empty())
      throw spec_error(r.field("policies"), "must not be empty (leave it out for the defaults)");
    out.policies.clear();
    for (size_t i = 0; i < list.items.size(); ++i)
      out.policies.push_back(read_rate_rule(list.items[i], index_path(r.field("policies"), i)));
  }
  r.choice("selectPolicy", out.select_policy, {"Max", "Min", "Disabled"});
}

/// HPA's defaults: up by 100 % or 4 pods per 15 s, down by 100 % per 15 s
/// after a 300 s stabilization window.
void default_rates(app_scaling_policy& p) {
  p.scale_up.stabilization_window_seconds = 0;
  p.scale_up.policies = {{"Percent", 100, 15}, {"Pods", 4, 15}};
  p.scale_down.stabilization_window_seconds = 300;
  p.scale_down.policies = {{"Percent", 100, 15}};
}

void read_behavior(const doc_value& v, const std::string& field, app_scaling_policy& p) {
  object_reader r{v, field, {"scaleUp", "scaleDown"}};
  if (auto* x = r.get("scaleUp"))
    read_rate(*x, r.field("scaleUp"), p.scale_up);
  if (auto* x = r.get("scaleDown"))
    read_rate(*x, r.field("scaleDown"), p.scale_down);
}

void read_activation(const doc_value& v, const std::string& field, app_scaling_policy& p) {
  object_reader r{v, field, {"timeoutSeconds", "maxPendingRequests"}};
  r.integer("timeoutSeconds", p.activation_timeout_seconds, 1, 3600);
  r.integer("maxPendingRequests", p.activation_max_pending_requests, 1, 100'000);
}

bool has_metric(const app_scaling_policy& p) {
  return p.http || p.cpu_target_utilization_pct || p.memory_target_utilization_pct ||
         p.connections_target_per_replica || p.queue_redis || p.queue_jobs;
}

app_scaling_policy read_policy(const doc_value& v, const std::string& field) {
  object_reader r{v,
                  field,
                  {"mode", "cooldownSeconds", "evaluationSeconds", "tolerance", "idleSeconds",
                   "http", "cpu", "memory", "connections", "queue", "behavior", "activation"}};
  app_scaling_policy p;
  default_rates(p);
  // A policy block is written to autoscale; `mode: manual` keeps it stored only.
  p.mode = "auto";
  r.choice("mode", p.mode, {"auto", "manual"});
  r.integer("cooldownSeconds", p.cooldown_seconds, 0, max_seconds);
  r.integer("evaluationSeconds", p.evaluation_seconds, 1, 3600);
  r.number("tolerance", p.tolerance, 0, 1);
  r.integer("idleSeconds", p.idle_seconds, 0, 7 * max_seconds);
  if (auto* x = r.get("http"))
    p.http = read_http_metric(*x, r.field("http"));
  if (auto* x = r.get("cpu"))
    p.cpu_target_utilization_pct = read_utilization(*x, r.field("cpu"));
  if (auto* x = r.get("memory"))
    p.memory_target_utilization_pct = read_utilization(*x, r.field("memory"));
  if (auto* x = r.get("connections")) {
    object_reader c{*x, r.field("connections"), {"targetPerReplica"}};
    p.connections_target_per_replica = read_target(c, "targetPerReplica");
  }
  if (auto* x = r.get("queue"))
    read_queue(*x, r.field("queue"), p);
  if (auto* x = r.get("behavior"))
    read_behavior(*x, r.field("behavior"), p);
  if (auto* x = r.get("activation"))
    read_activation(*x, r.field("activation"), p);
  if (p.mode == "auto" && !has_metric(p))
    throw spec_error(field, "mode auto needs at least one of http, cpu, memory, connections, "
                            "queue");
  return p;
}

app_scaling read_scaling(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"minReplicas", "maxReplicas", "replicas", "policy"}};
  app_scaling s;
  r.integer("minReplicas", s.min_replicas, 0, max_replicas);
  auto* max = r.get("maxReplicas");
  auto* replicas = r.get("replicas");
  s.replicas = replicas
                   ? static_cast<int>(read_integer(*replicas, r.field("replicas"), 0, max_replicas))
                   : s.min_replicas;
  // Without maxReplicas the app keeps the size it is given.
  s.max_replicas =
      max ? static_cast<int>(read_integer(*max, r.field("maxReplicas"), 1, max_replicas))
          : std::max({s.min_replicas, s.replicas, 1});
  if (s.max_replicas < s.min_replicas)
    throw spec_error(r.field("maxReplicas"),
                     "must be >= minReplicas (" + std::to_string(s.min_replicas) + ")");
  if (s.replicas < s.min_replicas || s.replicas > s.max_replicas)
    throw spec_error(r.field("replicas"),
                     "must be between minReplicas (" + std::to_string(s.min_replicas) +
                         ") and maxReplicas (" + std::to_string(s.max_replicas) + ")");
  if (auto* x = r.get("policy"))
    s.policy = read_policy(*x, r.field("policy"));
  else
    default_rates(s.policy);
  return s;
}

/// Policy rules that need other parts of the spec.
void check_policy(const app_spec& spec) {
  const auto& p = spec.scaling.policy;
  const std::string field = "spec.scaling.policy";
  if (p.cpu_target_utilization_pct && spec.resources.cpu_millis == 0)
    throw spec_error(field + ".cpu", "needs spec.resources.cpu (utilization is of the limit)");
  if (p.memory_target_utilization_pct && spec.resources.memory_bytes == 0)
    throw spec_error(field + ".memory",
                     "needs spec.resources.memory (utilization is of the limit)");
  if (p.idle_seconds > 0 && spec.scaling.min_replicas != 0)
    throw spec_error(field + ".idleSeconds", "needs spec.scaling.minReplicas 0");
}

// -- env --------------------------------------------------------------------------

/// PORT_<n> with n >= 1; `n` is set.
bool further_port_name(std::string_view name, size_t* n) {
  constexpr std::string_view prefix = "PORT_";
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix)
    return false;
  auto digits = name.substr(prefix.size());
  auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), *n);
  return err == std::errc{} && end == digits.data() + digits.size() && *n >= 1;
}

bool troupe_sets(std::string_view name) {
  size_t n = 0;
  return name == "PORT" || name.substr(0, 7) == "TROUPE_" || further_port_name(name, &n);
}

bool sdk_provides(std::string_view name, size_t port_count) {
  size_t n = 0;
  if (further_port_name(name, &n))
    return n < port_count;
  return name == "PORT" || name == "TROUPE_APP" || name == "TROUPE_INSTANCE" ||
         name == "TROUPE_NODE";
}

app_env_var read_env_var(const doc_value& v, const std::string& field, size_t port_count) {
  object_reader r{v, field, {"name", "value", "valueFrom"}};
  app_env_var e;
  e.name = bounded(r.require("name"), r.field("name"), max_env_name_chars);
  if (!valid_env_name(e.name))
    throw spec_error(r.field("name"), "must be a variable name of letters, digits and _ (not "
                                      "starting with a digit)");
  auto* value = r.get("value");
  auto* from = r.get("valueFrom");
  if ((value != nullptr) == (from != nullptr))
    throw spec_error(field, "needs exactly one of value, valueFrom");
  if (value != nullptr) {
    if (troupe_sets(e.name))
      throw spec_error(r.field("name"), "is set by troupe (PORT, PORT_<n>, TROUPE_*); use "
                                        "valueFrom: sdk");
    e.value = bounded(*value, r.field("value"), max_env_value_bytes);
    return e;
  }
  if (read_string(*from, r.field("valueFrom")) != "sdk")
    throw spec_error(r.field("valueFrom"), "must be sdk, got " + describe(*from));
  if (!sdk_provides(e.name, port_count))
    throw spec_error(r.field("name"), "is not a value troupe provides: TROUPE_APP, "
                                      "TROUPE_INSTANCE, TROUPE_NODE, PORT or PORT_<n> of a "
                                      "further port");
  e.from_sdk = true;
  return e;
}

std::vector<app_env_var> read_env(const doc_value& v, const std::string& field, size_t port_count) {
  auto& list = bounded_list(v, field, max_env);
  std::vector<app_env_var> out;
  for (size_t i = 0; i < list.items.size(); ++i) {
    auto at = index_path(field, i);
    auto e = read_env_var(list.items[i], at, port_count);
    auto same = [&](const app_env_var& x) { return x.name == e.name; };
    if (auto prev = std::find_if(out.begin(), out.end(), same); prev != out.end())
      throw spec_error(join_path(at, "name"),
                       "duplicates " + index_path(field, static_cast<size_t>(prev - out.begin())) +
                           ".name");
    out.push_back(std::move(e));
  }
  return out;
}

void read_termination(const doc_value& v, const std::string& field, app_spec& spec) {
  object_reader r{v, field, {"drainSeconds", "gracePeriodSeconds"}};
  r.integer("drainSeconds", spec.drain_seconds, 0, 3600);
  r.integer("gracePeriodSeconds", spec.grace_period_seconds, 0, 3600);
}

expose_rule read_expose(const doc_value& v, const std::string& field) {
  object_reader r{v, field, {"host", "pathPrefix", "stripPrefix", "port"}};
  expose_rule e;
  if (auto* x = r.get("host")) {
    e.host = ascii_lower(read_string(*x, r.field("host")));
    auto name = std::string_view{e.host};
    if (name.size() > 2 && name.substr(0, 2) == "*.")
      name.remove_prefix(2);
    bool ok = !name.empty() && name.size() <= 253 && name.front() != '.' && name.back() != '.' &&
              name.find("..") == std::string_view::npos;
    for (char c : name)
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.');
    if (!ok)
      throw spec_error(r.field("host"), "must be a host name (letters, digits, '-', '.') or "
                                        "*.suffix, at most 253 characters");
  }
  if (auto* x = r.get("pathPrefix")) {
    e.path_prefix = read_string(*x, r.field("pathPrefix"));
    auto& p = e.path_prefix;
    bool ok = !p.empty() && p.front() == '/' && p.size() <= 1024 && (p == "/" || p.back() != '/') &&
              p.find("//") == std::string::npos;
    for (unsigned char c : p)
      ok = ok && c > 0x20 && c < 0x7f && c != '?' && c != '#';
    if (!ok)
      throw spec_error(r.field("pathPrefix"),
                       "must start with '/', have no '?', '#', spaces, '//' or trailing '/'");
  }
  if (auto* x = r.get("stripPrefix")) {
    e.strip_prefix = read_bool(*x, r.field("stripPrefix"));
    if (e.strip_prefix && e.path_prefix.empty())
      throw spec_error(r.field("stripPrefix"), "needs a pathPrefix to strip");
  }
  int port = 0;
  r.integer("port", port, 1024, 65535);
  e.port = static_cast<uint16_t>(port);
  if (e.host.empty() && e.path_prefix.empty() && e.port == 0)
    throw spec_error(field, "needs host, pathPrefix or port (without expose the app is "
                            "reached at /<name>/ on the proxy)");
  return e;
}

// -- the document -----------------------------------------------------------------

void read_spec_section(const doc_value& v, app_spec& spec) {
  object_reader r{v,
                  "spec",
                  {"type", "image", "command", "args", "workingDir", "ports", "health", "readiness",
                   "liveness", "resources", "scaling", "env", "termination", "restartPolicy",
                   "expose"}};
  if (r.get("image"))
    throw spec_error(r.field("image"), "is not supported: the process backend runs `command` "
                                       "(there is no container engine); give spec.command");
  r.choice("type", spec.type, {"http"});
  spec.command = read_command(r.require("command"), r.field("command"));
  if (auto* x = r.get("args"))
    spec.args = read_words(*x, r.field("args"));
  if (auto* x = r.get("workingDir"))
    spec.working_dir = read_working_dir(*x, r.field("workingDir"));
  spec.container_ports = {0};
  if (auto* x = r.get("ports"))
    spec.container_ports = read_ports(*x, r.field("ports"));
  if (auto* x = r.get("health"))
    spec.readiness = spec.liveness = read_probe(*x, r.field("health"));
  if (auto* x = r.get("readiness"))
    spec.readiness = read_probe(*x, r.field("readiness"));
  if (auto* x = r.get("liveness"))
    spec.liveness = read_probe(*x, r.field("liveness"));
  // Kubernetes' rule: one success proves a live process.
  if (spec.liveness && spec.liveness->success_threshold != 1 && r.get("liveness"))
    throw spec_error(r.field("liveness.successThreshold"), "must be 1 for liveness");
  if (spec.liveness && !r.get("liveness"))
    spec.liveness->success_threshold = 1;
  check_probe_port(spec, spec.readiness, r.field(r.get("readiness") ? "readiness" : "health"));
  check_probe_port(spec, spec.liveness, r.field(r.get("liveness") ? "liveness" : "health"));
  if (auto* x = r.get("resources"))
    spec.resources = read_resources(*x, r.field("resources"));
  if (auto* x = r.get("scaling"))
    spec.scaling = read_scaling(*x, r.field("scaling"));
  else
    default_rates(spec.scaling.policy);
  if (auto* x = r.get("env"))
    spec.env = read_env(*x, r.field("env"), spec.container_ports.size());
  if (auto* x = r.get("termination"))
    read_termination(*x, r.field("termination"), spec);
  r.choice("restartPolicy", spec.restart_policy, {"Always", "OnFailure", "Never"});
  if (auto* x = r.get("expose"))
    spec.expose = read_expose(*x, r.field("expose"));
  check_policy(spec);
}

app_spec read_app(const doc_value& root) {
  object_reader r{root, "", {"apiVersion", "kind", "metadata", "spec"}};
  std::string version = "v1";
  std::string kind_name = "App";
  r.choice("apiVersion", version, {"v1"});
  r.choice("kind", kind_name, {"App"});
  app_spec spec;
  read_metadata(r.require("metadata"), spec);
  read_spec_section(r.require("spec"), spec);
  return spec;
}

// -- output -----------------------------------------------------------------------

json command_json(const app_command& c) {
  if (c.shell)
    return c.words.empty() ? json("") : json(c.words.front());
  return c.words;
}

json probe_json(const app_probe& p) {
  json out = {{"initialDelaySeconds", p.initial_delay_seconds},
              {"intervalSeconds", p.interval_seconds},
              {"timeoutSeconds", p.timeout_seconds},
              {"failureThreshold", p.failure_threshold},
              {"successThreshold", p.success_threshold}};
  json port = p.port == 0 ? json::object() : json{{"port", p.port}};
  switch (p.type) {
  case app_probe::kind::http_get:
    port["path"] = p.path;
    out["httpGet"] = std::move(port);
    break;
  case app_probe::kind::tcp_socket:
    out["tcpSocket"] = std::move(port);
    break;
  case app_probe::kind::exec:
    out["exec"] = {{"command", command_json(p.command)}};
    break;
  }
  return out;
}

json rate_json(const app_scaling_rate& r) {
  json rules = json::array();
  for (const auto& rule : r.policies)
    rules.push_back(
        {{"type", rule.type}, {"value", rule.value}, {"periodSeconds", rule.period_seconds}});
  return {{"stabilizationWindowSeconds", r.stabilization_window_seconds},
          {"policies", std::move(rules)},
          {"selectPolicy", r.select_policy}};
}

json policy_json(const app_scaling_policy& p) {
  json out = {
      {"mode", p.mode},
      {"cooldownSeconds", p.cooldown_seconds},
      {"evaluationSeconds", p.evaluation_seconds},
      {"tolerance", p.tolerance},
      {"idleSeconds", p.idle_seconds},
      {"behavior", {{"scaleUp", rate_json(p.scale_up)}, {"scaleDown", rate_json(p.scale_down)}}},
      {"activation",
       {{"timeoutSeconds", p.activation_timeout_seconds},
        {"maxPendingRequests", p.activation_max_pending_requests}}}};
  if (p.http) {
    json http = {{"scaleOutThresholdPct", p.http->scale_out_threshold_pct},
                 {"scaleInThresholdPct", p.http->scale_in_threshold_pct},
                 {"windowSeconds", p.http->window_seconds}};
    if (p.http->target_rps_per_replica > 0)
      http["targetRPSPerReplica"] = p.http->target_rps_per_replica;
    if (p.http->max_p95_latency_ms > 0)
      http["maxP95LatencyMs"] = p.http->max_p95_latency_ms;
    out["http"] = std::move(http);
  }
  if (p.cpu_target_utilization_pct)
    out["cpu"] = {{"targetUtilizationPct", *p.cpu_target_utilization_pct}};
  if (p.memory_target_utilization_pct)
    out["memory"] = {{"targetUtilizationPct", *p.memory_target_utilization_pct}};
  if (p.connections_target_per_replica)
    out["connections"] = {{"targetPerReplica", *p.connections_target_per_replica}};
  json queue = json::object();
  if (p.queue_redis)
    queue["redis"] = {{"url", p.queue_redis->url},
                      {"key", p.queue_redis->key},
                      {"targetPerReplica", p.queue_redis->target_per_replica},
                      {"activationLength", p.queue_redis->activation_length}};
  if (p.queue_jobs)
    queue["jobs"] = {{"label", p.queue_jobs->label},
                     {"targetPerReplica", p.queue_jobs->target_per_replica}};
  if (!queue.empty())
    out["queue"] = std::move(queue);
  return out;
}

json resources_json(const app_resources& r) {
  json out = json::object();
  if (r.cpu_millis != 0)
    out["cpu"] = std::to_string(r.cpu_millis) + "m";
  if (r.memory_bytes != 0)
    out["memory"] = r.memory_bytes;
  return out;
}

json env_json(const std::vector<app_env_var>& env) {
  json out = json::array();
  for (const auto& e : env)
    if (e.from_sdk)
      out.push_back({{"name", e.name}, {"valueFrom", "sdk"}});
    else
      out.push_back({{"name", e.name}, {"value", e.value}});
  return out;
}

json spec_json(const app_spec& spec) {
  json ports = json::array();
  for (int p : spec.container_ports)
    if (p != 0)
      ports.push_back({{"containerPort", p}});
  json body = {
      {"type", spec.type},
      {"command", command_json(spec.command)},
      {"args", spec.args},
      {"ports", std::move(ports)},
      {"resources", resources_json(spec.resources)},
      {"scaling",
       {{"minReplicas", spec.scaling.min_replicas},
        {"maxReplicas", spec.scaling.max_replicas},
        {"replicas", spec.scaling.replicas},
        {"policy", policy_json(spec.scaling.policy)}}},
      {"env", env_json(spec.env)},
      {"termination",
       {{"drainSeconds", spec.drain_seconds}, {"gracePeriodSeconds", spec.grace_period_seconds}}},
      {"restartPolicy", spec.restart_policy}};
  if (!spec.working_dir.empty())
    body["workingDir"] = spec.working_dir;
  if (spec.readiness)
    body["readiness"] = probe_json(*spec.readiness);
  if (spec.liveness)
    body["liveness"] = probe_json(*spec.liveness);
  if (spec.expose) {
    json e = json::object();
    if (!spec.expose->host.empty())
      e["host"] = spec.expose->host;
    if (!spec.expose->path_prefix.empty()) {
      e["pathPrefix"] = spec.expose->path_prefix;
      e["stripPrefix"] = spec.expose->strip_prefix;
    }
    if (spec.expose->port != 0)
      e["port"] = spec.expose->port;
    body["expose"] = std::move(e);
  }
  return {{"apiVersion", "v1"},
          {"kind", "App"},
          {"metadata", {{"name", spec.name}, {"labels", spec.labels}}},
          {"spec", std::move(body)}};
}

std::string dump(const json& j) {
  // Parsed specs are valid UTF-8; replacing keeps a hand-built one from throwing.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// redis://user:secret@host → redis://user:<redacted>@host.
std::string redact_url_password(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos)
    return url;
  auto authority = scheme + 3;
  auto at = url.rfind('@', url.find('/', authority));
  if (at == std::string::npos || at < authority)
    return url;
  auto colon = url.find(':', authority);
  if (colon == std::string::npos || colon > at)
    return url;
  return url.substr(0, colon + 1) + redacted + url.substr(at);
}

bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

/// The port a reference names (`PORT` → 0, `PORT_2` → 2), if it is one.
std::optional<size_t> port_reference(std::string_view name, size_t port_count) {
  size_t n = 0;
  if (name == "PORT")
    return 0;
  if (further_port_name(name, &n) && n < port_count)
    return n;
  return std::nullopt;
}

} // namespace

app_spec parse_app_spec_json(const std::string& body) {
  return read_app(parse_json_document(body, app_doc_limits));
}

app_spec parse_app_spec_yaml(const std::string& body) {
  auto root = parse_yaml_document(body, app_doc_limits);
  if (root.type != kind::object)
    throw spec_error("body", "must be a YAML mapping");
  return read_app(root);
}

app_spec parse_app_spec(const std::string& body, const std::string& content_type) {
  auto type = content_type.substr(0, content_type.find(';'));
  type.erase(type.find_last_not_of(" \t") + 1);
  ascii_lower_in_place(type);
  if (type == "application/yaml" || type == "application/x-yaml" || type == "text/yaml")
    return parse_app_spec_yaml(body);
  return parse_app_spec_json(body);
}

std::string to_json(const app_spec& spec) {
  return dump(spec_json(spec));
}

std::string to_api_json(const app_spec& spec) {
  auto out = spec_json(spec);
  for (auto& e : out["spec"]["env"])
    if (e.contains("value"))
      e["value"] = redacted;
  auto& policy = out["spec"]["scaling"]["policy"];
  if (policy.contains("queue") && policy["queue"].contains("redis")) {
    auto& url = policy["queue"]["redis"]["url"];
    url = redact_url_password(url.get<std::string>());
  }
  return dump(out);
}

std::string expand_port(const std::string& text, const std::vector<uint16_t>& ports) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '$' || ports.empty()) {
      out += text[i++];
      continue;
    }
    bool braced = i + 1 < text.size() && text[i + 1] == '{';
    auto begin = i + (braced ? 2 : 1);
    auto end = begin;
    while (end < text.size() && name_char(text[end]))
      ++end;
    auto ref = port_reference(std::string_view{text}.substr(begin, end - begin), ports.size());
    bool closed = !braced || (end < text.size() && text[end] == '}');
    if (!ref || !closed) {
      out += text[i++];
      continue;
    }
    out += std::to_string(ports[*ref]);
    i = end + (braced ? 1 : 0);
  }
  return out;
}

std::vector<std::string> app_argv(const app_spec& spec, const std::vector<uint16_t>& ports) {
  std::vector<std::string> argv;
  if (spec.command.shell) {
    // sh -c CMD NAME ARGS...: NAME is $0, so args are $1, $2, ...
    argv = {"/bin/sh", "-c", spec.command.words.front(), spec.name};
    argv.insert(argv.end(), spec.args.begin(), spec.args.end());
    return argv;
  }
  for (const auto& w : spec.command.words)
    argv.push_back(expand_port(w, ports));
  for (const auto& a : spec.args)
    argv.push_back(expand_port(a, ports));
  return argv;
}

std::map<std::string, std::string> app_instance_env(const app_spec& spec,
                                                    const instance_identity& who) {
  std::map<std::string, std::string> env;
  for (const auto& e : spec.env)
    if (!e.from_sdk)
      env[e.name] = e.value;
  if (!who.ports.empty())
    env["PORT"] = std::to_string(who.ports.front());
  for (size_t i = 1; i < who.ports.size(); ++i)
    env["PORT_" + std::to_string(i)] = std::to_string(who.ports[i]);
  env["TROUPE_APP"] = spec.name;
  env["TROUPE_INSTANCE"] = who.instance_id;
  env["TROUPE_NODE"] = who.node;
  return env;
}

size_t app_port_index(const app_spec& spec, const app_probe& probe) {
  auto& ports = spec.container_ports;
  auto at = std::find(ports.begin(), ports.end(), probe.port);
  return probe.port == 0 || at == ports.end() ? 0 : static_cast<size_t>(at - ports.begin());
}

} // namespace troupe
