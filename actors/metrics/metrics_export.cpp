#include "actors/metrics/metrics_export.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "actors/metrics/prometheus.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe::metrics {

namespace {

using nlohmann::json;

constexpr auto nan = std::numeric_limits<double>::quiet_NaN();

/// A series and where it came from ("" = this node).
struct entry {
  const metric_snapshot* snap;
  const std::string* upstream;
};

prom::labels label_pairs(const family& f, const metric_snapshot& s, const std::string& upstream) {
  prom::labels out;
  for (size_t i = 0; i < f.label_names.size(); ++i)
    out.emplace_back(f.label_names[i], i < s.labels.size() ? s.labels[i] : std::string{});
  if (!upstream.empty())
    out.emplace_back("upstream", upstream);
  return out;
}

prom::labels with(prom::labels l, std::string k, std::string v) {
  l.emplace_back(std::move(k), std::move(v));
  return l;
}

std::string help_of(const family& f, const naming& names) {
  auto unit = names.unit(f);
  return unit.empty() ? f.help : f.help + " (unit: " + unit + ")";
}

void render_family(prom::writer& w, const family& f, const naming& names,
                   const std::vector<entry>& series) {
  auto name = names.name(f);
  auto help = help_of(f, names);
  switch (f.type) {
  case kind::histogram: {
    w.family(name, "histogram", help);
    for (auto& e : series) {
      auto& s = *e.snap;
      std::vector<uint64_t> per_bucket(f.bounds.size(), 0);
      for (size_t i = 0; i < per_bucket.size() && i < s.buckets.size(); ++i)
        per_bucket[i] = s.buckets[i];
      w.histogram(name, label_pairs(f, s, *e.upstream), f.bounds, per_bucket, s.sum, s.count);
    }
    if (!f.count_name.empty()) {
      w.family(f.count_name, "counter", "Number of observations of " + name);
      for (auto& e : series)
        w.sample(f.count_name, label_pairs(f, *e.snap, *e.upstream),
                 static_cast<double>(e.snap->count));
    }
    break;
  }
  case kind::counter:
    w.family(name, "counter", help);
    for (auto& e : series)
      w.sample(name, label_pairs(f, *e.snap, *e.upstream), e.snap->value);
    break;
  case kind::gauge:
    w.family(name, "gauge", help);
    for (auto& e : series)
      w.sample(name, label_pairs(f, *e.snap, *e.upstream), e.snap->value);
    break;
  }
  auto base = without_total(name);
  // Windowed quantiles are what a Prometheus summary is: one per window
  // (promtool allows a `quantile` label on summaries only). Without _sum and
  // _count: a summary's are cumulative counters, and a window's count falls
  // as observations leave it; those are the gauges below.
  w.family(base + "_window", "summary",
           "p50/p95/p99 of " + name + " over the last 1m, 15m and 1h (NaN: no data)");
  for (auto& e : series)
    for (auto& win : e.snap->windows) {
      auto l = with(label_pairs(f, *e.snap, *e.upstream), "window", win.window);
      w.sample(base + "_window", with(l, "quantile", "0.5"), win.p50);
      w.sample(base + "_window", with(l, "quantile", "0.95"), win.p95);
      w.sample(base + "_window", with(l, "quantile", "0.99"), win.p99);
    }
  auto per_window = [&](const std::string& suffix, const std::string& what, auto value) {
    w.family(base + suffix, "gauge", what);
    for (auto& e : series)
      for (auto& win : e.snap->windows)
        w.sample(base + suffix, with(label_pairs(f, *e.snap, *e.upstream), "window", win.window),
                 value(win));
  };
  per_window("_window_observations",
             (f.type == kind::gauge ? "Samples of " : "Observations of ") + name + " in the window",
             [](const metric_window_stats& win) { return static_cast<double>(win.count); });
  per_window("_window_avg", "Mean of " + name + " over the window (NaN: no data)",
             [](const metric_window_stats& win) { return win.avg; });
  if (f.type != kind::counter) {
    per_window("_window_max", "Largest " + name + " per window",
               [](const metric_window_stats& win) { return win.max; });
    w.family(base + "_max", "gauge", "Largest " + name + " since start");
    for (auto& e : series)
      w.sample(base + "_max", label_pairs(f, *e.snap, *e.upstream), e.snap->max);
  }
  if (f.type != kind::gauge)
    per_window("_window_rate",
               (f.type == kind::counter ? "Increase of " : "Observations of ") + name +
                   " per second per window",
               [](const metric_window_stats& win) { return win.rate; });
}

/// Series grouped by family, in family order, labels sorted.
std::map<const family*, std::vector<entry>> grouped(const registry_view& v) {
  static const std::string here;
  std::map<const family*, std::vector<entry>> out;
  auto add = [&](const metric_snapshots& snaps, const std::string& upstream) {
    for (auto& s : snaps)
      if (auto f = find_family(s.family); f != nullptr && f->windowed)
        out[f].push_back(entry{&s, &upstream});
  };
  if (v.local != nullptr)
    add(*v.local, here);
  if (v.proxied != nullptr)
    for (auto& [upstream, snaps] : *v.proxied)
      add(snaps, upstream);
  for (auto& [f, es] : out)
    std::sort(es.begin(), es.end(), [](const entry& a, const entry& b) {
      if (*a.upstream != *b.upstream)
        return *a.upstream < *b.upstream;
      return a.snap->labels < b.snap->labels;
    });
  return out;
}

json number(double x) {
  if (std::isnan(x) || std::isinf(x))
    return nullptr;
  return x;
}

double number_of(const json& j, const char* key) {
  auto i = j.find(key);
  if (i == j.end() || !i->is_number())
    return nan;
  return i->get<double>();
}

} // namespace

std::string render_prometheus(const registry_view& v, const naming& names) {
  prom::writer w;
  auto groups = grouped(v);
  for (auto& f : families()) {
    if (!f.windowed)
      continue;
    if (auto i = groups.find(&f); i != groups.end() && !i->second.empty())
      render_family(w, f, names, i->second);
  }
  auto plain = [&](const char* key, double value) {
    auto f = find_family(key);
    auto name = names.name(*f);
    w.family(name, f->type == kind::counter ? "counter" : "gauge", help_of(*f, names));
    w.sample(name, {}, value);
  };
  plain("troupe.last_activity", v.last_activity);
  plain("troupe.heartbeat", static_cast<double>(v.heartbeat));
  plain("metrics.series", static_cast<double>(v.series));
  plain("metrics.dropped", static_cast<double>(v.dropped));
  if (!w.error().empty())
    logging::get("metrics")->error("exposition incomplete: {}", w.error());
  return w.take();
}

json snapshot_json(const metric_snapshot& s, const naming& names) {
  json j;
  auto f = find_family(s.family);
  j["key"] = s.family;
  j["name"] = f != nullptr ? names.name(*f) : s.family;
  j["unit"] = f != nullptr ? names.unit(*f) : "";
  j["kind"] = f != nullptr ? to_string(f->type) : "untyped";
  auto labels = json::object();
  if (f != nullptr)
    for (size_t i = 0; i < f->label_names.size() && i < s.labels.size(); ++i)
      labels[f->label_names[i]] = s.labels[i];
  j["labels"] = std::move(labels);
  j["value"] = number(s.value);
  j["count"] = s.count;
  j["sum"] = number(s.sum);
  j["max"] = number(s.max);
  if (f != nullptr && f->type == kind::histogram) {
    j["bounds"] = f->bounds;
    j["buckets"] = s.buckets;
  }
  auto wins = json::object();
  for (auto& w : s.windows)
    wins[w.window] = {{"count", w.count},     {"sum", number(w.sum)}, {"min", number(w.min)},
                      {"max", number(w.max)}, {"avg", number(w.avg)}, {"rate", number(w.rate)},
                      {"seconds", w.seconds}, {"p50", number(w.p50)}, {"p95", number(w.p95)},
                      {"p99", number(w.p99)}};
  j["windows"] = std::move(wins);
  return j;
}

std::string render_monitoring(const registry_view& v, const naming& names) {
  json doc;
  doc["node"] = v.node;
  doc["mode"] = v.mode;
  doc["timestamp"] = rfc3339(now_ns());
  doc["windows"] = {"1m", "15m", "1h"};
  auto series = json::array();
  auto system = json::object();
  // The seed's summary: each entry is one label-less series of this node.
  const std::pair<const char*, const char*> summary[] = {
      {"sse_connections", "sse.connections"},        {"queue_depth", "jobs.queue.depth"},
      {"queue_pressure", "jobs.queue.pressure"},     {"queue_wait", "jobs.queue.wait"},
      {"pool_utilization", "jobs.pool.utilization"}, {"task_latency", "jobs.run.duration"},
      {"rest_latency", "http.request.latency"},      {"active_requests", "http.active_requests"},
  };
  for (auto& [name, key] : summary)
    system[name] = nullptr;
  if (v.local != nullptr)
    for (auto& s : *v.local) {
      auto j = snapshot_json(s, names);
      for (auto& [name, key] : summary)
        if (s.family == key && s.labels.empty())
          system[name] = j;
      series.push_back(std::move(j));
    }
  doc["system"] = std::move(system);
  doc["series"] = std::move(series);
  if (v.proxied != nullptr && !v.proxied->empty()) {
    auto ups = json::object();
    for (auto& [upstream, snaps] : *v.proxied) {
      auto list = json::array();
      for (auto& s : snaps)
        list.push_back(snapshot_json(s, names));
      ups[upstream] = {{"series", std::move(list)}};
    }
    doc["upstreams"] = std::move(ups);
  }
  doc["last_activity"] = v.last_activity;
  doc["heartbeat"] = v.heartbeat;
  doc["series_count"] = v.series;
  doc["dropped_series"] = v.dropped;
  return doc.dump();
}

std::optional<metric_snapshots> snapshots_from_monitoring(std::string_view text,
                                                          std::string* error) {
  auto fail = [&](std::string why) -> std::optional<metric_snapshots> {
    if (error)
      *error = std::move(why);
    return std::nullopt;
  };
  auto doc = json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return fail("not a JSON object");
  auto i = doc.find("series");
  if (i == doc.end() || !i->is_array())
    return fail("no \"series\" array");
  metric_snapshots out;
  for (auto& j : *i) {
    if (!j.is_object() || !j.contains("key") || !j["key"].is_string())
      return fail("a series without \"key\"");
    auto f = find_family(j["key"].get<std::string>());
    if (f == nullptr || !f->windowed)
      continue;
    metric_snapshot s;
    s.family = f->key;
    auto labels = j.value("labels", json::object());
    for (auto& name : f->label_names)
      s.labels.push_back(labels.is_object() && labels.contains(name) && labels[name].is_string()
                             ? labels[name].get<std::string>()
                             : std::string{});
    s.value = number_of(j, "value");
    s.count = j.value("count", uint64_t{0});
    s.sum = number_of(j, "sum");
    s.max = number_of(j, "max");
    if (auto b = j.find("buckets"); b != j.end() && b->is_array())
      for (auto& n : *b)
        s.buckets.push_back(n.is_number_unsigned() ? n.get<uint64_t>() : 0);
    if (auto ws = j.find("windows"); ws != j.end() && ws->is_object())
      for (auto& [name, w] : ws->items()) {
        metric_window_stats st;
        st.window = name;
        st.count = w.value("count", uint64_t{0});
        st.sum = number_of(w, "sum");
        st.min = number_of(w, "min");
        st.max = number_of(w, "max");
        st.avg = number_of(w, "avg");
        st.rate = number_of(w, "rate");
        st.seconds = number_of(w, "seconds");
        st.p50 = number_of(w, "p50");
        st.p95 = number_of(w, "p95");
        st.p99 = number_of(w, "p99");
        s.windows.push_back(std::move(st));
      }
    auto rank = [](const std::string& w) {
      return w == "1m" ? 0 : w == "15m" ? 1 : w == "1h" ? 2 : 3;
    };
    std::sort(s.windows.begin(), s.windows.end(),
              [&](const auto& a, const auto& b) { return rank(a.window) < rank(b.window); });
    out.push_back(std::move(s));
  }
  return out;
}

} // namespace troupe::metrics
