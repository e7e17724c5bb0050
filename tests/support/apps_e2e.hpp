#pragma once

// Helpers of the apps and traffic end-to-end suites: specs of the test
// backend, the node's event stream with the ready set it implies, the
// host's processes of an app, reaping what a failed case leaves.

#include <csignal>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <unistd.h>

#include "support/dsl.hpp"
#include "support/e2e.hpp"

namespace apps_e2e {

using namespace troupe;
using namespace std::chrono_literals;
using nlohmann::json;

inline const std::string backend = TROUPE_TEST_BACKEND;

/// An app name no other test run on this host uses at the same time (the
/// /proc checks find instances by TROUPE_APP).
inline std::string app_name(const std::string& base) {
  return base + "-" + std::to_string(::getpid() % 100000);
}

/// A spec (JSON) for `replicas` instances of the backend with fast probes.
inline json backend_spec(const std::string& name, int replicas) {
  return json{{"apiVersion", "v1"},
              {"kind", "App"},
              {"metadata", {{"name", name}}},
              {"spec",
               {{"type", "http"},
                {"command", json::array({backend})},
                {"args", json::array({"--port", "$PORT"})},
                {"ports", json::array({{{"containerPort", 8080}}})},
                {"health",
                 {{"httpGet", {{"path", "/healthz"}}},
                  {"intervalSeconds", 1},
                  {"timeoutSeconds", 1},
                  {"failureThreshold", 2}}},
                {"scaling", {{"minReplicas", 1}, {"maxReplicas", 5}, {"replicas", replicas}}},
                {"termination", {{"drainSeconds", 10}, {"gracePeriodSeconds", 5}}}}}};
}

inline e2e::daemon_options fast_options() {
  e2e::daemon_options o;
  o.env = {{"TROUPE_APPS__RESTART_BACKOFF_INITIAL", "200ms"},
           {"TROUPE_APPS__SAMPLE_INTERVAL", "200ms"}};
  return o;
}

inline e2e::response post_json(uint16_t port, const std::string& target, const json& body) {
  return e2e::request(port, "POST", target, {{"Content-Type", "application/json"}}, body.dump());
}

inline e2e::response post(uint16_t port, const std::string& target) {
  return e2e::request(port, "POST", target);
}

/// The node's events, replayed from the start and followed live.
class events {
public:
  explicit events(uint16_t port)
      : stream_(e2e::open_sse(port, "/events", {{"Last-Event-ID", "0"}})) {
    CAF_REQUIRE_EQUAL(stream_.status(), 200);
  }

  /// The next event (its whole JSON: type, data …) of app `app` for which
  /// `pred` holds; every event of the app is also passed to `seen`.
  std::optional<json> next(const std::string& app, const std::function<bool(const json&)>& pred,
                           e2e::duration timeout = 30s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto left =
          std::chrono::duration_cast<e2e::duration>(deadline - std::chrono::steady_clock::now());
      auto ev = stream_.next(std::max(left, e2e::duration{1}));
      if (!ev)
        return std::nullopt;
      auto j = ev->json();
      if (j.is_discarded() || !j.contains("data") || j["data"].value("app", "") != app)
        continue;
      log_.push_back(j);
      if (pred(j))
        return j;
    }
    return std::nullopt;
  }

  /// The next event of `type` for app `app`.
  std::optional<json> next_of(const std::string& app, const std::string& type,
                              e2e::duration timeout = 30s) {
    return next(
        app, [&](const json& j) { return j["type"] == type; }, timeout);
  }

  /// Follows the app's instance events until `n` instances are ready (the
  /// ready set as events tell it); false on timeout. `check` sees the set
  /// after every event (e.g. to assert it never shrinks below a bound).
  bool until_ready(const std::string& app, size_t n, e2e::duration timeout = 30s,
                   const std::function<void(const std::set<std::string>&)>& check = {}) {
    if (ready_.size() == n)
      return true;
    auto done = next(
                    app,
                    [&](const json& j) {
                      track(j);
                      if (check)
                        check(ready_);
                      return ready_.size() == n;
                    },
                    timeout)
                    .has_value();
    if (!done) {
      CAF_MESSAGE("not " << n << " ready; ready: " << ready_.size() << " ended " << stream_.ended()
                         << " timed out " << stream_.timed_out() << " error " << stream_.error()
                         << ", events seen:");
      for (auto& j : log_)
        CAF_MESSAGE("  " << j.dump());
    }
    return done;
  }

  /// Instances of an earlier run of the node (their events are replayed):
  /// they no longer count.
  void ignore(const std::set<std::string>& ids) { ignored_.insert(ids.begin(), ids.end()); }

  /// Updates the ready set with one event.
  void track(const json& j) {
    auto id = j["data"].value("instance", "");
    if (ignored_.count(id) > 0)
      return;
    auto type = j.value("type", "");
    if (type == "instance.ready")
      ready_.insert(id);
    else if (type == "instance.unready" || type == "instance.exited" || type == "instance.stopped")
      ready_.erase(id);
  }

  const std::set<std::string>& ready() const { return ready_; }

  /// Every event of the followed apps seen so far.
  const std::vector<json>& log() const { return log_; }

private:
  e2e::sse_stream stream_;
  std::set<std::string> ready_;
  std::set<std::string> ignored_;
  std::vector<json> log_;
};

/// Processes on this host (not zombies) whose environment has
/// TROUPE_APP=`app`.
inline std::set<pid_t> app_processes(const std::string& app) {
  std::set<pid_t> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr)
    return out;
  auto needle = "TROUPE_APP=" + app;
  while (auto* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    std::ifstream env("/proc/" + name + "/environ", std::ios::binary);
    std::stringstream buf;
    buf << env.rdbuf();
    auto text = buf.str();
    bool found = false;
    for (size_t at = 0; at < text.size();) {
      auto end = text.find('\0', at);
      if (text.compare(at, (end == std::string::npos ? text.size() : end) - at, needle) == 0)
        found = true;
      if (end == std::string::npos)
        break;
      at = end + 1;
    }
    if (found)
      out.insert(static_cast<pid_t>(std::stol(name)));
  }
  ::closedir(dir);
  return out;
}

/// Kills what is left of app `app` on this host when a case ends, however
/// it ends (a failed REQUIRE leaves the daemon SIGKILLed, not its instances).
struct reap_on_exit {
  std::string app;
  ~reap_on_exit() {
    for (auto pid : app_processes(app))
      ::kill(pid, SIGKILL);
  }
};

/// True while `pid` exists and is no zombie.
inline bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text))
    return false;
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

inline json status_of(uint16_t port, const std::string& app) {
  auto res = e2e::get(port, "/apps/" + app + "/status");
  CAF_REQUIRE_EQUAL(res.status, 200);
  return res.json();
}

/// The instances of a status by id.
inline std::map<std::string, json> instances_of(const json& status) {
  std::map<std::string, json> out;
  for (auto& x : status["instances"])
    out[x["id"].get<std::string>()] = x;
  return out;
}

/// Registers and ups `spec`; waits until `ready` instances are ready.
inline void register_and_up(uint16_t port, events& ev, const json& spec, size_t ready) {
  auto name = spec["metadata"]["name"].get<std::string>();
  auto reg = post_json(port, "/apps/register", spec);
  CAF_REQUIRE_EQUAL(reg.status, 201);
  CAF_REQUIRE_EQUAL(post(port, "/apps/" + name + "/up").status, 202);
  CAF_REQUIRE(ev.until_ready(name, ready));
}

/// SIGTERM to the node: every instance stops with it, none is left behind.
inline void stop_node(e2e::daemon& node, const std::string& app) {
  node.terminate();
  auto st = node.wait_exit(60s);
  CAF_CHECK(st && st->exited_with(0));
  auto left = app_processes(app);
  CAF_CHECK_EQUAL(left.size(), 0u);
  for (auto pid : left)
    ::kill(pid, SIGKILL);
}

/// The log lines (NDJSON) of GET `target`.
inline std::vector<json> log_lines(uint16_t port, const std::string& target) {
  std::vector<json> out;
  std::istringstream in(e2e::get(port, target).body);
  for (std::string line; std::getline(in, line);)
    if (auto j = json::parse(line, nullptr, false); !j.is_discarded())
      out.push_back(std::move(j));
  return out;
}

/// The backend's own view: GET / on an instance's port.
inline json backend_info(uint16_t port) {
  auto res = e2e::request(port, "GET", "/", {{"Authorization", ""}});
  return res.status == 200 ? res.json() : json{};
}

} // namespace apps_e2e
