#include "actors/metrics/metrics_model.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "actors/metrics/prometheus.hpp"

namespace troupe::metrics {

const char* to_string(kind k) {
  switch (k) {
  case kind::counter:
    return "counter";
  case kind::gauge:
    return "gauge";
  case kind::histogram:
    return "histogram";
  }
  return "untyped";
}

namespace {

std::deque<family>& table() {
  static std::deque<family> fams = [] {
    const std::vector<double> http_bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    const std::vector<double> wait_bounds{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
    const std::vector<double> run_bounds{0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200};
    std::deque<family> v;
    v.push_back({"http.request.duration",
                 "troupe_http_request_duration_seconds",
                 kind::histogram,
                 "seconds",
                 "Time from reading an HTTP request to writing its response head",
                 {"method", "route", "status"},
                 http_bounds,
                 "troupe_http_requests_total",
                 true});
    v.push_back({"http.request.latency",
                 "troupe_http_request_latency_seconds",
                 kind::histogram,
                 "seconds",
                 "Latency of API requests (probes, /metrics and SSE streams excluded)",
                 {},
                 http_bounds,
                 {},
                 true});
    v.push_back({"http.active_requests",
                 "troupe_http_active_requests",
                 kind::gauge,
                 "requests",
                 "HTTP requests being handled (SSE streams excluded once started)",
                 {},
                 {},
                 {},
                 true});
    v.push_back({"sse.connections",
                 "troupe_sse_connections",
                 kind::gauge,
                 "connections",
                 "Open server-sent-event streams",
                 {},
                 {},
                 {},
                 true});
    v.push_back({"jobs.queue.depth",
                 "troupe_job_queue_depth",
                 kind::gauge,
                 "jobs",
                 "Jobs queued (waiting for a slot or a retry backoff)",
                 {},
                 {},
                 {},
                 true});
    v.push_back({"jobs.queue.pressure",
                 "troupe_job_queue_pressure_ratio",
                 kind::gauge,
                 "ratio",
                 "Queued jobs per concurrency slot",
                 {},
                 {},
                 {},
                 true});
    v.push_back({"jobs.pool.utilization",
                 "troupe_job_slots_utilization_ratio",
                 kind::gauge,
                 "ratio",
                 "Share of concurrency slots running a job",
                 {},
                 {},
                 {},
                 true});
    v.push_back({"jobs.queue.wait",
                 "troupe_job_queue_wait_seconds",
                 kind::histogram,
                 "seconds",
                 "Time a job waited in the queue before it started",
                 {},
                 wait_bounds,
                 {},
                 true});
    v.push_back({"jobs.run.duration",
                 "troupe_job_run_duration_seconds",
                 kind::histogram,
                 "seconds",
                 "Run time of job attempts",
                 {},
                 run_bounds,
                 {},
                 true});
    v.push_back({"logs.sink.lag",
                 "troupe_log_sink_lag_entries",
                 kind::gauge,
                 "entries",
                 "Log entries committed but not yet shipped by a sink",
                 {"sink"},
                 {},
                 {},
                 true});
    v.push_back({"redis.sse.connections",
                 "troupe_redis_sse_connections",
                 kind::gauge,
                 "connections",
                 "SSE connections published to Redis by every process of a tenant/project",
                 {"tenant", "project"},
                 {},
                 {},
                 true});
    v.push_back({"apps.cpu",
                 "troupe_app_cpu_percent",
                 kind::gauge,
                 "percent",
                 "CPU of an app's instances together, in percent of one core",
                 {"app"},
                 {},
                 {},
                 true});
    v.push_back({"apps.memory.rss",
                 "troupe_app_memory_rss_bytes",
                 kind::gauge,
                 "bytes",
                 "Resident memory of an app's instances together",
                 {"app"},
                 {},
                 {},
                 true});
    v.push_back({"apps.requests",
                 "troupe_app_requests_total",
                 kind::counter,
                 "requests",
                 "Requests the proxy (built-in, or nginx from its access log) answered for an app, "
                 "by status",
                 {"app", "status"},
                 {},
                 {},
                 true});
    v.push_back({"apps.request.duration",
                 "troupe_app_request_duration_seconds",
                 kind::histogram,
                 "seconds",
                 "Time from a request's header at the proxy to its response's last byte",
                 {"app"},
                 http_bounds,
                 {},
                 true});
    v.push_back({"apps.connections.active",
                 "troupe_app_active_connections",
                 kind::gauge,
                 "connections",
                 "Client connections of the proxy whose current request is for the app",
                 {"app"},
                 {},
                 {},
                 true});
    v.push_back({"proxy.nginx.connections",
                 "troupe_proxy_nginx_connections",
                 kind::gauge,
                 "connections",
                 "nginx's client connections by state (stub_status; proxy.mode nginx)",
                 {"state"},
                 {},
                 {},
                 true});
    v.push_back({"troupe.last_activity",
                 "troupe_last_activity_timestamp_seconds",
                 kind::gauge,
                 "seconds",
                 "Unix time of the last non-probe request or job activity (for idle TTLs)",
                 {},
                 {},
                 {},
                 false});
    v.push_back({"troupe.heartbeat",
                 "troupe_heartbeat_total",
                 kind::counter,
                 "count",
                 "Ticks of the metrics registry (proves the export loop is alive)",
                 {},
                 {},
                 {},
                 false});
    v.push_back({"metrics.series",
                 "troupe_metrics_series",
                 kind::gauge,
                 "series",
                 "Windowed series held by the metrics registry",
                 {},
                 {},
                 {},
                 false});
    v.push_back({"metrics.dropped",
                 "troupe_metrics_dropped_series_total",
                 kind::counter,
                 "series",
                 "New series refused because metrics.max_series was reached (each counted once "
                 "per sample interval it was seen in)",
                 {},
                 {},
                 {},
                 false});
    return v;
  }();
  return fams;
}

} // namespace

const std::deque<family>& families() {
  return table();
}

const family* find_family(std::string_view key) {
  for (auto& f : table())
    if (f.key == key)
      return &f;
  return nullptr;
}

bool add_family(family f) {
  if (find_family(f.key) != nullptr)
    return false;
  table().push_back(std::move(f));
  return true;
}

naming::naming(std::string_view mapping_json) {
  if (mapping_json.empty())
    return;
  auto doc = nlohmann::json::parse(mapping_json, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    throw std::invalid_argument("expected a JSON object of {\"<key>\": {\"name\", \"unit\"}}");
  for (auto& [key, spec] : doc.items()) {
    auto fam = find_family(key);
    if (fam == nullptr) {
      std::string known;
      for (auto& f : families())
        known += (known.empty() ? "" : ", ") + f.key;
      throw std::invalid_argument(key + ": unknown metric key (known: " + known + ")");
    }
    if (!spec.is_object())
      throw std::invalid_argument(key + ": expected an object with name and/or unit");
    auto name = fam->name;
    auto unit = fam->unit;
    for (auto& [field, value] : spec.items()) {
      if (!value.is_string())
        throw std::invalid_argument(key + "." + field + ": expected a string");
      if (field == "name")
        name = value.get<std::string>();
      else if (field == "unit")
        unit = value.get<std::string>();
      else
        throw std::invalid_argument(key + "." + field + ": unknown field (name, unit)");
    }
    // CloudWatch-style names (Ingress/SSEConnections) are made Prometheus-safe.
    name = prom::sanitize_name(name);
    auto counter = fam->type == kind::counter;
    if (counter != (without_total(name) != name))
      throw std::invalid_argument(key + ".name: " +
                                  (counter ? "a counter's name must end in _total, got "
                                           : "only counters may end in _total, got ") +
                                  name);
    overrides_[key] = {std::move(name), std::move(unit)};
  }
  // Two families under one name would merge into one invalid exposition:
  // every name a family exports (its samples and window families) is unique.
  std::map<std::string, std::string> taken;
  for (auto& f : families()) {
    for (auto& n : exported_names(f, this->name(f))) {
      auto [i, fresh] = taken.emplace(n, f.key);
      if (!fresh && i->second != f.key)
        throw std::invalid_argument((overrides_.count(f.key) ? f.key : i->second) + ".name: " + n +
                                    " is already a name of " +
                                    (overrides_.count(f.key) ? i->second : f.key));
    }
  }
}

std::vector<std::string> exported_names(const family& f, const std::string& name) {
  std::vector<std::string> out{name};
  if (f.type == kind::histogram)
    for (auto suffix : {"_bucket", "_sum", "_count"})
      out.push_back(name + suffix);
  if (!f.count_name.empty())
    out.push_back(f.count_name);
  if (!f.windowed)
    return out;
  auto base = without_total(name);
  // _window_sum/_count: what a summary's consumers (the Pushgateway) add.
  for (auto suffix :
       {"_window", "_window_sum", "_window_count", "_window_observations", "_window_avg"})
    out.push_back(base + suffix);
  if (f.type != kind::counter) {
    out.push_back(base + "_window_max");
    out.push_back(base + "_max");
  }
  if (f.type != kind::gauge)
    out.push_back(base + "_window_rate");
  return out;
}

const std::string& naming::name(const family& f) const {
  if (auto i = overrides_.find(f.key); i != overrides_.end())
    return i->second.first;
  return f.name;
}

const std::string& naming::unit(const family& f) const {
  if (auto i = overrides_.find(f.key); i != overrides_.end())
    return i->second.second;
  return f.unit;
}

std::string series_id(const family& f, const std::vector<std::string>& labels) {
  std::string out = f.key;
  if (f.label_names.empty())
    return out;
  out += '{';
  for (size_t i = 0; i < f.label_names.size(); ++i) {
    if (i > 0)
      out += ',';
    out += f.label_names[i];
    out += '=';
    if (i < labels.size())
      out += labels[i];
  }
  out += '}';
  return out;
}

std::string without_total(const std::string& name) {
  if (name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0)
    return name.substr(0, name.size() - 6);
  return name;
}

namespace {

/// The key of a series in the recorder and the board: family and label
/// values, unit-separated (written into `out`, reused by hot paths).
void series_key(std::string& out, std::string_view family, const std::vector<std::string>& labels) {
  out.assign(family);
  for (auto& l : labels) {
    out += '\x1f';
    out += l;
  }
}

} // namespace

void gauge_board::set(const std::string& family, std::vector<std::string> labels, double value) {
  std::string key;
  series_key(key, family, labels);
  std::lock_guard<std::mutex> guard{mtx_};
  auto& d = values_[key];
  d.family = family;
  d.labels = std::move(labels);
  d.value = value;
}

metric_deltas gauge_board::read() const {
  std::lock_guard<std::mutex> guard{mtx_};
  metric_deltas out;
  out.reserve(values_.size());
  for (auto& [key, d] : values_)
    out.push_back(d);
  return out;
}

std::string_view method_label(std::string_view method) noexcept {
  static constexpr std::string_view known[] = {"GET",    "HEAD",  "POST",   "PUT",
                                               "DELETE", "PATCH", "OPTIONS"};
  for (auto k : known)
    if (method == k)
      return k;
  return "OTHER";
}

size_t bucket_index(const std::vector<double>& bounds, double value) {
  return static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), value) -
                             bounds.begin());
}

/// Distinct refused series a recorder tracks per interval (beyond: not counted).
constexpr size_t max_refused_tracked = 1 << 16;

recorder::recorder(double relative_accuracy, size_t max_series)
    : alpha_(relative_accuracy), max_series_(max_series) {}

recorder::pending_series* recorder::slot(const family& f, const std::vector<std::string>& labels) {
  series_key(key_, f.key, labels);
  auto i = pending_.find(key_);
  if (i == pending_.end()) {
    if (admitted_.count(key_) == 0) {
      if (admitted_.size() >= max_series_) {
        if (refused_.size() < max_refused_tracked)
          refused_.insert(key_);
        return nullptr;
      }
      admitted_.insert(key_);
    }
    i = pending_.emplace(key_, pending_series{alpha_}).first;
    i->second.fam = &f;
    i->second.labels = labels;
    if (f.type == kind::histogram)
      i->second.buckets.assign(f.bounds.size() + 1, 0);
  }
  return &i->second;
}

void recorder::observe(const family& f, const std::vector<std::string>& labels, double value) {
  if (!std::isfinite(value))
    return; // no bucket holds NaN; the sketch ignores it too
  std::lock_guard<std::mutex> guard{mtx_};
  auto s = slot(f, labels);
  if (s == nullptr)
    return;
  s->obs.add(value);
  if (!s->buckets.empty())
    ++s->buckets[bucket_index(f.bounds, value)];
}

void recorder::add(const family& f, const std::vector<std::string>& labels, double n) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto s = slot(f, labels))
    s->increment += n;
}

metric_deltas recorder::take() {
  std::unordered_map<std::string, pending_series> taken;
  uint64_t dropped = 0;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    taken.swap(pending_);
    dropped = refused_.size();
    refused_.clear();
  }
  metric_deltas out;
  out.reserve(taken.size() + 1);
  if (dropped > 0) {
    metric_delta d;
    d.family = "metrics.dropped";
    d.value = static_cast<double>(dropped);
    out.push_back(std::move(d));
  }
  for (auto& [key, s] : taken) {
    metric_delta d;
    d.family = s.fam->key;
    d.labels = std::move(s.labels);
    d.value = s.increment;
    if (s.fam->type == kind::histogram) {
      d.observations = s.obs.encode();
      d.buckets = std::move(s.buckets);
    }
    out.push_back(std::move(d));
  }
  return out;
}

size_t recorder::pending() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return pending_.size();
}

} // namespace troupe::metrics
