#define CAF_SUITE job_spec
#include "support/dsl.hpp"

#include <string>
#include <vector>

#include "actors/jobs/job_spec.hpp"

using namespace troupe;

namespace {

using strings = std::vector<std::string>;

/// "field: reason" of the spec_error a body raises, or "ok".
template <class Parse> std::string error_of(Parse parse, const std::string& body) {
  try {
    parse(body);
    return "ok";
  } catch (const spec_error& e) {
    return e.what();
  }
}

std::string json_error(const std::string& body) {
  return error_of([](const std::string& b) { parse_job_spec_json(b); }, body);
}

std::string yaml_error(const std::string& body) {
  return error_of([](const std::string& b) { parse_job_spec_yaml(b); }, body);
}

std::string field_of(const std::string& body) {
  try {
    parse_job_spec_json(body);
    return "ok";
  } catch (const spec_error& e) {
    return e.field();
  }
}

std::string join(const strings& xs) {
  std::string out;
  for (const auto& x : xs)
    out += (out.empty() ? "" : "|") + x;
  return out;
}

/// One input written in both formats and the error both must raise.
struct error_case {
  std::string json;
  std::string yaml;
  std::string error;
};

const std::vector<error_case> error_cases = {
    // command
    {R"({})", "name: x", "command: is required"},
    {R"({"command": {"a": 1}})", "command: {a: 1}",
     "command: must be a string or an array of strings"},
    {R"({"command": null})", "command: null", "command: must be a string or an array of strings"},
    {R"({"command": ""})", "command: ''", "command: must not be empty"},
    {R"({"command": "  "})", "command: '  '", "command: must not be empty"},
    {R"({"command": []})", "command: []", "command: must not be empty"},
    {R"({"command": ["ls", "-l", {"a": 1}]})", "command: [ls, -l, {a: 1}]",
     "command[2]: must be a string"},
    {R"({"command": ["ls", ["x"]]})", "command: [ls, [x]]", "command[1]: must be a string"},
    {R"({"command": ["", "x"]})", "command: ['', x]", "command[0]: must not be empty"},
    // name
    {R"({"command": "ls", "name": ["x"]})", "command: ls\nname: [x]", "name: must be a string"},
    {R"({"command": "ls", "name": ")" + std::string(201, 'n') + R"("})",
     "command: ls\nname: " + std::string(201, 'n'), "name: must be at most 200 characters"},
    // env
    {R"({"command": "ls", "env": ["A"]})", "command: ls\nenv: [A]", "env: must be an object"},
    {R"({"command": "ls", "env": {"1A": "x"}})", "command: ls\nenv: {1A: x}",
     "env.1A: must be a variable name of letters, digits and _ (not starting with a digit)"},
    {R"({"command": "ls", "env": {"A-B": "x"}})", "command: ls\nenv: {A-B: x}",
     "env.A-B: must be a variable name of letters, digits and _ (not starting with a digit)"},
    {R"({"command": "ls", "env": {"": "x"}})", "command: ls\nenv: {'': x}",
     "env.: must be a variable name of letters, digits and _ (not starting with a digit)"},
    {R"({"command": "ls", "env": {"FOO": {"x": 1}}})", "command: ls\nenv: {FOO: {x: 1}}",
     "env.FOO: must be a string"},
    {R"({"command": "ls", "env": {"FOO": null}})", "command: ls\nenv: {FOO: ~}",
     "env.FOO: must be a string"},
    {R"({"command": "ls", "env": {"FOO": "a\u0000b"}})", "command: ls\nenv: {FOO: \"a\\0b\"}",
     "env.FOO: must not contain a NUL byte"},
    // cwd
    {R"({"command": "ls", "cwd": "/etc"})", "command: ls\ncwd: /etc",
     "cwd: must be a relative path inside the workspace"},
    {R"({"command": "ls", "cwd": ".."})", "command: ls\ncwd: ..",
     "cwd: must be a relative path inside the workspace"},
    {R"({"command": "ls", "cwd": "a/../b"})", "command: ls\ncwd: a/../b",
     "cwd: must be a relative path inside the workspace"},
    {R"({"command": "ls", "cwd": "a/b/.."})", "command: ls\ncwd: a/b/..",
     "cwd: must be a relative path inside the workspace"},
    {R"({"command": "ls", "cwd": ["a"]})", "command: ls\ncwd: [a]", "cwd: must be a string"},
    // timeout_seconds
    {R"({"command": "ls", "timeout_seconds": -1})", "command: ls\ntimeout_seconds: -1",
     "timeout_seconds: must be an integer between 0 and 2592000, got -1"},
    {R"({"command": "ls", "timeout_seconds": 2592001})", "command: ls\ntimeout_seconds: 2592001",
     "timeout_seconds: must be an integer between 0 and 2592000, got 2592001"},
    {R"({"command": "ls", "timeout_seconds": 1.5})", "command: ls\ntimeout_seconds: 1.5",
     "timeout_seconds: must be an integer between 0 and 2592000, got 1.5"},
    {R"({"command": "ls", "timeout_seconds": "10"})", "command: ls\ntimeout_seconds: '10'",
     "timeout_seconds: must be an integer between 0 and 2592000, got \"10\""},
    // priority
    {R"({"command": "ls", "priority": 101})", "command: ls\npriority: 101",
     "priority: must be an integer between 0 and 100, got 101"},
    {R"({"command": "ls", "priority": -1})", "command: ls\npriority: -1",
     "priority: must be an integer between 0 and 100, got -1"},
    {R"({"command": "ls", "priority": true})", "command: ls\npriority: true",
     "priority: must be an integer between 0 and 100, got true"},
    {R"({"command": "ls", "priority": null})", "command: ls\npriority: ~",
     "priority: must be an integer between 0 and 100, got null"},
    {R"({"command": "ls", "priority": [1]})", "command: ls\npriority: [1]",
     "priority: must be an integer between 0 and 100, got an array"},
    {R"({"command": "ls", "priority": 99999999999999999999})",
     "command: ls\npriority: 99999999999999999999",
     "priority: must be an integer between 0 and 100, got 99999999999999999999"},
    // retries
    {R"({"command": "ls", "retries": 101})", "command: ls\nretries: 101",
     "retries: must be an integer between 0 and 100, got 101"},
    {R"({"command": "ls", "retries": 2.0})", "command: ls\nretries: 2.0",
     "retries: must be an integer between 0 and 100, got 2.0"},
    // labels
    {R"({"command": "ls", "labels": "x"})", "command: ls\nlabels: x", "labels: must be an object"},
    {R"({"command": "ls", "labels": {"bad key": "v"}})", "command: ls\nlabels: {bad key: v}",
     "labels.bad key: must be a label name of 1 to 63 characters from A-Z a-z 0-9 _ . - /"},
    {R"({"command": "ls", "labels": {"": "v"}})", "command: ls\nlabels: {'': v}",
     "labels.: must be a label name of 1 to 63 characters from A-Z a-z 0-9 _ . - /"},
    {R"({"command": "ls", "labels": {")" + std::string(64, 'k') + R"(": "v"}})",
     "command: ls\nlabels: {" + std::string(64, 'k') + ": v}",
     "labels." + std::string(64, 'k') +
         ": must be a label name of 1 to 63 characters from A-Z a-z 0-9 _ . - /"},
    {R"({"command": "ls", "labels": {"team": ["a"]}})", "command: ls\nlabels: {team: [a]}",
     "labels.team: must be a string"},
    {R"({"command": "ls", "labels": {"team": ")" + std::string(257, 'v') + R"("}})",
     "command: ls\nlabels: {team: " + std::string(257, 'v') + "}",
     "labels.team: must be at most 256 characters"},
    // resources
    {R"({"command": "ls", "resources": 5})", "command: ls\nresources: 5",
     "resources: must be an object"},
    {R"({"command": "ls", "resources": {"memory_mb": -1}})",
     "command: ls\nresources: {memory_mb: -1}",
     "resources.memory_mb: must be an integer between 0 and 1099511627776, got -1"},
    {R"({"command": "ls", "resources": {"cpu_seconds": 1.5}})",
     "command: ls\nresources: {cpu_seconds: 1.5}",
     "resources.cpu_seconds: must be a non-negative integer, got 1.5"},
    {R"({"command": "ls", "resources": {"open_files": -5}})",
     "command: ls\nresources: {open_files: -5}",
     "resources.open_files: must be a non-negative integer, got -5"},
    {R"({"command": "ls", "resources": {"gpus": 1}})", "command: ls\nresources: {gpus: 1}",
     "resources.gpus: unknown field"},
    // the document itself
    {R"({"command": "ls", "colour": "red"})", "command: ls\ncolour: red", "colour: unknown field"},
    {R"({"command": "ls", "shell": true})", "command: ls\nshell: true", "shell: unknown field"},
    {R"({"command": "ls", "command": "pwd"})", "command: ls\ncommand: pwd",
     "command: duplicate key"},
    {R"({"command": "ls", "env": {"A": "1", "A": "2"}})", "command: ls\nenv: {A: '1', A: '2'}",
     "env.A: duplicate key"},
};

/// Every field set, in both formats.
const std::string full_json = R"({
  "name": "nightly build",
  "command": ["make", "-j4", "all"],
  "env": {"CC": "clang", "_DEBUG": "1"},
  "cwd": "./src//app/",
  "timeout_seconds": 3600,
  "priority": 80,
  "labels": {"team": "infra", "app.kubernetes.io/name": "web-1"},
  "retries": 3,
  "resources": {"cpu_seconds": 60, "memory_mb": 512, "open_files": 1024}
})";

const std::string full_yaml = R"(
name: nightly build
command: [make, -j4, all]
env:
  CC: clang
  _DEBUG: "1"
cwd: ./src//app/
timeout_seconds: 3600
priority: 80
labels:
  team: infra
  app.kubernetes.io/name: web-1
retries: 3
resources:
  cpu_seconds: 60
  memory_mb: 512
  open_files: 1024
)";

void check_full(const job_spec& s) {
  CAF_CHECK_EQUAL(s.name, "nightly build");
  CAF_CHECK_EQUAL(join(s.argv), "make|-j4|all");
  CAF_CHECK(!s.shell);
  CAF_CHECK_EQUAL(s.env.size(), 2u);
  CAF_CHECK_EQUAL(s.env.at("CC"), "clang");
  CAF_CHECK_EQUAL(s.env.at("_DEBUG"), "1");
  CAF_CHECK_EQUAL(s.cwd, "src/app");
  CAF_CHECK_EQUAL(s.timeout_seconds, 3600u);
  CAF_CHECK_EQUAL(s.priority, 80);
  CAF_CHECK_EQUAL(s.labels.size(), 2u);
  CAF_CHECK_EQUAL(s.labels.at("team"), "infra");
  CAF_CHECK_EQUAL(s.labels.at("app.kubernetes.io/name"), "web-1");
  CAF_CHECK_EQUAL(s.retries, 3);
  CAF_CHECK_EQUAL(s.resources.cpu_seconds, 60u);
  CAF_CHECK_EQUAL(s.resources.memory_mb, 512u);
  CAF_CHECK_EQUAL(s.resources.open_files, 1024u);
}

std::string cwd_of(const std::string& cwd) {
  return parse_job_spec_json(R"({"command": "ls", "cwd": ")" + cwd + R"("})").cwd;
}

} // namespace

CAF_TEST(a string command runs through the shell with defaults elsewhere) {
  auto s = parse_job_spec_json(R"({"command": "echo hi && ls"})");
  CAF_CHECK_EQUAL(join(s.argv), "/bin/sh|-c|echo hi && ls");
  CAF_CHECK(s.shell);
  CAF_CHECK_EQUAL(s.name, "");
  CAF_CHECK(s.env.empty());
  CAF_CHECK_EQUAL(s.cwd, "");
  CAF_CHECK_EQUAL(s.timeout_seconds, 0u);
  CAF_CHECK_EQUAL(s.priority, 50);
  CAF_CHECK(s.labels.empty());
  CAF_CHECK_EQUAL(s.retries, 0);
  CAF_CHECK_EQUAL(s.resources.cpu_seconds, 0u);
  CAF_CHECK_EQUAL(s.resources.memory_mb, 0u);
  CAF_CHECK_EQUAL(s.resources.open_files, 0u);
}

CAF_TEST(an array command is the argv as given) {
  auto s = parse_job_spec_json(R"({"command": ["printf", "%s\n", "", "a b"]})");
  CAF_CHECK_EQUAL(join(s.argv), "printf|%s\n||a b");
  CAF_CHECK(!s.shell);
}

CAF_TEST(every field is read from JSON) {
  check_full(parse_job_spec_json(full_json));
}

CAF_TEST(every field is read from YAML the same way) {
  check_full(parse_job_spec_yaml(full_yaml));
  CAF_CHECK_EQUAL(to_json(parse_job_spec_yaml(full_yaml)), to_json(parse_job_spec_json(full_json)));
}

CAF_TEST(boundary values are accepted) {
  auto s = parse_job_spec_json(R"({"command": "ls", "timeout_seconds": 2592000, "priority": 100,
    "retries": 100, "resources": {"memory_mb": 1099511627776, "cpu_seconds": 0}})");
  CAF_CHECK_EQUAL(s.timeout_seconds, 2592000u);
  CAF_CHECK_EQUAL(s.priority, 100);
  CAF_CHECK_EQUAL(s.retries, 100);
  CAF_CHECK_EQUAL(s.resources.memory_mb, 1099511627776u);
  CAF_CHECK_EQUAL(parse_job_spec_json(R"({"command": "ls", "priority": 0})").priority, 0);
  auto long_name = std::string(200, 'n');
  CAF_CHECK_EQUAL(parse_job_spec_json(R"({"command": "ls", "name": ")" + long_name + "\"}").name,
                  long_name);
  std::string accents; // 200 characters, 400 bytes
  for (int i = 0; i < 200; ++i)
    accents += "\xc3\xa9";
  CAF_CHECK_EQUAL(parse_job_spec_json(R"({"command": "ls", "name": ")" + accents + "\"}").name,
                  accents);
  auto label = std::string(63, 'k');
  auto value = std::string(256, 'v');
  auto l = parse_job_spec_json(R"({"command": "ls", "labels": {")" + label + R"(": ")" + value +
                               R"("}})");
  CAF_CHECK_EQUAL(l.labels.at(label), value);
}

CAF_TEST(cwd is normalised) {
  CAF_CHECK_EQUAL(cwd_of(""), "");
  CAF_CHECK_EQUAL(cwd_of("."), "");
  CAF_CHECK_EQUAL(cwd_of("./"), "");
  CAF_CHECK_EQUAL(cwd_of("a/./b//c/"), "a/b/c");
  CAF_CHECK_EQUAL(cwd_of(".//x"), "x");
  CAF_CHECK_EQUAL(cwd_of("a..b/..c/d.."), "a..b/..c/d..");
}

CAF_TEST(every error names its field in both formats) {
  for (const auto& c : error_cases) {
    CAF_MESSAGE("case: " << c.json);
    CAF_CHECK_EQUAL(json_error(c.json), c.error);
    CAF_CHECK_EQUAL(yaml_error(c.yaml), c.error);
  }
}

CAF_TEST(spec_error carries the dotted field) {
  CAF_CHECK_EQUAL(field_of(R"({"command": "ls", "resources": {"memory_mb": 1.5}})"),
                  "resources.memory_mb");
  CAF_CHECK_EQUAL(field_of(R"({"command": ["a", "b", 3]})"), "command[2]");
  CAF_CHECK_EQUAL(field_of(R"({"command": "ls", "env": {"FOO": 1}})"), "env.FOO");
  CAF_CHECK_EQUAL(field_of(R"({"command": "ls", "labels": {"team": 1}})"), "labels.team");
  CAF_CHECK_EQUAL(field_of(R"({"colour": 1})"), "colour");
  CAF_CHECK_EQUAL(field_of("nope"), "body");
}

CAF_TEST(JSON strings are never coerced) {
  CAF_CHECK_EQUAL(json_error(R"({"command": 5})"),
                  "command: must be a string or an array of strings");
  CAF_CHECK_EQUAL(json_error(R"({"command": ["ls", 1]})"), "command[1]: must be a string");
  CAF_CHECK_EQUAL(json_error(R"({"command": "ls", "name": 123})"), "name: must be a string");
  CAF_CHECK_EQUAL(json_error(R"({"command": "ls", "env": {"FOO": 1}})"),
                  "env.FOO: must be a string");
  CAF_CHECK_EQUAL(json_error(R"({"command": "ls", "env": {"FOO": true}})"),
                  "env.FOO: must be a string");
  CAF_CHECK_EQUAL(json_error(R"({"command": "ls", "labels": {"team": 7}})"),
                  "labels.team: must be a string");
  CAF_CHECK_EQUAL(json_error(R"({"command": "ls", "cwd": 1})"), "cwd: must be a string");
}

CAF_TEST(YAML scalars are text wherever a string is wanted) {
  auto s = parse_job_spec_yaml("command: 123\nname: 456\nenv: {A: 1, B: true, C: null-ish}\n"
                               "labels: {v: 2.5}\ncwd: 2024/logs");
  CAF_CHECK_EQUAL(join(s.argv), "/bin/sh|-c|123");
  CAF_CHECK_EQUAL(s.name, "456");
  CAF_CHECK_EQUAL(s.env.at("A"), "1");
  CAF_CHECK_EQUAL(s.env.at("B"), "true");
  CAF_CHECK_EQUAL(s.env.at("C"), "null-ish");
  CAF_CHECK_EQUAL(s.labels.at("v"), "2.5");
  CAF_CHECK_EQUAL(s.cwd, "2024/logs");
  CAF_CHECK_EQUAL(join(parse_job_spec_yaml("command: [echo, 1, yes]").argv), "echo|1|yes");
}

CAF_TEST(YAML integers must be plain scalars that parse fully) {
  CAF_CHECK_EQUAL(parse_job_spec_yaml("command: ls\npriority: +7").priority, 7);
  CAF_CHECK_EQUAL(parse_job_spec_yaml("command: ls\npriority: !!int 9").priority, 9);
  CAF_CHECK_EQUAL(yaml_error("command: ls\npriority: 0x10"),
                  "priority: must be an integer between 0 and 100, got 0x10");
  CAF_CHECK_EQUAL(yaml_error("command: ls\npriority: 7 days"),
                  "priority: must be an integer between 0 and 100, got 7 days");
  CAF_CHECK_EQUAL(yaml_error("command: ls\nretries: \"3\""),
                  "retries: must be an integer between 0 and 100, got \"3\"");
}

CAF_TEST(malformed documents are body errors with a position) {
  CAF_CHECK_EQUAL(json_error(R"({"command": x})").rfind("body: malformed JSON at byte 13: ", 0),
                  0u);
  CAF_CHECK_EQUAL(json_error("").rfind("body: malformed JSON at byte 1: ", 0), 0u);
  CAF_CHECK_EQUAL(json_error("{\"command\": \"ls\"} x").rfind("body: malformed JSON at byte ", 0),
                  0u);
  CAF_CHECK_EQUAL(yaml_error("command: ls\n  bad: indent\n")
                      .rfind("body: malformed YAML at line 2, column 6: ", 0),
                  0u);
  CAF_CHECK_EQUAL(yaml_error("command: [ls").rfind("body: malformed YAML at line 1", 0), 0u);
}

CAF_TEST(the top level must be an object) {
  CAF_CHECK_EQUAL(json_error("[1]"), "body: must be a JSON object");
  CAF_CHECK_EQUAL(json_error("\"ls\""), "body: must be a JSON object");
  CAF_CHECK_EQUAL(json_error("null"), "body: must be a JSON object");
  CAF_CHECK_EQUAL(yaml_error("- ls"), "body: must be a YAML mapping");
  CAF_CHECK_EQUAL(yaml_error("ls"), "body: must be a YAML mapping");
  CAF_CHECK_EQUAL(yaml_error(""), "body: must be a YAML mapping");
  CAF_CHECK_EQUAL(yaml_error("command: ls\n---\ncommand: pwd\n"),
                  "body: must hold a single YAML document");
}

// Found by fuzz_job_spec: yaml-cpp's LoadAll loops forever on a flow
// collection followed by a comma, allocating a document per turn.
CAF_TEST(a stray comma after a flow mapping is refused instead of looping) {
  CAF_CHECK_EQUAL(yaml_error("{command: ls},"), "body: must hold a single YAML document");
  CAF_CHECK_EQUAL(yaml_error("[ls],"), "body: must hold a single YAML document");
  CAF_CHECK_EQUAL(yaml_error(","), "body: must hold a single YAML document");
}

CAF_TEST(text must be valid unicode) {
  CAF_CHECK_EQUAL(yaml_error("command: ls\nname: a\xff"), "name: must be valid UTF-8");
  CAF_CHECK_EQUAL(json_error("{\"command\": \"ls\", \"name\": \"a\xff\"}")
                      .rfind("body: malformed JSON at byte ", 0),
                  0u);
}

CAF_TEST(YAML keys must be scalars) {
  CAF_CHECK_EQUAL(yaml_error("command: ls\nenv:\n  ? [a]\n  : b\n"), "env: keys must be strings");
  CAF_CHECK_EQUAL(yaml_error("? [a]\n: b\n"), "body: keys must be strings");
}

CAF_TEST(deep nesting and aliases stay cheap) {
  auto deep = std::string(100000, '[') + std::string(100000, ']');
  CAF_CHECK_EQUAL(json_error(R"({"command": ["ls", )" + deep + "]}"),
                  "command[1]: must be a string");
  // Ten levels of ten aliases each: 10^10 scalars if expanded.
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; ++c) {
    auto prev = std::string{"*"} + char(c - 1);
    bomb += std::string{c} + ": &" + c + " [" + prev;
    for (int i = 1; i < 10; ++i)
      bomb += ", " + prev;
    bomb += "]\n";
  }
  CAF_CHECK_EQUAL(yaml_error(bomb + "command: ls\n"), "a: unknown field");
}

CAF_TEST(default_command is used only when command is absent) {
  auto d = parse_job_spec_json("{}", std::string{"./run.sh"});
  CAF_CHECK_EQUAL(join(d.argv), "/bin/sh|-c|./run.sh");
  CAF_CHECK(d.shell);
  auto given = parse_job_spec_json(R"({"command": ["make"]})", std::string{"./run.sh"});
  CAF_CHECK_EQUAL(join(given.argv), "make");
  CAF_CHECK(!given.shell);
  auto y = parse_job_spec_yaml("name: seeded\npriority: 10", std::string{"./run.sh"});
  CAF_CHECK_EQUAL(join(y.argv), "/bin/sh|-c|./run.sh");
  CAF_CHECK_EQUAL(y.name, "seeded");
  CAF_CHECK_EQUAL(y.priority, 10);
  CAF_CHECK_EQUAL(json_error("{}"), "command: is required");
  CAF_CHECK_EQUAL(yaml_error("name: x"), "command: is required");
}

CAF_TEST(to_json output reads back as the same spec) {
  auto original = parse_job_spec_json(full_json);
  auto text = to_json(original);
  auto back = job_spec_from_json(text);
  check_full(back);
  CAF_CHECK_EQUAL(to_json(back), text);
  auto shell = parse_job_spec_json(R"({"command": "echo $HOME", "cwd": "x"})");
  auto shell_back = job_spec_from_json(to_json(shell));
  CAF_CHECK(shell_back.shell);
  CAF_CHECK_EQUAL(join(shell_back.argv), "/bin/sh|-c|echo $HOME");
  CAF_CHECK_EQUAL(shell_back.cwd, "x");
  CAF_CHECK_EQUAL(to_json(shell_back), to_json(shell));
}

CAF_TEST(to_json writes the argv and the shell flag) {
  auto text = to_json(parse_job_spec_json(R"({"command": "ls"})"));
  CAF_CHECK_EQUAL(text, R"({"command":["/bin/sh","-c","ls"],"cwd":"","env":{},"labels":{},)"
                        R"("name":"","priority":50,"resources":{"cpu_seconds":0,"memory_mb":0,)"
                        R"("open_files":0},"retries":0,"shell":true,"timeout_seconds":0})");
}

CAF_TEST(job_spec_from_json rejects corrupt records) {
  auto error = [](const std::string& text) {
    return error_of([](const std::string& t) { job_spec_from_json(t); }, text);
  };
  CAF_CHECK_EQUAL(error("{\"command\": [\"ls\"], \"shell\": 1}"), "shell: must be a boolean");
  CAF_CHECK_EQUAL(error("{\"shell\": false}"), "command: is required");
  CAF_CHECK_EQUAL(error("{").rfind("body: malformed JSON", 0), 0u);
  CAF_CHECK_EQUAL(error("[]"), "body: must be a JSON object");
}
