#define CAF_SUITE e2e_auth

#include "support/dsl.hpp"

#include "support/e2e.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <signal.h>

using namespace troupe::e2e;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()

namespace {

const std::string ci_token = "ci-e2e-0123456789abcdef";
const std::string ops_token = "ops-e2e-0123456789abcdef";
const std::string viewer_token = "viewer-e2e-0123456789abcdef";

std::string read_text(const std::string& path) {
  std::ifstream in{path};
  return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

/// The token of DATA_DIR/token, without its newline.
std::string token_of(const std::string& data_dir) {
  auto text = read_text(data_dir + "/token");
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  return text;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return 0;
  return st.st_mode & 07777;
}

/// The message of a JSON log line ("" if the line is not one).
std::string message_of(const std::string& line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("message") || !j["message"].is_string())
    return "";
  return j["message"].get<std::string>();
}

/// A line of the daemon's output whose message contains `text` (literally).
std::optional<std::string> wait_for_text(const e2e::daemon& node, const std::string& text,
                                         duration timeout = 20s, size_t from = 0) {
  return node.wait_for_line(
      [&](const std::string& line) { return contains(message_of(line), text); }, timeout, from);
}

/// Stops the daemon and checks that no line it wrote contains a secret.
void check_stopped_without(e2e::daemon& node, const std::vector<std::string>& secrets) {
  node.terminate();
  auto status = node.wait_exit(20s);
  CAF_REQUIRE(status.has_value());
  CAF_CHECK_EQUAL(status->to_string(), "exit code 0");
  for (auto& line : node.output())
    for (auto& secret : secrets)
      if (contains(line, secret))
        CAF_FAIL("a token appears in the daemon's output: " << line);
}

struct fixture {
  scratch_dir scratch{"troupe-e2e-auth"};
  std::string data_dir = scratch.path() + "/data";

  daemon_options on_data_dir(std::vector<std::string> args = {}) {
    daemon_options opts;
    opts.data_dir = data_dir;
    opts.args = std::move(args);
    opts.default_token = false; // the daemon's own token handling is under test
    return opts;
  }

  std::string write(const std::string& name, const std::string& text) {
    auto path = scratch.path() + "/" + name;
    std::ofstream{path} << text;
    ::chmod(path.c_str(), 0600);
    return path;
  }

  /// Exit code 2 with `message` on stderr, and nothing bound or created.
  void check_rejected(const run_result& res, const std::string& message) {
    CAF_CHECK_EQUAL(startup_refusal_problem(res, message, data_dir), "");
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(e2e_auth_tests, fixture)

CAF_TEST(the first start writes a 0600 admin token and logs only its path) {
  e2e::daemon node{on_data_dir()};
  auto path = data_dir + "/token";
  auto line = wait_for_text(node, "API token written to " + path +
                                      "; use it as Authorization: Bearer $(cat " + path + ")");
  CAF_REQUIRE(line.has_value());
  CAF_CHECK_EQUAL(mode_of(path), 0600u);
  auto token = token_of(data_dir);
  CAF_CHECK_GREATER_OR_EQUAL(token.size(), 32u);
  CAF_CHECK(!contains(node.output_text(), "API token read from"));
  check_stopped_without(node, {token});
}

CAF_TEST(a second start reuses the token) {
  std::string token;
  {
    e2e::daemon first{on_data_dir()};
    CAF_REQUIRE(wait_for_text(first, "API token written to").has_value());
    token = token_of(data_dir);
    check_stopped_without(first, {token});
  }
  e2e::daemon second{on_data_dir()};
  CAF_CHECK(wait_for_text(second, "API token read from " + data_dir + "/token").has_value());
  CAF_CHECK_EQUAL(token_of(data_dir), token);
  CAF_CHECK_EQUAL(mode_of(data_dir + "/token"), 0600u);
  CAF_CHECK(!contains(second.output_text(), "API token written to"));
  check_stopped_without(second, {token});
}

CAF_TEST(configured tokens need no generated token) {
  auto opts = on_data_dir();
  // The list as JSON, as the environment holds it.
  opts.env = {{"TROUPE_AUTH__TOKENS",
               R"([{"name": "ci", "token": ")" + ci_token + R"(", "roles": ["submit"]}])"}};
  e2e::daemon node{opts};
  CAF_CHECK(!std::filesystem::exists(data_dir + "/token"));
  check_stopped_without(node, {ci_token});
  CAF_CHECK(!contains(node.output_text(), "API token"));
}

CAF_TEST(auth mode none with a non loopback listen exits 2 naming auth mode) {
  auto res = run_troupe({"serve", "--listen", "0.0.0.0:0", "--data-dir", data_dir, "--log-format",
                         "json", "--set", "auth.mode=none"});
  check_rejected(res, "config error: auth.mode: none is accepted only while listen is a "
                      "loopback address (127.0.0.0/8, ::1, localhost), not 0.0.0.0:0");
}

CAF_TEST(auth mode none on loopback starts without a token file) {
  e2e::daemon node{on_data_dir({"--set", "auth.mode=none"})};
  CAF_CHECK(
      wait_for_text(node, "auth.mode is none: every client that reaches 127.0.0.1:").has_value());
  CAF_CHECK_EQUAL(get(node.port(), "/healthz").status, 200);
  CAF_CHECK(!std::filesystem::exists(data_dir + "/token"));
  check_stopped_without(node, {});
}

CAF_TEST(a bad tokens file stops the start with exit 2 naming the file and element) {
  auto file = write("tokens.yaml", "- {name: ci, token: " + ci_token +
                                       ", roles: [read]}\n"
                                       "- {name: ops, token: " +
                                       ops_token + ", roles: [root]}\n");
  auto res = run_troupe({"serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--log-format",
                         "json", "--set", "auth.tokens_file=" + file});
  check_rejected(res, "config error: auth.tokens_file: " + file +
                          ": tokens[1].roles: unknown role \"root\" (read, submit or admin)");
  CAF_CHECK(!contains(res.out + res.err, ci_token));
  CAF_CHECK(!contains(res.out + res.err, ops_token));
}

CAF_TEST(a short token in the environment is a config error that does not show it) {
  auto res = run_troupe(
      {"serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--log-format", "json"},
      {{"TROUPE_AUTH__TOKENS", R"([{"name": "ci", "token": "hunter2", "roles": ["read"]}])"}});
  check_rejected(res, "config error: auth.tokens[0]: token of \"ci\" must be at least 16 bytes "
                      "long");
  CAF_CHECK(!contains(res.out + res.err, "hunter2"));
}

CAF_TEST(serve help shows the auth keys and no secret) {
  auto res = run_troupe({"serve", "--help"},
                        {{"TROUPE_AUTH__TOKENS",
                          R"([{"name": "ci", "token": ")" + ci_token + R"(", "roles": ["read"]}])"},
                         {"TROUPE_LOGS__LOKI__PASSWORD", ops_token},
                         {"TROUPE_METRICS__PROXY__AUTH_HEADER_VALUE", "Bearer " + viewer_token}});
  CAF_REQUIRE(res.status.has_value());
  CAF_CHECK_EQUAL(res.status->to_string(), "exit code 0");
  for (auto key : {"auth.mode", "auth.tokens", "auth.tokens_file", "auth.public_metrics",
                   "auth.allow_insecure", "TROUPE_AUTH__TOKENS"})
    CAF_CHECK(contains(res.out, key));
  for (auto& secret : {ci_token, ops_token, viewer_token})
    CAF_CHECK(!contains(res.out + res.err, secret));
}

CAF_TEST(a hangup signal reloads the tokens file and a bad one keeps the tokens in force) {
  auto file = write("tokens.yaml", "- {name: ci, token: " + ci_token + ", roles: [submit]}\n");
  e2e::daemon node{on_data_dir({"--set", "auth.tokens_file=" + file})};
  CAF_CHECK(!std::filesystem::exists(data_dir + "/token"));
  write("tokens.yaml", "tokens:\n"
                       "  - {name: ci, token: " +
                           ci_token +
                           ", roles: [submit]}\n"
                           "  - {name: ops, token: " +
                           ops_token + ", roles: [admin]}\n");
  CAF_REQUIRE_EQUAL(::kill(node.pid(), SIGHUP), 0);
  CAF_CHECK(wait_for_text(node, "reloaded 2 tokens from " + file).has_value());
  auto seen = node.output().size();
  write("tokens.yaml", "- {name: viewer, token: " + viewer_token + ", roles: [watch]}\n");
  CAF_REQUIRE_EQUAL(::kill(node.pid(), SIGHUP), 0);
  auto error = wait_for_text(node,
                             "cannot reload tokens, the previous ones stay in force: " + file +
                                 ": tokens[0].roles: unknown role \"watch\"",
                             20s, seen);
  CAF_CHECK(error.has_value());
  CAF_CHECK(node.running());
  CAF_CHECK_EQUAL(get(node.port(), "/healthz").status, 200);
  check_stopped_without(node, {ci_token, ops_token, viewer_token});
}

CAF_TEST_FIXTURE_SCOPE_END()
