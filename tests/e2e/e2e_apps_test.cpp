#define CAF_SUITE e2e_apps
#include "support/dsl.hpp"

// Apps end to end: the real troupe binary runs instances of the project's
// test backend (tests/support/app_backend.cpp). Every wait follows the
// node's event stream (or, for the host's processes, polls /proc with a
// bound); nothing sleeps to wait for a state.

#include <csignal>
#include <dirent.h>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <unistd.h>

#include "support/apps_e2e.hpp"
#include "support/e2e.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using nlohmann::json;

using namespace apps_e2e;

CAF_TEST(a yaml spec registered and up runs three ready instances on their own ports) {
  auto name = app_name("hello");
  reap_on_exit reap_name{name};
  // The shipped example, with the backend's path, three replicas, quick
  // probes and an env value that must never show.
  std::ifstream in(std::string{std::getenv("TROUPE_SOURCE_DIR")} + "/configs/examples/app.yaml");
  std::stringstream buf;
  buf << in.rdbuf();
  auto yaml = buf.str();
  auto replace = [&](const std::string& from, const std::string& to) {
    auto at = yaml.find(from);
    CAF_REQUIRE(at != std::string::npos);
    yaml.replace(at, from.size(), to);
  };
  replace("name: hello", "name: " + name);
  replace("command: [troupe-test-backend]", "command: [" + backend + "]");
  replace("intervalSeconds: 5", "intervalSeconds: 1");
  replace("replicas: 2", "replicas: 3");
  replace("value: hello", "value: s3cr3t-greeting-value");
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  auto reg = e2e::request(node.port(), "POST", "/apps/register",
                          {{"Content-Type", "application/yaml"}}, yaml);
  CAF_REQUIRE_EQUAL(reg.status, 201);
  CAF_CHECK_EQUAL(e2e::json_field(reg, "/name"), name);
  CAF_CHECK_EQUAL(e2e::json_field(reg, "/revision"), "1");
  CAF_CHECK(ev.next_of(name, "app.registered"));
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + name + "/up").status, 202);
  CAF_CHECK(ev.next_of(name, "app.up"));
  CAF_REQUIRE(ev.until_ready(name, 3));

  auto status = status_of(node.port(), name);
  CAF_CHECK_EQUAL(status["state"], "up");
  CAF_CHECK_EQUAL(status["desired"], 3);
  CAF_CHECK_EQUAL(status["ready"], 3);
  CAF_CHECK_EQUAL(status["revision"], 1);
  CAF_REQUIRE_EQUAL(status["instances"].size(), 3u);
  std::set<int> ports;
  std::set<pid_t> pids;
  for (auto& x : status["instances"]) {
    CAF_CHECK_EQUAL(x["state"], "running");
    CAF_CHECK_EQUAL(x["ready"], true);
    CAF_CHECK_EQUAL(x["restarts"], 0);
    CAF_CHECK_EQUAL(x["health"]["status"], "healthy");
    CAF_CHECK(x["limits"] == "cgroup-v2" || x["limits"] == "cgroup-v1" || x["limits"] == "rlimit");
    ports.insert(x["port"].get<int>());
    pids.insert(x["pid"].get<pid_t>());
    // Each answers on its own port, as itself.
    auto info = backend_info(static_cast<uint16_t>(x["port"].get<int>()));
    CAF_CHECK_EQUAL(e2e::json_field(info, "/instance"), x["id"].get<std::string>());
  }
  CAF_CHECK_EQUAL(ports.size(), 3u);
  CAF_CHECK_EQUAL(pids.size(), 3u);
  CAF_CHECK_EQUAL(app_processes(name), pids);

  auto list = e2e::get(node.port(), "/apps").json();
  bool listed = false;
  for (auto& a : list["apps"])
    if (a["name"] == name) {
      listed = true;
      CAF_CHECK_EQUAL(a["state"], "up");
      CAF_CHECK_EQUAL(a["desired"], 3);
      CAF_CHECK_EQUAL(a["ready"], 3);
      CAF_CHECK_EQUAL(a["revision"], 1);
    }
  CAF_CHECK(listed);

  // Output goes into the log store, labelled by app and instance.
  std::set<std::string> logged;
  CAF_CHECK(e2e::poll_until([&] {
    logged.clear();
    for (auto& l : log_lines(node.port(), "/apps/" + name + "/logs?limit=100"))
      if (e2e::contains(l.value("line", ""), "troupe-test-backend listening on"))
        logged.insert(l["labels"].value("instance", ""));
    return logged.size() == 3;
  }));
  for (auto& x : status["instances"])
    CAF_CHECK_EQUAL(logged.count(x["id"].get<std::string>()), 1u);

  // CPU and RSS per instance and for the app, now and per window.
  // Samples of RSS in a usage document's 1m window (0 while it has none).
  auto samples = [](const json& doc) {
    auto ptr = json::json_pointer{"/windows/1m/rss_bytes/samples"};
    return doc.contains(ptr) && doc[ptr].is_number() ? doc[ptr].get<int>() : 0;
  };
  json usage;
  CAF_CHECK(e2e::poll_until([&] {
    usage = e2e::get(node.port(), "/apps/" + name + "/metrics").json();
    if (usage.is_discarded() || usage["instances"].size() != 3)
      return false;
    for (auto& x : usage["instances"])
      if (samples(x) < 2)
        return false;
    return samples(usage) >= 2;
  }));
  for (auto& x : usage["instances"]) {
    CAF_CHECK_GREATER(x["rss_bytes"].get<uint64_t>(), 0u);
    CAF_CHECK_GREATER(x["windows"]["1m"]["rss_bytes"]["max"].get<double>(), 0.0);
    CAF_CHECK(x["windows"]["1m"]["cpu_percent"]["avg"].get<double>() >= 0);
  }
  CAF_CHECK_GREATER(usage["rss_bytes"].get<uint64_t>(), 0u);
  CAF_CHECK(usage["windows"].contains("15m") && usage["windows"].contains("1h"));

  // The env value never leaves troupe.
  for (auto* target : {"/apps", "/events?limit=1000"}) {
    auto res = e2e::get(node.port(), target);
    CAF_CHECK(!e2e::contains(res.body, "s3cr3t-greeting-value"));
  }
  CAF_CHECK(!e2e::contains(e2e::get(node.port(), "/apps/" + name + "/status").body,
                           "s3cr3t-greeting-value"));

  // Down: every instance drains and stops; no process is left.
  CAF_REQUIRE_EQUAL(post(node.port(), "/apps/" + name + "/down").status, 202);
  CAF_CHECK(ev.next_of(name, "app.down"));
  size_t stopped = 0;
  CAF_CHECK(ev.next(
      name, [&](const json& j) { return j["type"] == "instance.stopped" && ++stopped == 3; }));
  status = status_of(node.port(), name);
  CAF_CHECK_EQUAL(status["state"], "down");
  CAF_CHECK_EQUAL(status["ready"], 0);
  CAF_CHECK_EQUAL(status["instances"].size(), 0u);
  CAF_CHECK(e2e::poll_until([&] { return app_processes(name).empty(); }, 10s));
  stop_node(node, name);
}

CAF_TEST(a killed instance restarts with a growing backoff and its restarts counted) {
  auto name = app_name("crashy");
  reap_on_exit reap_name{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  register_and_up(node.port(), ev, backend_spec(name, 1), 1);
  auto first = status_of(node.port(), name)["instances"][0];
  auto id = first["id"].get<std::string>();
  std::vector<int64_t> backoffs;
  auto pid = first["pid"].get<pid_t>();
  for (int round = 1; round <= 3; ++round) {
    CAF_REQUIRE_EQUAL(::kill(pid, SIGKILL), 0);
    auto exited = ev.next_of(name, "instance.exited");
    CAF_REQUIRE(exited);
    ev.track(*exited);
    CAF_CHECK_EQUAL((*exited)["data"]["instance"], id);
    CAF_CHECK_EQUAL((*exited)["data"]["signal"], 9);
    auto restarting = ev.next_of(name, "instance.restarting");
    CAF_REQUIRE(restarting);
    CAF_CHECK_EQUAL((*restarting)["data"]["restarts"], round);
    backoffs.push_back((*restarting)["data"]["backoff_ms"].get<int64_t>());
    CAF_REQUIRE(ev.until_ready(name, 1));
    auto now = status_of(node.port(), name)["instances"][0];
    CAF_CHECK_EQUAL(now["id"], id); // the same instance, restarted
    CAF_CHECK_EQUAL(now["restarts"], round);
    CAF_CHECK_NOT_EQUAL(now["pid"].get<pid_t>(), pid);
    CAF_CHECK(!alive(pid));
    pid = now["pid"].get<pid_t>();
  }
  // 200 ms, then doubled per quick crash.
  CAF_CHECK_EQUAL(backoffs.at(0), 200);
  CAF_CHECK_GREATER(backoffs.at(1), backoffs.at(0));
  CAF_CHECK_GREATER(backoffs.at(2), backoffs.at(1));
  stop_node(node, name);
}

CAF_TEST(a liveness failure restarts an instance and a readiness failure only unreadies it) {
  auto live = app_name("live");
  reap_on_exit reap_live{live};
  auto ready = app_name("ready");
  reap_on_exit reap_ready{ready};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  // Liveness on /healthz, readiness on the port.
  auto spec = backend_spec(live, 1);
  spec["spec"].erase("health");
  spec["spec"]["liveness"] = {{"httpGet", {{"path", "/healthz"}}},
                              {"intervalSeconds", 1},
                              {"timeoutSeconds", 1},
                              {"failureThreshold", 2}};
  spec["spec"]["readiness"] = {{"tcpSocket", json::object()}, {"intervalSeconds", 1}};
  register_and_up(node.port(), ev, spec, 1);
  auto x = status_of(node.port(), live)["instances"][0];
  auto port = static_cast<uint16_t>(x["port"].get<int>());
  CAF_REQUIRE_EQUAL(
      e2e::request(port, "POST", "/control/fail-health", {{"Authorization", ""}}).status, 200);
  auto exited = ev.next_of(live, "instance.exited");
  CAF_REQUIRE(exited);
  CAF_CHECK(e2e::contains((*exited)["data"].value("reason", ""), "liveness probe failed"));
  ev.track(*exited);
  CAF_REQUIRE(ev.until_ready(live, 1));
  auto after = status_of(node.port(), live)["instances"][0];
  CAF_CHECK_EQUAL(after["restarts"], 1);
  CAF_CHECK_NOT_EQUAL(after["pid"], x["pid"]);

  // Readiness on /healthz, liveness on the port: failing /healthz takes it
  // out of traffic (not ready), and it keeps running.
  events ev2{node.port()};
  spec = backend_spec(ready, 1);
  spec["spec"].erase("health");
  spec["spec"]["readiness"] = {{"httpGet", {{"path", "/healthz"}}},
                               {"intervalSeconds", 1},
                               {"timeoutSeconds", 1},
                               {"failureThreshold", 2}};
  spec["spec"]["liveness"] = {
      {"tcpSocket", json::object()}, {"intervalSeconds", 1}, {"failureThreshold", 2}};
  register_and_up(node.port(), ev2, spec, 1);
  x = status_of(node.port(), ready)["instances"][0];
  port = static_cast<uint16_t>(x["port"].get<int>());
  CAF_REQUIRE_EQUAL(
      e2e::request(port, "POST", "/control/fail-health", {{"Authorization", ""}}).status, 200);
  auto unready = ev2.next_of(ready, "instance.unready");
  CAF_REQUIRE(unready);
  CAF_CHECK(e2e::contains((*unready)["data"].value("reason", ""), "readiness probe failing"));
  auto mid = status_of(node.port(), ready);
  CAF_CHECK_EQUAL(mid["ready"], 0);
  CAF_CHECK_EQUAL(mid["instances"][0]["ready"], false);
  CAF_CHECK_EQUAL(mid["instances"][0]["state"], "running");
  CAF_CHECK_EQUAL(mid["instances"][0]["health"]["status"], "unhealthy");
  CAF_CHECK_GREATER_OR_EQUAL(mid["instances"][0]["health"]["consecutive_failures"].get<int>(), 2);
  // Healed, it comes back without a restart.
  CAF_REQUIRE_EQUAL(e2e::request(port, "POST", "/control/heal", {{"Authorization", ""}}).status,
                    200);
  ev2.track(*unready);
  CAF_REQUIRE(ev2.until_ready(ready, 1));
  auto healed = status_of(node.port(), ready)["instances"][0];
  CAF_CHECK_EQUAL(healed["restarts"], 0);
  CAF_CHECK_EQUAL(healed["pid"], x["pid"]);
  for (auto& j : ev2.log())
    if (j["data"].value("app", "") == ready)
      CAF_CHECK(j["type"] != "instance.exited" && j["type"] != "instance.restarting");
  stop_node(node, live);
  CAF_CHECK(app_processes(ready).empty());
}

CAF_TEST(scaling in drains and a request in flight on a draining instance completes) {
  auto name = app_name("drain");
  reap_on_exit reap_name{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  register_and_up(node.port(), ev, backend_spec(name, 3), 3);
  auto status = status_of(node.port(), name);
  // A slow request in flight on every instance.
  std::vector<std::future<e2e::response>> slow;
  std::vector<uint16_t> ports;
  for (auto& x : status["instances"]) {
    auto port = static_cast<uint16_t>(x["port"].get<int>());
    ports.push_back(port);
    slow.push_back(std::async(std::launch::async, [port] {
      return e2e::request(port, "GET", "/slow?ms=1500", {{"Authorization", ""}}, {}, 30s);
    }));
  }
  for (auto port : ports)
    CAF_REQUIRE(e2e::poll_until([&] {
      auto info = backend_info(port);
      return info.contains("in_flight") && info["in_flight"].get<int>() >= 1;
    }));
  auto res = post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 1}});
  CAF_REQUIRE_EQUAL(res.status, 202);
  auto scaled = ev.next_of(name, "app.scaled");
  CAF_REQUIRE(scaled);
  CAF_CHECK_EQUAL((*scaled)["data"]["from"], 3);
  CAF_CHECK_EQUAL((*scaled)["data"]["to"], 1);
  CAF_CHECK_EQUAL((*scaled)["data"]["reason"], "api");
  // Two instances leave: each is first taken out of traffic, then stopped.
  std::set<std::string> unreadied;
  std::set<std::string> stopped;
  CAF_CHECK(ev.next(name, [&](const json& j) {
    auto id = j["data"].value("instance", "");
    if (j["type"] == "instance.unready")
      unreadied.insert(id);
    if (j["type"] == "instance.stopped") {
      CAF_CHECK_EQUAL(unreadied.count(id), 1u);
      stopped.insert(id);
    }
    return stopped.size() == 2;
  }));
  for (auto& f : slow) {
    auto r = f.get();
    CAF_CHECK_EQUAL(r.status, 200);
  }
  status = status_of(node.port(), name);
  CAF_CHECK_EQUAL(status["desired"], 1);
  CAF_CHECK_EQUAL(status["ready"], 1);
  CAF_CHECK_EQUAL(status["instances"].size(), 1u);
  // The decisions, newest first: this scale-in, then the up before it;
  // a page at a time with the cursor.
  auto history = e2e::get(node.port(), "/apps/" + name + "/scaling").json();
  CAF_REQUIRE_GREATER_OR_EQUAL(history["decisions"].size(), 2u);
  auto newest = history["decisions"][0];
  CAF_CHECK_EQUAL(newest["from"], 3);
  CAF_CHECK_EQUAL(newest["to"], 1);
  CAF_CHECK_EQUAL(newest["reason"], "api");
  CAF_CHECK(history["next_cursor"].is_null());
  auto first = e2e::get(node.port(), "/apps/" + name + "/scaling?limit=1").json();
  CAF_REQUIRE_EQUAL(first["decisions"].size(), 1u);
  CAF_CHECK_EQUAL(first["decisions"][0], newest);
  CAF_REQUIRE(first["next_cursor"].is_string());
  auto second = e2e::get(node.port(), "/apps/" + name + "/scaling?limit=1&cursor=" +
                                          first["next_cursor"].get<std::string>())
                    .json();
  CAF_REQUIRE_EQUAL(second["decisions"].size(), 1u);
  CAF_CHECK_EQUAL(second["decisions"][0], history["decisions"][1]);
  auto bad = e2e::get(node.port(), "/apps/" + name + "/scaling?limit=0");
  CAF_CHECK_EQUAL(bad.status, 400);
  CAF_CHECK(e2e::contains(bad.body, "limit"));
  stop_node(node, name);
}

CAF_TEST(re - registering replaces instances one at a time and never below desired ready) {
  auto name = app_name("roll");
  reap_on_exit reap_name{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  register_and_up(node.port(), ev, backend_spec(name, 3), 3);
  auto before = instances_of(status_of(node.port(), name));
  // Revision 2: the same backend as a shell command string.
  auto spec = backend_spec(name, 3);
  spec["spec"]["command"] = "exec '" + backend + "' --port \"$PORT\"";
  spec["spec"].erase("args");
  auto res = post_json(node.port(), "/apps/register", spec);
  CAF_REQUIRE_EQUAL(res.status, 200);
  CAF_CHECK_EQUAL(e2e::json_field(res, "/revision"), "2");
  CAF_CHECK(ev.next_of(name, "app.updated"));
  // Follow until every old instance stopped; the ready set never shrinks
  // below 3 on the way.
  size_t min_ready = 3;
  std::set<std::string> old_stopped;
  CAF_CHECK(ev.next(
      name,
      [&](const json& j) {
        ev.track(j);
        min_ready = std::min(min_ready, ev.ready().size());
        if (j["type"] == "instance.stopped")
          old_stopped.insert(j["data"].value("instance", ""));
        for (auto& [id, x] : before)
          if (old_stopped.count(id) == 0)
            return false;
        return true;
      },
      60s));
  CAF_CHECK_EQUAL(min_ready, 3u);
  CAF_REQUIRE(ev.until_ready(name, 3));
  auto status = status_of(node.port(), name);
  CAF_CHECK_EQUAL(status["revision"], 2);
  CAF_CHECK_EQUAL(status["ready"], 3);
  CAF_REQUIRE_EQUAL(status["instances"].size(), 3u);
  for (auto& x : status["instances"]) {
    CAF_CHECK_EQUAL(x["revision"], 2);
    CAF_CHECK_EQUAL(before.count(x["id"].get<std::string>()), 0u);
  }
  stop_node(node, name);
}

CAF_TEST(after a restart or kill of troupe the apps come back without doubling) {
  auto name = app_name("again");
  reap_on_exit reap_name{name};
  e2e::scratch_dir data{"troupe-apps"};
  auto opts = fast_options();
  opts.data_dir = data.path();
  std::set<std::string> earlier; // instance ids of earlier runs
  auto ids_of = [](const json& status) {
    std::set<std::string> out;
    for (auto& x : status["instances"])
      out.insert(x["id"].get<std::string>());
    return out;
  };
  {
    e2e::daemon node{opts};
    events ev{node.port()};
    register_and_up(node.port(), ev, backend_spec(name, 2), 2);
    earlier = ids_of(status_of(node.port(), name));
    // SIGTERM stops the instances with the node.
    stop_node(node, name);
  }
  std::set<pid_t> second_pids;
  {
    e2e::daemon node{opts};
    events ev{node.port()};
    ev.ignore(earlier);
    if (!ev.until_ready(name, 2))
      CAF_FAIL("not restored: " << node.output_text());
    auto status = status_of(node.port(), name);
    CAF_CHECK_EQUAL(status["desired"], 2);
    CAF_CHECK_EQUAL(status["instances"].size(), 2u);
    for (auto& x : status["instances"]) {
      CAF_CHECK_EQUAL(earlier.count(x["id"].get<std::string>()), 0u);
      second_pids.insert(x["pid"].get<pid_t>());
    }
    CAF_CHECK_EQUAL(app_processes(name), second_pids);
    auto now = ids_of(status);
    earlier.insert(now.begin(), now.end());
    // kill -9: the instances outlive the node (own process groups) ...
    node.kill9();
    CAF_REQUIRE(node.wait_exit(20s));
    for (auto pid : second_pids)
      CAF_CHECK(alive(pid));
  }
  {
    // ... and the next run kills them before it starts the app again.
    e2e::daemon node{opts};
    events ev{node.port()};
    ev.ignore(earlier);
    CAF_REQUIRE(ev.until_ready(name, 2));
    auto status = status_of(node.port(), name);
    CAF_CHECK_EQUAL(status["instances"].size(), 2u);
    std::set<pid_t> third_pids;
    for (auto& x : status["instances"])
      third_pids.insert(x["pid"].get<pid_t>());
    for (auto pid : second_pids) {
      CAF_CHECK(!alive(pid));
      CAF_CHECK_EQUAL(third_pids.count(pid), 0u);
    }
    CAF_CHECK_EQUAL(app_processes(name), third_pids);
    stop_node(node, name);
  }
}

CAF_TEST(an instance that allocates past its memory limit is killed and reported) {
  auto name = app_name("hog");
  reap_on_exit reap_name{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  auto spec = backend_spec(name, 1);
  spec["spec"]["resources"] = {{"memory", "64Mi"}};
  register_and_up(node.port(), ev, spec, 1);
  auto x = status_of(node.port(), name)["instances"][0];
  auto mechanism = x["limits"].get<std::string>();
  CAF_MESSAGE("limits: " << mechanism);
  CAF_REQUIRE(mechanism != "none");
  auto port = static_cast<uint16_t>(x["port"].get<int>());
  // The answer may never come: the process dies allocating.
  e2e::request(port, "POST", "/control/alloc?mb=256", {{"Authorization", ""}}, {}, 20s);
  auto exited = ev.next_of(name, "instance.exited");
  CAF_REQUIRE(exited);
  auto reason = (*exited)["data"].value("reason", "");
  CAF_MESSAGE("exit: " << (*exited)["data"].dump());
  if (mechanism == "rlimit") {
    // RLIMIT_AS: the allocation fails inside the process, which ends.
    CAF_CHECK(!e2e::contains(reason, "exited with code 0"));
  } else {
    CAF_CHECK_EQUAL((*exited)["data"]["oom_killed"], true);
    CAF_CHECK(e2e::contains(reason, "OOM-killed"));
    CAF_CHECK(e2e::contains(reason, "67108864"));
  }
  CAF_CHECK(ev.next_of(name, "instance.restarting"));
  ev.track(*exited);
  CAF_REQUIRE(ev.until_ready(name, 1));
  auto after = status_of(node.port(), name);
  CAF_REQUIRE_EQUAL(after["instances"].size(), 1u);
  CAF_CHECK_EQUAL(after["instances"][0]["restarts"], 1);
  CAF_CHECK(e2e::contains(after["instances"][0].value("reason", ""), "OOM-killed"));
  stop_node(node, name);
}

CAF_TEST(bad specs and requests get a 400 naming the field and change nothing) {
  auto name = app_name("strict");
  reap_on_exit reap_name{name};
  e2e::daemon node{fast_options()};
  events ev{node.port()};
  register_and_up(node.port(), ev, backend_spec(name, 2), 2);
  auto before = status_of(node.port(), name);
  auto expect_400 = [&](const e2e::response& res, const std::string& field) {
    CAF_CHECK_EQUAL(res.status, 400);
    CAF_CHECK_EQUAL(e2e::json_field(res, "/error/field"), field);
    if (res.status != 400)
      CAF_MESSAGE(res.to_string());
  };
  auto with = [&](const std::function<void(json&)>& change) {
    auto spec = backend_spec(name, 2);
    change(spec);
    return post_json(node.port(), "/apps/register", spec);
  };
  expect_400(with([](json& s) { s["spec"]["image"] = "nginx:1.25"; }), "spec.image");
  expect_400(with([](json& s) { s["spec"]["colour"] = "blue"; }), "spec.colour");
  expect_400(with([](json& s) { s["spec"]["scaling"]["replicas"] = "three"; }),
             "spec.scaling.replicas");
  expect_400(with([](json& s) { s["spec"]["scaling"]["minReplicas"] = 9; }),
             "spec.scaling.maxReplicas");
  expect_400(with([](json& s) { s["spec"]["health"]["intervalSeconds"] = 0; }),
             "spec.health.intervalSeconds");
  expect_400(with([](json& s) { s["metadata"]["name"] = "Not_A_Label"; }), "metadata.name");
  expect_400(with([](json& s) { s["spec"]["restartPolicy"] = "Sometimes"; }), "spec.restartPolicy");
  expect_400(with([](json& s) {
               s["spec"]["resources"] = {{"memory", "lots"}};
             }),
             "spec.resources.memory");
  auto bad_yaml = e2e::request(node.port(), "POST", "/apps/register",
                               {{"Content-Type", "application/yaml"}}, "metadata: [unclosed\n");
  CAF_CHECK_EQUAL(bad_yaml.status, 400);
  expect_400(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 9}}), "replicas");
  expect_400(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", "two"}}), "replicas");
  expect_400(post_json(node.port(), "/apps/" + name + "/scale", {{"replicas", 2}, {"x", 1}}),
             "replicas");
  CAF_CHECK_EQUAL(post(node.port(), "/apps/no-such-app/up").status, 404);
  CAF_CHECK_EQUAL(e2e::get(node.port(), "/apps/no-such-app/status").status, 404);
  auto after = status_of(node.port(), name);
  CAF_CHECK_EQUAL(after["revision"], 1);
  CAF_CHECK_EQUAL(after["desired"], 2);
  CAF_CHECK_EQUAL(after["ready"], 2);
  CAF_CHECK_EQUAL(instances_of(after).size(), instances_of(before).size());
  for (auto& [id, x] : instances_of(before))
    CAF_CHECK_EQUAL(instances_of(after).count(id), 1u);

  // Deleted: its instances stop, it is gone from the API, its logs stay.
  auto del = e2e::request(node.port(), "DELETE", "/apps/" + name);
  CAF_CHECK_EQUAL(del.status, 202);
  CAF_CHECK(ev.next_of(name, "app.deleted"));
  size_t stopped = 0;
  CAF_CHECK(ev.next(
      name, [&](const json& j) { return j["type"] == "instance.stopped" && ++stopped == 2; }));
  CAF_CHECK_EQUAL(e2e::get(node.port(), "/apps/" + name + "/status").status, 404);
  CAF_CHECK(e2e::poll_until([&] { return app_processes(name).empty(); }, 10s));
  CAF_CHECK_GREATER(log_lines(node.port(), "/logs?service=" + name + "&limit=10").size(), 0u);
  stop_node(node, name);
}
