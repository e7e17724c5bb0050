#include "actors/autoscale/decide.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

namespace troupe::autoscale {

namespace {

constexpr int64_t ns_per_s = 1'000'000'000;

std::string seconds(int s) {
  return std::to_string(s) + "s";
}

std::string num(double v) {
  std::ostringstream out;
  out.precision(4);
  out << v;
  return out.str();
}

/// ceil that forgives the last bits of a division (3 × 50 / 50 is 3).
/// Bounded far above any maxReplicas (an absurd sample must not overflow).
int ceil_replicas(double x) {
  return static_cast<int>(std::clamp(std::ceil(x - 1e-9), -1e6, 1e6));
}

} // namespace

app_scaling_policy::http_metric hysteresis_of(const app_scaling_policy& p) {
  return p.http ? *p.http : app_scaling_policy::http_metric{};
}

engine::engine(app_scaling_policy policy, bounds limits, int64_t start_ns)
    : policy_(std::move(policy)), limits_(limits), start_ns_(start_ns) {}

std::vector<engine::metric_value> engine::metrics(const observation& o) const {
  std::vector<metric_value> out;
  auto& p = policy_;
  if (p.http && p.http->target_rps_per_replica > 0)
    out.push_back({"rps", o.rps, p.http->target_rps_per_replica, 0, false});
  if (p.cpu_target_utilization_pct && limits_.cpu_millis > 0)
    // cpu_percent: 100 per busy core; the target per replica in the same unit.
    out.push_back({"cpu", o.cpu_percent,
                   *p.cpu_target_utilization_pct * static_cast<double>(limits_.cpu_millis) / 1000.0,
                   0, false});
  if (p.memory_target_utilization_pct && limits_.memory_bytes > 0)
    out.push_back(
        {"memory", o.rss_bytes,
         *p.memory_target_utilization_pct / 100.0 * static_cast<double>(limits_.memory_bytes), 0,
         false});
  if (p.connections_target_per_replica)
    out.push_back({"connections", o.connections, *p.connections_target_per_replica, 0, false});
  if (p.queue_redis)
    out.push_back({"queue_redis", o.queue_redis, p.queue_redis->target_per_replica,
                   static_cast<double>(p.queue_redis->activation_length), true});
  if (p.queue_jobs)
    out.push_back({"queue_jobs", o.queue_jobs, p.queue_jobs->target_per_replica, 0, true});
  return out;
}

void engine::note_change(int64_t at_ns, int from, int to) {
  if (from == to)
    return;
  changes_.emplace_back(at_ns, from, to);
  last_change_ns_ = at_ns;
  holds_.clear();
}

int engine::stabilized(int64_t now, int proposal, int current, std::string* why) const {
  auto& rate = proposal > current ? policy_.scale_up : policy_.scale_down;
  auto window = static_cast<int64_t>(rate.stabilization_window_seconds) * ns_per_s;
  int out = proposal;
  for (auto& [at, r] : recommendations_)
    if (now - at <= window)
      out = proposal > current ? std::min(out, r) : std::max(out, r);
  out = proposal > current ? std::max(out, current) : std::min(out, current);
  if (out != proposal)
    *why = std::string{proposal > current ? "the lowest" : "the highest"} +
           " recommendation of the last " + seconds(rate.stabilization_window_seconds) + " was " +
           std::to_string(out);
  return out;
}

int engine::rate_limited(int64_t now, int proposal, int current, std::string* why) const {
  bool up = proposal > current;
  auto& rate = up ? policy_.scale_up : policy_.scale_down;
  if (rate.select_policy == "Disabled") {
    *why = std::string{"scale"} + (up ? "Up" : "Down") + ".selectPolicy is Disabled";
    return current;
  }
  std::optional<int> limit;
  for (auto& rule : rate.policies) {
    auto window = static_cast<int64_t>(rule.period_seconds) * ns_per_s;
    int moved = 0; // replicas added (up) or removed (down) within the period
    for (auto& [at, from, to] : changes_)
      if (now - at < window)
        moved += up ? std::max(0, to - from) : std::max(0, from - to);
    int start = up ? current - moved : current + moved;
    int allowed = 0;
    if (up)
      allowed = rule.type == "Pods"
                    ? start + rule.value
                    : ceil_replicas(std::max(start, 1) * (1.0 + rule.value / 100.0));
    else
      allowed = rule.type == "Pods" ? start - rule.value
                                    : ceil_replicas(start * (1.0 - rule.value / 100.0));
    // Max: the policy that allows the largest change; Min: the smallest.
    bool larger_change = up ? (!limit || allowed > *limit) : (!limit || allowed < *limit);
    bool pick = rate.select_policy == "Max" ? larger_change : !limit || !larger_change;
    if (pick)
      limit = allowed;
  }
  if (!limit)
    return proposal;
  int out = up ? std::max(current, std::min(proposal, *limit))
               : std::min(current, std::max(proposal, *limit));
  if (out != proposal)
    *why = std::string{"scale"} + (up ? "Up" : "Down") + " policies (selectPolicy " +
           rate.select_policy + ") allow " + std::to_string(out) + " now";
  return out;
}

std::optional<decision> engine::held(decision d) {
  auto key = std::make_pair(d.rule, d.from);
  auto i = holds_.find(key);
  if (i != holds_.end() && d.ts_ns - i->second < hold_repeat_ns)
    return std::nullopt;
  holds_[key] = d.ts_ns;
  return d;
}

std::optional<decision> engine::evaluate(const observation& o) {
  auto now = o.at_ns;
  // What the rules look back on stays bounded: the longest window (a rate
  // policy's period is at most 1800 s).
  auto keep =
      static_cast<int64_t>(std::max({policy_.scale_up.stabilization_window_seconds,
                                     policy_.scale_down.stabilization_window_seconds, 1800})) *
      ns_per_s;
  while (!recommendations_.empty() && now - recommendations_.front().first > keep)
    recommendations_.pop_front();
  while (!changes_.empty() && now - std::get<0>(changes_.front()) > keep)
    changes_.pop_front();
  int cur = o.current;
  auto hy = hysteresis_of(policy_);
  auto window_ns = static_cast<int64_t>(hy.window_seconds) * ns_per_s;
  double out_threshold = hy.scale_out_threshold_pct / 100.0;
  double in_threshold = hy.scale_in_threshold_pct / 100.0;
  auto sustained = [&](int64_t since) { return since >= 0 && now - since >= window_ns; };

  std::vector<proposal> props;
  bool missing = false;
  bool queued = false;
  std::string missing_metric;
  for (auto& m : metrics(o)) {
    if (m.target <= 0)
      continue;
    auto& s = streaks_[m.name];
    if (!m.observed || !std::isfinite(*m.observed)) {
      s = {};
      missing = true;
      missing_metric = m.name;
      if (m.queue)
        queued = true; // unknown: it may hold work
      continue;
    }
    if (m.queue && *m.observed > m.activation)
      queued = true;
    // Instances not yet ready count as 0 load: the total over `current`.
    double per_replica = *m.observed / std::max(cur, 1);
    double u = per_replica / m.target;
    s.above_since = u > out_threshold ? (s.above_since < 0 ? now : s.above_since) : -1;
    s.below_since = u < in_threshold ? (s.below_since < 0 ? now : s.below_since) : -1;
    proposal p{m.name, *m.observed, m.target, cur, {}, {}};
    int raw = ceil_replicas(std::max(cur, 1) * u);
    s.raws.emplace_back(now, raw);
    while (!s.raws.empty() && now - s.raws.front().first > window_ns)
      s.raws.pop_front();
    int lowest = raw;
    for (auto& [t, r] : s.raws)
      lowest = std::min(lowest, r);
    if (cur == 0 && *m.observed > m.activation) {
      // At zero, any load wakes the app (activation); the rest follows.
      p.replicas = std::max(1, raw);
    } else if (cur == 0) {
      p.replicas = 0; // at most activationLength waiting: it stays at zero
    } else if (raw != cur && std::fabs(u - 1.0) <= policy_.tolerance) {
      p.held_rule = "tolerance";
      p.held_reason = m.name + " is " + num(u * 100) + "% of target, within tolerance " +
                      num(policy_.tolerance * 100) + "%";
      p.replicas = raw; // what it would have been
    } else if (raw > cur && !sustained(s.above_since)) {
      p.held_rule = "hysteresis";
      p.held_reason = m.name + " above " + std::to_string(hy.scale_out_threshold_pct) +
                      "% of target for less than " + seconds(hy.window_seconds);
      p.replicas = raw;
    } else if (raw < cur && !sustained(s.below_since)) {
      p.held_rule = "hysteresis";
      p.held_reason = m.name + " below " + std::to_string(hy.scale_in_threshold_pct) +
                      "% of target for less than " + seconds(hy.window_seconds);
      p.replicas = raw;
    } else if (raw > cur && lowest <= cur) {
      p.held_rule = "hysteresis";
      p.held_reason = m.name + " asked for more than " + std::to_string(cur) +
                      " replicas for less than " + seconds(hy.window_seconds);
      p.replicas = raw;
    } else {
      p.replicas = raw;
    }
    props.push_back(std::move(p));
  }
  if (policy_.http && policy_.http->max_p95_latency_ms > 0) {
    auto& s = streaks_["latency"];
    if (o.p95_ms && std::isfinite(*o.p95_ms) && cur > 0) {
      bool above = *o.p95_ms > policy_.http->max_p95_latency_ms;
      s.above_since = above ? (s.above_since < 0 ? now : s.above_since) : -1;
      if (above) {
        proposal p{"latency", *o.p95_ms, policy_.http->max_p95_latency_ms, cur + 1, {}, {}};
        if (!sustained(s.above_since)) {
          p.held_rule = "hysteresis";
          p.held_reason =
              "p95 latency above maxP95LatencyMs for less than " + seconds(hy.window_seconds);
        }
        props.push_back(std::move(p));
      }
    } else {
      s = {};
    }
  }
  if (cur == 0 && o.pending > 0)
    props.push_back({"pending_requests", static_cast<double>(o.pending), 0, 1, {}, {}});
  bool idle = false;
  if (limits_.min_replicas == 0 && policy_.idle_seconds > 0 && cur > 0 && !queued) {
    auto last = std::max(o.last_request_ns, start_ns_);
    idle = now - last >= static_cast<int64_t>(policy_.idle_seconds) * ns_per_s;
  }

  // The effective proposal of each metric; the largest wins.
  auto effective = [&](const proposal& p) { return p.held_rule.empty() ? p.replicas : cur; };
  const proposal* best = nullptr;
  for (auto& p : props)
    if (best == nullptr || effective(p) > effective(*best))
      best = &p;
  decision d;
  d.ts_ns = now;
  d.from = cur;
  d.window = seconds(hy.window_seconds);
  int want = best != nullptr ? effective(*best) : cur;
  if (best != nullptr) {
    d.metric = best->metric;
    d.observed = best->observed;
    d.target = best->target;
  }
  if (idle && want <= cur) {
    d.metric = "idle";
    d.observed = static_cast<double>(now - std::max(o.last_request_ns, start_ns_)) / ns_per_s;
    d.target = policy_.idle_seconds;
    d.window = seconds(policy_.idle_seconds);
    want = 0;
  }
  d.proposal = want;

  // Nothing acted on: report the strongest held wish, if any.
  if (want == cur && cur >= limits_.min_replicas && cur <= limits_.max_replicas) {
    recommendations_.emplace_back(now, cur);
    const proposal* wish = nullptr;
    for (auto& p : props)
      if (!p.held_rule.empty() && p.replicas != cur &&
          (wish == nullptr || std::abs(p.replicas - cur) > std::abs(wish->replicas - cur)))
        wish = &p;
    if (wish == nullptr)
      return std::nullopt;
    d.metric = wish->metric;
    d.observed = wish->observed;
    d.target = wish->target;
    d.proposal = wish->replicas;
    d.to = cur;
    d.rule = wish->held_rule;
    d.reason = wish->held_reason;
    return held(std::move(d));
  }

  if (want < cur && missing && d.metric != "idle") {
    d.to = cur;
    d.rule = "missing_samples";
    d.reason = "no sample of " + missing_metric + ": a scale-in waits for every metric";
    recommendations_.emplace_back(now, cur);
    return held(std::move(d));
  }

  int to = want;
  std::string why;
  if (d.metric != "idle" && !(cur == 0 && want > 0)) {
    // Stabilization over the recommendations so far, this one included.
    recommendations_.emplace_back(now, want);
    to = stabilized(now, want, cur, &why);
    if (to == cur && want != cur) {
      d.to = cur;
      d.rule = "stabilization";
      d.window = seconds(want > cur ? policy_.scale_up.stabilization_window_seconds
                                    : policy_.scale_down.stabilization_window_seconds);
      d.reason = why;
      return held(std::move(d));
    }
    to = rate_limited(now, to, cur, &why);
    if (to == cur) {
      d.to = cur;
      d.rule = "rate_policy";
      d.reason = why;
      return held(std::move(d));
    }
  } else {
    recommendations_.emplace_back(now, want);
  }
  int clamped = std::clamp(to, limits_.min_replicas, limits_.max_replicas);
  std::string clamp_rule;
  if (clamped != to) {
    clamp_rule = clamped > to ? "min_replicas" : "max_replicas";
    why = "spec.scaling." + std::string{clamped > to ? "minReplicas" : "maxReplicas"} + " is " +
          std::to_string(clamped);
    to = clamped;
  }
  if (to == cur) {
    d.to = cur;
    d.rule = clamp_rule.empty() ? "steady" : clamp_rule;
    d.reason = why;
    return held(std::move(d));
  }
  // Activation (up from zero) waits for no cooldown: a request is waiting.
  if (cur > 0 && last_change_ns_ >= 0 &&
      now - last_change_ns_ < static_cast<int64_t>(policy_.cooldown_seconds) * ns_per_s) {
    d.to = cur;
    d.rule = "cooldown";
    d.window = seconds(policy_.cooldown_seconds);
    d.reason = "the last change was " + num(static_cast<double>(now - last_change_ns_) / ns_per_s) +
               "s ago, cooldownSeconds is " + std::to_string(policy_.cooldown_seconds);
    return held(std::move(d));
  }
  d.to = to;
  d.rule = to > cur ? "scale_out" : "scale_in";
  if (!clamp_rule.empty())
    d.reason = why;
  else if (d.metric == "idle")
    d.reason = "no request for " + seconds(policy_.idle_seconds) + " (idleSeconds)";
  else if (d.metric == "latency")
    d.reason = "p95 latency " + num(d.observed) + " ms above maxP95LatencyMs " + num(d.target) +
               " for " + seconds(hy.window_seconds);
  else if (d.metric == "pending_requests")
    d.reason = num(d.observed) + " requests held by the proxy at zero replicas: activation";
  else if (cur == 0)
    d.reason = d.metric + " " + num(d.observed) + " at zero replicas: activation";
  else
    d.reason = d.metric + " " + num(d.observed) + " is " +
               num(d.observed / std::max(cur, 1) / d.target * 100) + "% of target per replica " +
               num(d.target) + " over " + std::to_string(cur) + " replicas" +
               (why.empty() ? std::string{} : "; " + why);
  note_change(now, cur, to);
  return d;
}

} // namespace troupe::autoscale
