#include "http/proxy_balancer.hpp"

#include <algorithm>

namespace troupe::http {

void balancer::set_ready(const std::vector<endpoint>& ready) {
  for (auto& [id, s] : by_id_)
    s.ready = false;
  for (auto& e : ready) {
    auto& s = by_id_[e.instance];
    s.ready = true;
    s.port = e.port;
  }
  for (auto i = by_id_.begin(); i != by_id_.end();)
    if (!i->second.ready && i->second.in_flight == 0)
      i = by_id_.erase(i);
    else
      ++i;
}

std::optional<balancer::endpoint> balancer::pick(clock::time_point now, std::mt19937_64& rng,
                                                 const std::vector<std::string>& exclude) const {
  std::vector<std::pair<const std::string*, const state*>> candidates;
  for (auto& [id, s] : by_id_)
    if (s.ready && s.ejected_until <= now &&
        std::find(exclude.begin(), exclude.end(), id) == exclude.end())
      candidates.emplace_back(&id, &s);
  if (candidates.empty())
    return std::nullopt;
  std::uniform_int_distribution<size_t> any(0, candidates.size() - 1);
  auto a = candidates[any(rng)];
  if (candidates.size() > 1) {
    // A second candidate other than the first: least outstanding wins, the
    // first (random) on a tie.
    auto b = a;
    while (b.first == a.first)
      b = candidates[any(rng)];
    if (b.second->in_flight < a.second->in_flight)
      a = b;
  }
  return endpoint{*a.first, a.second->port};
}

void balancer::started(const std::string& instance) {
  if (auto i = by_id_.find(instance); i != by_id_.end())
    ++i->second.in_flight;
}

void balancer::finished(const std::string& instance) {
  auto i = by_id_.find(instance);
  if (i == by_id_.end() || i->second.in_flight == 0)
    return;
  if (--i->second.in_flight == 0 && !i->second.ready)
    by_id_.erase(i);
}

bool balancer::connect_failed(const std::string& instance, clock::time_point now) {
  auto i = by_id_.find(instance);
  if (i == by_id_.end())
    return false;
  auto& s = i->second;
  if (++s.failures < opts_.max_fails)
    return false;
  s.failures = 0;
  s.ejected_until = now + opts_.eject_for;
  return true;
}

void balancer::connect_ok(const std::string& instance) {
  if (auto i = by_id_.find(instance); i != by_id_.end())
    i->second.failures = 0;
}

uint32_t balancer::in_flight(const std::string& instance) const {
  auto i = by_id_.find(instance);
  return i == by_id_.end() ? 0 : i->second.in_flight;
}

uint64_t balancer::in_flight() const {
  uint64_t n = 0;
  for (auto& [id, s] : by_id_)
    n += s.in_flight;
  return n;
}

size_t balancer::available(clock::time_point now) const {
  return static_cast<size_t>(std::count_if(by_id_.begin(), by_id_.end(), [now](auto& kv) {
    return kv.second.ready && kv.second.ejected_until <= now;
  }));
}

bool balancer::routable(const std::string& instance) const {
  auto i = by_id_.find(instance);
  return i != by_id_.end() && i->second.ready;
}

std::vector<balancer::load> balancer::loads(clock::time_point now) const {
  std::vector<load> out;
  out.reserve(by_id_.size());
  for (auto& [id, s] : by_id_)
    out.push_back({id, s.port, s.in_flight, s.ready, s.ejected_until > now});
  return out;
}

} // namespace troupe::http
