#define CAF_SUITE app_spec
#include "support/dsl.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/apps/app_spec.hpp"

using namespace troupe;

namespace {

const std::string minimal = R"({"metadata":{"name":"web"},"spec":{"command":["srv"]}})";

/// "field: reason" of the spec_error a JSON body raises, or "ok".
std::string json_error(const std::string& body) {
  try {
    parse_app_spec_json(body);
    return "ok";
  } catch (const spec_error& e) {
    return e.what();
  }
}

std::string yaml_error(const std::string& body) {
  try {
    parse_app_spec_yaml(body);
    return "ok";
  } catch (const spec_error& e) {
    return e.what();
  }
}

/// A minimal JSON spec with `spec_extra` members added to `spec`.
std::string with(const std::string& spec_extra) {
  return R"({"metadata":{"name":"web"},"spec":{"command":["srv"],)" + spec_extra + "}}";
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string example_path() {
  auto root = std::getenv("TROUPE_SOURCE_DIR");
  return std::string{root != nullptr ? root : ".."} + "/configs/examples/app.yaml";
}

} // namespace

CAF_TEST(a minimal spec gets every default) {
  auto s = parse_app_spec_json(minimal);
  CAF_CHECK_EQUAL(s.name, "web");
  CAF_CHECK_EQUAL(s.type, "http");
  CAF_CHECK_EQUAL(s.command.words, std::vector<std::string>{"srv"});
  CAF_CHECK(!s.command.shell);
  CAF_CHECK_EQUAL(s.container_ports, std::vector<int>{0});
  CAF_CHECK(!s.readiness && !s.liveness);
  CAF_CHECK_EQUAL(s.scaling.min_replicas, 1);
  CAF_CHECK_EQUAL(s.scaling.max_replicas, 1);
  CAF_CHECK_EQUAL(s.scaling.replicas, 1);
  CAF_CHECK_EQUAL(s.scaling.policy.mode, "manual");
  CAF_CHECK_EQUAL(s.scaling.policy.scale_down.stabilization_window_seconds, 300);
  CAF_CHECK_EQUAL(s.drain_seconds, 30);
  CAF_CHECK_EQUAL(s.grace_period_seconds, 10);
  CAF_CHECK_EQUAL(s.restart_policy, "Always");
}

CAF_TEST(health fills readiness and liveness with the seed defaults) {
  auto s = parse_app_spec_json(with(
      R"("ports":[{"containerPort":8080}],"health":{"httpGet":{"path":"/healthz","port":8080}})"));
  CAF_REQUIRE(s.readiness && s.liveness);
  CAF_CHECK_EQUAL(s.readiness->path, "/healthz");
  CAF_CHECK_EQUAL(s.readiness->port, 8080);
  CAF_CHECK_EQUAL(s.readiness->interval_seconds, 5);
  CAF_CHECK_EQUAL(s.readiness->timeout_seconds, 2);
  CAF_CHECK_EQUAL(s.readiness->failure_threshold, 3);
  CAF_CHECK_EQUAL(s.readiness->success_threshold, 1);
  CAF_CHECK_EQUAL(s.readiness->initial_delay_seconds, 0);
  CAF_CHECK_EQUAL(s.liveness->path, "/healthz");
  // Given apart, readiness and liveness differ; health fills only the missing one.
  auto apart = parse_app_spec_json(with(
      R"("health":{"tcpSocket":{}},"liveness":{"exec":{"command":"true"},"failureThreshold":7})"));
  CAF_CHECK(apart.readiness->type == app_probe::kind::tcp_socket);
  CAF_CHECK(apart.liveness->type == app_probe::kind::exec);
  CAF_CHECK_EQUAL(apart.liveness->failure_threshold, 7);
  CAF_CHECK(apart.liveness->command.shell);
}

CAF_TEST(resources read cpu and memory in their usual forms) {
  auto cpu = [](const std::string& v) {
    return parse_app_spec_json(with(R"("resources":{"cpu":)" + v + "}")).resources.cpu_millis;
  };
  auto mem = [](const std::string& v) {
    return parse_app_spec_json(with(R"("resources":{"memory":)" + v + "}")).resources.memory_bytes;
  };
  CAF_CHECK_EQUAL(cpu("\"0.5\""), 500u);
  CAF_CHECK_EQUAL(cpu("\"500m\""), 500u);
  CAF_CHECK_EQUAL(cpu("1"), 1000u);
  CAF_CHECK_EQUAL(cpu("1.25"), 1250u);
  CAF_CHECK_EQUAL(mem("\"512Mi\""), 512ull << 20);
  CAF_CHECK_EQUAL(mem("\"1Gi\""), 1ull << 30);
  CAF_CHECK_EQUAL(mem("\"1G\""), 1'000'000'000ull);
  CAF_CHECK_EQUAL(mem("1048576"), 1ull << 20);
  CAF_CHECK(starts_with(json_error(with(R"("resources":{"cpu":"0.0001"})")),
                        "spec.resources.cpu: must be CPUs"));
  CAF_CHECK(starts_with(json_error(with(R"("resources":{"memory":"12 apples"})")),
                        "spec.resources.memory: must be bytes"));
  CAF_CHECK(starts_with(json_error(with(R"("resources":{"memory":1024})")),
                        "spec.resources.memory: must be bytes"));
}

CAF_TEST(errors name the dotted field path and the reason) {
  struct error_case {
    std::string body;
    std::string error;
  };
  const std::vector<error_case> cases = {
      {R"({"spec":{"command":"x"}})", "metadata: is required"},
      {R"({"metadata":{"name":"web"}})", "spec: is required"},
      {R"({"metadata":{"name":"Web_1"},"spec":{"command":"x"}})",
       "metadata.name: must be a DNS label"},
      {R"({"kind":"Pod","metadata":{"name":"w"},"spec":{"command":"x"}})",
       "kind: must be one of App, got \"Pod\""},
      {R"({"apiVersion":"v2","metadata":{"name":"w"},"spec":{"command":"x"}})",
       "apiVersion: must be one of v1"},
      {R"({"metadata":{"name":"w"},"spec":{"command":"x","colour":1}})",
       "spec.colour: unknown field"},
      {R"({"metadata":{"name":"w"},"spec":{"image":"nginx","command":"x"}})",
       "spec.image: is not supported: the process backend runs `command`"},
      {R"({"metadata":{"name":"w"},"spec":{}})", "spec.command: is required"},
      {with(R"("type":"worker")"), "spec.type: must be one of http"},
      {with(R"("scaling":{"minReplicas":3,"maxReplicas":2})"),
       "spec.scaling.maxReplicas: must be >= minReplicas (3)"},
      {with(R"("scaling":{"maxReplicas":"ten"})"),
       "spec.scaling.maxReplicas: must be an integer between 1 and 1000, got \"ten\""},
      {with(R"("scaling":{"maxReplicas":3,"replicas":4})"),
       "spec.scaling.replicas: must be between minReplicas (1) and maxReplicas (3)"},
      {with(
           R"("env":[{"name":"A","value":"1"},{"name":"B","value":"2"},{"name":"9x","value":""}])"),
       "spec.env[2].name: must be a variable name"},
      {with(R"("env":[{"name":"A","value":"1"},{"name":"A","value":"2"}])"),
       "spec.env[1].name: duplicates spec.env[0].name"},
      {with(R"("env":[{"name":"PORT","value":"80"}])"), "spec.env[0].name: is set by troupe"},
      {with(R"("env":[{"name":"SECRET","valueFrom":"sdk"}])"),
       "spec.env[0].name: is not a value troupe provides"},
      {with(R"("env":[{"name":"A"}])"), "spec.env[0]: needs exactly one of value, valueFrom"},
      {with(R"("ports":[{"containerPort":70000}])"),
       "spec.ports[0].containerPort: must be an integer between 1 and 65535"},
      {with(R"("ports":[{"containerPort":80},{"containerPort":80}])"),
       "spec.ports[1].containerPort: duplicates an earlier containerPort"},
      {with(R"("ports":[{"containerPort":80}],"health":{"httpGet":{"port":81}})"),
       "spec.health.httpGet.port: must be one of spec.ports[].containerPort"},
      {with(R"("health":{"httpGet":{},"tcpSocket":{}})"),
       "spec.health: needs exactly one of httpGet, tcpSocket, exec"},
      {with(R"("health":{"httpGet":{"path":"healthz"}})"),
       "spec.health.httpGet.path: must start with '/'"},
      {with(R"("readiness":{"tcpSocket":{},"intervalSeconds":0})"),
       "spec.readiness.intervalSeconds: must be an integer between 1 and 86400, got 0"},
      {with(R"("liveness":{"tcpSocket":{},"successThreshold":2})"),
       "spec.liveness.successThreshold: must be 1 for liveness"},
      {with(R"("workingDir":"relative/dir")"), "spec.workingDir: must be an absolute path"},
      {with(R"("restartPolicy":"Sometimes")"),
       "spec.restartPolicy: must be one of Always, OnFailure, Never"},
      {with(R"("termination":{"drainSeconds":-1})"),
       "spec.termination.drainSeconds: must be an integer between 0 and 3600, got -1"},
      {with(R"("scaling":{"policy":{}})"), "spec.scaling.policy: mode auto needs at least one of"},
      {with(R"("scaling":{"policy":{"mode":"sometimes"}})"),
       "spec.scaling.policy.mode: must be one of auto, manual"},
      {with(R"("scaling":{"policy":{"http":{"targetRPSPerReplica":5,"scaleInThresholdPct":90}}})"),
       "spec.scaling.policy.http.scaleInThresholdPct: must be below scaleOutThresholdPct (80)"},
      {with(R"("scaling":{"policy":{"cpu":{"targetUtilizationPct":70}}})"),
       "spec.scaling.policy.cpu: needs spec.resources.cpu"},
      {with(R"("scaling":{"policy":{"http":{"targetRPSPerReplica":5},"idleSeconds":60}})"),
       "spec.scaling.policy.idleSeconds: needs spec.scaling.minReplicas 0"},
      {with(
           R"("scaling":{"policy":{"queue":{"redis":{"url":"http://x","key":"q","targetPerReplica":5}}}})"),
       "spec.scaling.policy.queue.redis.url: "},
      {with(R"("scaling":{"policy":{"queue":{"jobs":{"label":"nolabel","targetPerReplica":5}}}})"),
       "spec.scaling.policy.queue.jobs.label: must be NAME=VALUE"},
      {with(
           R"("scaling":{"policy":{"connections":{"targetPerReplica":1},"behavior":{"scaleDown":{"policies":[{"type":"Pods","value":1},{"type":"Nodes","value":1}]}}}})"),
       "spec.scaling.policy.behavior.scaleDown.policies[1].type: must be one of Pods, Percent"},
      {with(
           R"("scaling":{"policy":{"connections":{"targetPerReplica":1},"activation":{"maxPendingRequests":0}}})"),
       "spec.scaling.policy.activation.maxPendingRequests: must be an integer between 1 and"},
      {with(R"("scaling":{"policy":{"connections":{"targetPerReplica":1},"tolerance":2}})"),
       "spec.scaling.policy.tolerance: must be a number between 0 and 1, got 2"},
  };
  for (const auto& c : cases) {
    auto got = json_error(c.body);
    if (!starts_with(got, c.error))
      CAF_FAIL("body " << c.body << "\n  expected: " << c.error << "\n  got:      " << got);
  }
}

CAF_TEST(lists and strings are bounded with errors naming them) {
  std::string env;
  for (int i = 0; i < 257; ++i)
    env +=
        std::string{i == 0 ? "" : ","} + R"({"name":"V)" + std::to_string(i) + R"(","value":"x"})";
  CAF_CHECK_EQUAL(json_error(with(R"("env":[)" + env + "]")),
                  "spec.env: must have at most 256 entries");
  std::string args;
  for (int i = 0; i < 257; ++i)
    args += std::string{i == 0 ? "" : ","} + "\"a\"";
  CAF_CHECK_EQUAL(json_error(with(R"("args":[)" + args + "]")),
                  "spec.args: must have at most 256 entries");
  std::string ports;
  for (int i = 0; i < 17; ++i)
    ports +=
        std::string{i == 0 ? "" : ","} + R"({"containerPort":)" + std::to_string(1000 + i) + "}";
  CAF_CHECK_EQUAL(json_error(with(R"("ports":[)" + ports + "]")),
                  "spec.ports: must have at most 16 entries");
  std::string labels;
  for (int i = 0; i < 65; ++i)
    labels += std::string{i == 0 ? "" : ","} + "\"l" + std::to_string(i) + "\":\"v\"";
  CAF_CHECK_EQUAL(json_error(R"({"metadata":{"name":"w","labels":{)" + labels +
                             R"(}},"spec":{"command":"x"}})"),
                  "metadata.labels: must have at most 64 entries");
  CAF_CHECK_EQUAL(
      json_error(with(R"("env":[{"name":"A","value":")" + std::string(40000, 'x') + "\"}]")),
      "spec.env[0].value: must be at most 32768 bytes");
  CAF_CHECK_EQUAL(json_error(R"({"metadata":{"name":")" + std::string(64, 'a') +
                             R"("},"spec":{"command":"x"}})")
                      .substr(0, 38),
                  "metadata.name: must be a DNS label: 1 ");
}

CAF_TEST(a YAML alias bomb is refused not expanded) {
  std::string yaml = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  std::string prev = "a";
  for (char c = 'b'; c <= 'h'; ++c) {
    yaml += std::string{c} + ": &" + c + " [";
    for (int i = 0; i < 10; ++i)
      yaml += std::string{i == 0 ? "" : ", "} + "*" + prev;
    yaml += "]\n";
    prev = std::string{c};
  }
  yaml += "metadata: {name: w, labels: {x: *h}}\n";
  CAF_CHECK_EQUAL(yaml_error(yaml), "body: has more than 20000 values");
}

CAF_TEST(YAML and JSON give the same spec and the same errors) {
  auto yaml = parse_app_spec_yaml(R"(
metadata: {name: web}
spec:
  command: "exec srv --port $PORT"
  args: [one, two]
  scaling: {minReplicas: 2, maxReplicas: 4}
  env:
    - {name: MODE, value: 1}
)");
  CAF_CHECK(yaml.command.shell);
  CAF_CHECK_EQUAL(yaml.scaling.replicas, 2);
  CAF_CHECK_EQUAL(yaml.env.at(0).value, "1");
  CAF_CHECK_EQUAL(yaml_error("metadata: {name: w}\nspec: {command: x, scaling: {maxReplicas: 0}}"),
                  "spec.scaling.maxReplicas: must be an integer between 1 and 1000, got 0");
  CAF_CHECK_EQUAL(json_error(with(R"("env":[{"name":"MODE","value":1}])")),
                  "spec.env[0].value: must be a string");
  auto by_type = parse_app_spec("metadata: {name: w}\nspec: {command: x}", "application/yaml; x=y");
  CAF_CHECK_EQUAL(by_type.name, "w");
  CAF_CHECK_EQUAL(parse_app_spec(minimal, "application/json").name, "web");
}

CAF_TEST(the stored form round - trips exactly and the API form hides secrets) {
  auto body =
      with(R"("args":["--port","$PORT"],"ports":[{"containerPort":8080},{"containerPort":9090}],
    "health":{"httpGet":{"path":"/healthz","port":9090},"timeoutSeconds":3},
    "resources":{"cpu":"250m","memory":"64Mi"},
    "scaling":{"minReplicas":0,"maxReplicas":9,"replicas":2,"policy":{"idleSeconds":60,
      "http":{"targetRPSPerReplica":12.5},"memory":{"targetUtilizationPct":70},
      "queue":{"redis":{"url":"redis://:hunter2@127.0.0.1:6379/1","key":"jobs","targetPerReplica":3}}}},
    "env":[{"name":"API_KEY","value":"s3cret"},{"name":"TROUPE_NODE","valueFrom":"sdk"}],
    "termination":{"drainSeconds":5},"restartPolicy":"OnFailure","workingDir":"/srv")");
  auto spec = parse_app_spec_json(body);
  auto stored = to_json(spec);
  auto again = parse_app_spec_json(stored);
  CAF_CHECK_EQUAL(to_json(again), stored);
  CAF_CHECK_EQUAL(again.scaling.policy.http->target_rps_per_replica, 12.5);
  CAF_CHECK_EQUAL(again.readiness->port, 9090);
  CAF_CHECK_EQUAL(again.env.at(0).value, "s3cret");
  // The minimal spec too, with its implicit port and manual policy.
  auto plain = to_json(parse_app_spec_json(minimal));
  CAF_CHECK_EQUAL(to_json(parse_app_spec_json(plain)), plain);
  auto api = to_api_json(spec);
  CAF_CHECK(api.find("s3cret") == std::string::npos);
  CAF_CHECK(api.find("hunter2") == std::string::npos);
  auto j = nlohmann::json::parse(api);
  CAF_CHECK_EQUAL(j["spec"]["env"][0]["value"], "<redacted>");
  CAF_CHECK_EQUAL(j["spec"]["env"][1]["valueFrom"], "sdk");
  CAF_CHECK_EQUAL(j["spec"]["scaling"]["policy"]["queue"]["redis"]["url"],
                  "redis://:<redacted>@127.0.0.1:6379/1");
}

CAF_TEST(ports expand in argv and args and reach the environment) {
  std::vector<uint16_t> ports{20001, 20002};
  CAF_CHECK_EQUAL(expand_port("--port=$PORT", ports), "--port=20001");
  CAF_CHECK_EQUAL(expand_port("${PORT}/${PORT_1}:$PORT_1", ports), "20001/20002:20002");
  CAF_CHECK_EQUAL(expand_port("$PORTS $PORT_2 ${PORT $HOME $", ports),
                  "$PORTS $PORT_2 ${PORT $HOME $");
  auto spec = parse_app_spec_json(
      with(R"("args":["--port","$PORT"],"env":[{"name":"GREETING","value":"hi"}])"));
  CAF_CHECK_EQUAL(app_argv(spec, ports), (std::vector<std::string>{"srv", "--port", "20001"}));
  auto shell = parse_app_spec_json(
      R"({"metadata":{"name":"web"},"spec":{"command":"exec srv $PORT","args":["a"]}})");
  CAF_CHECK_EQUAL(app_argv(shell, ports),
                  (std::vector<std::string>{"/bin/sh", "-c", "exec srv $PORT", "web", "a"}));
  auto env = app_instance_env(spec, {"web-1", "node-a", ports});
  CAF_CHECK_EQUAL(env["PORT"], "20001");
  CAF_CHECK_EQUAL(env["PORT_1"], "20002");
  CAF_CHECK_EQUAL(env["TROUPE_APP"], "web");
  CAF_CHECK_EQUAL(env["TROUPE_INSTANCE"], "web-1");
  CAF_CHECK_EQUAL(env["TROUPE_NODE"], "node-a");
  CAF_CHECK_EQUAL(env["GREETING"], "hi");
  CAF_CHECK_EQUAL(env.size(), 6u);
}

CAF_TEST(a probe port maps to its instance port index) {
  auto spec = parse_app_spec_json(with(
      R"("ports":[{"containerPort":8080},{"containerPort":9090}],"readiness":{"tcpSocket":{"port":9090}},"liveness":{"httpGet":{}})"));
  CAF_CHECK_EQUAL(app_port_index(spec, *spec.readiness), 1u);
  CAF_CHECK_EQUAL(app_port_index(spec, *spec.liveness), 0u);
}

CAF_TEST(the example spec parses) {
  std::ifstream in{example_path()};
  CAF_REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  auto spec = parse_app_spec_yaml(text.str());
  CAF_CHECK_EQUAL(spec.name, "hello");
  CAF_CHECK_EQUAL(spec.command.words, std::vector<std::string>{"troupe-test-backend"});
  CAF_CHECK_EQUAL(spec.scaling.replicas, 2);
  CAF_CHECK_EQUAL(spec.scaling.policy.mode, "auto");
  CAF_CHECK_EQUAL(spec.resources.memory_bytes, 256ull << 20);
  CAF_CHECK_EQUAL(spec.readiness->path, "/healthz");
  CAF_CHECK_EQUAL(app_argv(spec, {20000}),
                  (std::vector<std::string>{"troupe-test-backend", "--port", "20000"}));
}

CAF_TEST(expose names how the proxy reaches the app and is checked) {
  auto s = parse_app_spec_json(
      with(R"("expose":{"host":"API.example.com","pathPrefix":"/v1","stripPrefix":true})"));
  CAF_REQUIRE(s.expose);
  CAF_CHECK_EQUAL(s.expose->host, "api.example.com");
  CAF_CHECK_EQUAL(s.expose->path_prefix, "/v1");
  CAF_CHECK(s.expose->strip_prefix);
  CAF_CHECK_EQUAL(s.expose->port, 0);
  CAF_CHECK(!parse_app_spec_json(minimal).expose);
  auto own = parse_app_spec_json(with(R"("expose":{"port":9001,"host":"*.apps.local"})"));
  CAF_CHECK_EQUAL(own.expose->port, 9001);
  CAF_CHECK_EQUAL(own.expose->host, "*.apps.local");
  // The stored form keeps it.
  auto again = parse_app_spec_json(to_json(s));
  CAF_CHECK_EQUAL(again.expose->path_prefix, "/v1");
  CAF_CHECK(again.expose->strip_prefix);
  auto err = [](const std::string& expose) { return json_error(with(R"("expose":)" + expose)); };
  CAF_CHECK(starts_with(err(R"({"host":"bad host"})"), "spec.expose.host: "));
  CAF_CHECK(starts_with(err(R"({"host":"a..b"})"), "spec.expose.host: "));
  CAF_CHECK(starts_with(err(R"({"pathPrefix":"api"})"), "spec.expose.pathPrefix: "));
  CAF_CHECK(starts_with(err(R"({"pathPrefix":"/api/"})"), "spec.expose.pathPrefix: "));
  CAF_CHECK(starts_with(err(R"({"pathPrefix":"/a?b"})"), "spec.expose.pathPrefix: "));
  CAF_CHECK(starts_with(err(R"({"host":"a.b","stripPrefix":true})"), "spec.expose.stripPrefix: "));
  CAF_CHECK(starts_with(err(R"({"port":80})"), "spec.expose.port: "));
  CAF_CHECK(starts_with(err(R"({})"), "spec.expose: "));
  CAF_CHECK(starts_with(err(R"({"hostname":"a"})"), "spec.expose.hostname: "));
}
