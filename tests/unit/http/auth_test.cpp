#define CAF_SUITE auth
#include "support/dsl.hpp"

#include "http/auth.hpp"
#include "runtime/auth_tokens.hpp"
#include "runtime/ground/config.hpp"
#include "runtime/ground/logging.hpp"
#include "support/temp_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

using namespace troupe;
using http::role;
using http::token_entry;
using http::token_table;

namespace fs = std::filesystem;

namespace {

const std::string ci_token = "ci-0123456789abcdef";
const std::string ops_token = "ops-0123456789abcdef";
const std::string viewer_token = "viewer-0123456789abcdef";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// The invalid_token_entry of building a table from `entries`; "" if none.
std::string table_error(const std::vector<token_entry>& entries) {
  try {
    token_table{entries};
    return "";
  } catch (const http::invalid_token_entry& e) {
    return e.what();
  }
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  CAF_REQUIRE_EQUAL(::stat(path.c_str(), &st), 0);
  return st.st_mode & 07777;
}

std::string read_text(const std::string& path) {
  std::ifstream in{path};
  return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

/// Captures what troupe logs while it lives (the auth logger's lines).
struct log_capture {
  log_capture() {
    logging::start_capture(1024, [] {}, {});
  }
  ~log_capture() { logging::stop_capture(); }

  std::vector<std::string> lines() {
    uint64_t dropped = 0;
    for (auto& l : logging::take_captured(dropped))
      if (l.logger == "auth")
        seen.push_back(l.level + " " + l.message);
    return seen;
  }
  std::string text() {
    std::string out;
    for (auto& l : lines())
      out += l + "\n";
    return out;
  }

  std::vector<std::string> seen;
};

struct fixture {
  test::temp_dir dir;

  std::string write(const std::string& name, const std::string& text, mode_t mode = 0600) {
    auto path = dir / name;
    std::ofstream{path} << text;
    ::chmod(path.c_str(), mode);
    return path;
  }

  /// An auth config reading a file `name` (written with `text`) and nothing else.
  auth_config with_file(const std::string& name, const std::string& text) {
    auth_config cfg;
    cfg.tokens_file = write(name, text);
    return cfg;
  }

  /// The config_error of reading a tokens file with `text`; "" if none.
  std::string file_error(const std::string& text) {
    auto path = write("tokens.yaml", text);
    try {
      auth::read_tokens_file(path);
      return "";
    } catch (const config_error& e) {
      return e.what();
    }
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(auth_tests, fixture)

CAF_TEST(roles are named and ordered admin over submit over read) {
  for (auto r : {role::none, role::read, role::submit, role::admin})
    CAF_CHECK(http::parse_role(http::to_string(r)) == r);
  CAF_CHECK_EQUAL(std::string{http::to_string(role::submit)}, "submit");
  CAF_CHECK(!http::parse_role("root"));
  CAF_CHECK(!http::parse_role("Admin"));
  CAF_CHECK(!http::parse_role(""));
  CAF_CHECK(http::allows(role::admin, role::submit));
  CAF_CHECK(http::allows(role::submit, role::read));
  CAF_CHECK(http::allows(role::read, role::read));
  CAF_CHECK(http::allows(role::read, role::none));
  CAF_CHECK(!http::allows(role::read, role::submit));
  CAF_CHECK(!http::allows(role::submit, role::admin));
  CAF_CHECK(!http::allows(role::none, role::read));
}

CAF_TEST(a table finds the identity of exactly its tokens) {
  token_table table{{{"ci", ci_token, role::submit}, {"ops", ops_token, role::admin}}};
  CAF_CHECK_EQUAL(table.size(), 2u);
  auto ci = table.find(ci_token);
  CAF_REQUIRE(ci.has_value());
  CAF_CHECK_EQUAL(ci->name, "ci");
  CAF_CHECK(ci->granted == role::submit);
  auto ops = table.find(ops_token);
  CAF_REQUIRE(ops.has_value());
  CAF_CHECK_EQUAL(ops->name, "ops");
  CAF_CHECK(ops->granted == role::admin);
  for (auto wrong : {std::string{}, viewer_token, ci_token + "x", ci_token.substr(1),
                     ci_token.substr(0, ci_token.size() - 1), std::string{"CI-0123456789ABCDEF"}})
    CAF_CHECK(!table.find(wrong).has_value());
  CAF_CHECK(!token_table{}.find(ci_token).has_value());
}

CAF_TEST(entries are checked and errors name index and name but never the token) {
  auto error = [](token_entry e) { return table_error({{"ok", ci_token, role::read}, e}); };
  CAF_CHECK_EQUAL(error({"", ops_token, role::read}), "tokens[1]: name must not be empty");
  CAF_CHECK_EQUAL(error({"a\nb", ops_token, role::read}),
                  "tokens[1]: name must not contain control characters");
  CAF_CHECK_EQUAL(error({"ops", "", role::read}), "tokens[1]: token of \"ops\" must not be empty");
  auto short_token = std::string(15, 'x');
  CAF_CHECK_EQUAL(error({"ops", short_token, role::read}),
                  "tokens[1]: token of \"ops\" must be at least 16 bytes long");
  CAF_CHECK_EQUAL(table_error({{"ops", std::string(16, 'x'), role::read}}), "");
  for (auto bad : {std::string{"0123456789 abcdef"}, std::string{"0123456789\tabcdef"},
                   std::string{"0123456789abcdef\xc3\xa9"}})
    CAF_CHECK_EQUAL(error({"ops", bad, role::read}),
                    "tokens[1]: token of \"ops\" must consist of visible ASCII characters (no "
                    "spaces or control characters)");
  CAF_CHECK_EQUAL(error({"ops", ops_token, role::none}),
                  "tokens[1]: \"ops\" must grant a role (read, submit or admin)");
  CAF_CHECK_EQUAL(error({"ok", ops_token, role::read}),
                  "tokens[1]: name \"ok\" is also used by tokens[0]");
  auto dup = error({"other", ci_token, role::read});
  CAF_CHECK_EQUAL(dup, "tokens[1]: token of \"other\" is also used by tokens[0] (\"ok\")");
  CAF_CHECK(!contains(dup, ci_token));
  // An entry's origin replaces its index.
  CAF_CHECK_EQUAL(table_error({{"ci", ci_token, role::read, "auth.tokens[0]"},
                               {"ci", ops_token, role::read, "tokens[3]"}}),
                  "tokens[3]: name \"ci\" is also used by auth.tokens[0]");
  try {
    token_table{{{"ci", "short", role::read, "auth.tokens[2]"}}};
    CAF_FAIL("a short token was accepted");
  } catch (const std::invalid_argument& e) {
    auto& entry = dynamic_cast<const http::invalid_token_entry&>(e);
    CAF_CHECK_EQUAL(entry.where(), "auth.tokens[2]");
    CAF_CHECK_EQUAL(entry.reason(), "token of \"ci\" must be at least 16 bytes long");
    CAF_CHECK(!contains(e.what(), "short"));
  }
}

CAF_TEST(bearer tokens are parsed from authorization values) {
  CAF_CHECK_EQUAL(http::bearer_token("Bearer abc.DEF-123_~+/="), "abc.DEF-123_~+/=");
  CAF_CHECK_EQUAL(http::bearer_token("bearer abc"), "abc");
  CAF_CHECK_EQUAL(http::bearer_token("BEARER abc"), "abc");
  CAF_CHECK_EQUAL(http::bearer_token("Bearer    abc"), "abc");
  CAF_CHECK_EQUAL(http::bearer_token("  Bearer abc  "), "abc");
  for (auto bad : {"", "Bearer", "Bearer ", "Bearer    ", "Bearerabc", "Bearer\tabc",
                   "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer a b", "Bearer a\tb", "Token abc",
                   "Bearer abc\x01", "Bearer abc\xc3\xa9"})
    CAF_CHECK_EQUAL(http::bearer_token(bad), "");
}

CAF_TEST(the authenticator swaps whole tables and readers keep theirs) {
  http::authenticator auth;
  CAF_REQUIRE(auth.current() != nullptr);
  CAF_CHECK_EQUAL(auth.current()->size(), 0u);
  auth.replace(std::make_shared<const token_table>(
      std::vector<token_entry>{{"ci", ci_token, role::submit}}));
  auto before = auth.current();
  CAF_CHECK(auth.current()->find(ci_token).has_value());
  auth.replace(std::make_shared<const token_table>(
      std::vector<token_entry>{{"ops", ops_token, role::admin}}));
  CAF_CHECK(!auth.current()->find(ci_token).has_value());
  CAF_CHECK(auth.current()->find(ops_token).has_value());
  // A request that took the old table finishes with it.
  CAF_CHECK(before->find(ci_token).has_value());
  auth.replace(nullptr);
  CAF_REQUIRE(auth.current() != nullptr);
  CAF_CHECK_EQUAL(auth.current()->size(), 0u);
}

CAF_TEST(configured tokens grant the strongest of their roles) {
  std::vector<auth_token> tokens{{"r", ci_token, {"read"}},
                                 {"s", ops_token, {"read", "submit"}},
                                 {"a", viewer_token, {"admin", "read"}}};
  auto entries = auth::to_entries(tokens, "auth.tokens");
  CAF_REQUIRE_EQUAL(entries.size(), 3u);
  CAF_CHECK(entries[0].granted == role::read);
  CAF_CHECK(entries[1].granted == role::submit);
  CAF_CHECK(entries[2].granted == role::admin);
  CAF_CHECK_EQUAL(entries[2].origin, "auth.tokens[2]");
  CAF_CHECK_EQUAL(entries[2].name, "a");
}

CAF_TEST(a tokens file is a list or a mapping with tokens in YAML or JSON) {
  auto yaml = auth::read_tokens_file(write("a.yaml", "- name: ci\n  token: " + ci_token +
                                                         "\n  roles: [submit]\n"
                                                         "- {name: ops, token: '" +
                                                         ops_token + "', roles: [admin]}\n"));
  CAF_REQUIRE_EQUAL(yaml.size(), 2u);
  CAF_CHECK_EQUAL(yaml[0].name, "ci");
  CAF_CHECK_EQUAL(yaml[0].token, ci_token);
  CAF_CHECK(yaml[0].granted == role::submit);
  CAF_CHECK_EQUAL(yaml[1].origin, "tokens[1]");
  auto mapping = auth::read_tokens_file(
      write("b.yaml", "tokens:\n  - name: viewer\n    token: " + viewer_token +
                          "\n    roles:\n"
                          "      - read\n"));
  CAF_REQUIRE_EQUAL(mapping.size(), 1u);
  CAF_CHECK(mapping[0].granted == role::read);
  auto json = auth::read_tokens_file(write("c.json", R"({"tokens": [{"name": "ci", "token": ")" +
                                                         ci_token + R"(", "roles": ["read"]}]})"));
  CAF_REQUIRE_EQUAL(json.size(), 1u);
  CAF_CHECK_EQUAL(json[0].token, ci_token);
  CAF_CHECK_EQUAL(auth::read_tokens_file(write("d.yaml", "")).size(), 0u);
  CAF_CHECK_EQUAL(auth::read_tokens_file(write("e.yaml", "tokens: []\n")).size(), 0u);
}

CAF_TEST(tokens file errors name the file and the element but never a token) {
  auto path = dir / "tokens.yaml";
  auto prefix = "config error: auth.tokens_file: " + path + ": ";
  auto entry = [](const std::string& roles) {
    return "- name: ci\n  token: " + ci_token + "\n  roles: " + roles + "\n";
  };
  CAF_CHECK_EQUAL(file_error(entry("[read]") + entry("[root]")),
                  prefix + "tokens[1].roles: unknown role \"root\" (read, submit or admin)");
  CAF_CHECK_EQUAL(file_error(entry("[]")),
                  prefix + "tokens[0].roles: must name at least one role (read, submit or admin)");
  CAF_CHECK_EQUAL(file_error(entry("read")),
                  prefix + "tokens[0].roles: expected a list of roles (read, submit or admin), "
                           "got a single value");
  CAF_CHECK_EQUAL(file_error("- name: ci\n  roles: [read]\n"),
                  prefix + "tokens[0].token: required");
  CAF_CHECK_EQUAL(file_error("- name: ci\n  tokn: " + ci_token + "\n  roles: [read]\n"),
                  prefix + "tokens[0]: unknown key \"tokn\" (name, token and roles)");
  CAF_CHECK_EQUAL(file_error("- {name: ci, token: " + ci_token + ", roles: [read], name: x}\n"),
                  prefix + "tokens[0].name: duplicate key");
  CAF_CHECK_EQUAL(file_error("name: ci\n"),
                  prefix + "tokens: unknown key \"name\" (expected a list of tokens, or tokens: "
                           "with the list)");
  CAF_CHECK_EQUAL(file_error("tokens: " + ci_token + "\n"),
                  prefix + "tokens: expected a list of {name, token, roles}, got a single value");
  CAF_CHECK_EQUAL(file_error("- " + ci_token + "\n"),
                  prefix + "tokens[0]: expected a mapping of name, token and roles, got a single "
                           "value");
  CAF_CHECK_EQUAL(
      file_error(entry("[read]") + "- name: ci\n  token: " + ops_token + "\n  roles: [read]\n"),
      prefix + "tokens[1]: name \"ci\" is also used by tokens[0]");
  CAF_CHECK_EQUAL(file_error("- name: ci\n  token: short\n  roles: [read]\n"),
                  prefix + "tokens[0]: token of \"ci\" must be at least 16 bytes long");
  // A token typed where a key or a role belongs is not echoed either.
  auto misplaced =
      file_error("- {name: ci, " + ci_token + ", roles: [read]}\n" + entry("[" + ops_token + "]"));
  CAF_CHECK_EQUAL(misplaced, prefix + "tokens[0]: unknown key (a value of 19 characters, not "
                                      "shown) (name, token and roles)");
  CAF_CHECK(!contains(file_error(entry("[" + ops_token + "]")), ops_token));
  // YAML errors quoting the text (a \u escape here) are cut before the quote.
  auto yaml = file_error("- name: ci\n  token: \"ab\\uZZZZ" + ci_token + "\"\n  roles: [read]\n");
  CAF_CHECK(contains(yaml, prefix + "tokens: not valid YAML or JSON at line 2"));
  CAF_CHECK(!contains(yaml, "ZZZZ"));
  auto missing = dir / "absent.yaml";
  try {
    auth::read_tokens_file(missing);
    CAF_FAIL("a missing tokens file was accepted");
  } catch (const config_error& e) {
    CAF_CHECK_EQUAL(std::string{e.what()},
                    "config error: auth.tokens_file: " + missing + ": file not found");
  }
  CAF_CHECK(!contains(file_error(entry("[read]") + entry("[read]")), ci_token));
}

CAF_TEST(api tokens join the config and the file and need a generated one only without both) {
  auth_config cfg;
  CAF_CHECK(auth::api_tokens{cfg}.needs_generated_token());
  cfg.tokens = {{"ci", ci_token, {"submit"}}};
  auth::api_tokens from_config{cfg};
  CAF_CHECK(!from_config.needs_generated_token());
  auto found = from_config.authenticator()->current()->find(ci_token);
  CAF_REQUIRE(found.has_value());
  CAF_CHECK(found->granted == role::submit);
  auto file_only = with_file("a.yaml", "- {name: ops, token: " + ops_token + ", roles: [admin]}\n");
  CAF_CHECK(!auth::api_tokens{file_only}.needs_generated_token());
  auto empty_file = with_file("b.yaml", "tokens: []\n");
  CAF_CHECK(auth::api_tokens{empty_file}.needs_generated_token());
  cfg.tokens_file = file_only.tokens_file;
  auth::api_tokens both{cfg};
  CAF_CHECK_EQUAL(both.authenticator()->current()->size(), 2u);
  auth_config none;
  none.mode = "none";
  none.tokens = cfg.tokens;
  auth::api_tokens open{none};
  CAF_CHECK(open.authenticator() == nullptr);
  CAF_CHECK(!open.needs_generated_token());
}

CAF_TEST(a file token that clashes with a configured one is a config error) {
  auth_config cfg;
  cfg.tokens = {{"ci", ci_token, {"read"}}};
  cfg.tokens_file = write("tokens.yaml", "- {name: ci, token: " + ops_token + ", roles: [read]}\n");
  std::string what;
  try {
    auth::api_tokens{cfg};
  } catch (const config_error& e) {
    what = e.what();
  }
  CAF_CHECK_EQUAL(what, "config error: auth.tokens_file: " + cfg.tokens_file +
                            ": tokens[0]: name \"ci\" is also used by auth.tokens[0]");
}

CAF_TEST(reload replaces the table and a bad file keeps the previous one) {
  log_capture logs;
  auth_config cfg;
  cfg.tokens = {{"ci", ci_token, {"submit"}}};
  cfg.tokens_file =
      write("tokens.yaml", "- {name: ops, token: " + ops_token + ", roles: [admin]}\n");
  auth::api_tokens tokens{cfg};
  auto auth = tokens.authenticator();
  auto first = auth->current();
  CAF_CHECK(first->find(ops_token).has_value());
  // A bad file: the table stays, the error names the file and the reason.
  write("tokens.yaml", "- {name: ops, token: " + ops_token + ", roles: [root]}\n");
  CAF_CHECK(!tokens.reload());
  CAF_CHECK(auth->current() == first);
  auto text = logs.text();
  CAF_CHECK(contains(
      text, "error cannot reload tokens, the previous ones stay in force: " + cfg.tokens_file +
                ": tokens[0].roles: unknown role \"root\" (read, submit or admin)"));
  // A missing file too.
  fs::remove(cfg.tokens_file);
  CAF_CHECK(!tokens.reload());
  CAF_CHECK(auth->current() == first);
  CAF_CHECK(contains(logs.text(), cfg.tokens_file + ": file not found"));
  // A good one replaces the file's tokens; the configured ones stay.
  write("tokens.yaml", "- {name: viewer, token: " + viewer_token +
                           ", roles: [read]}\n"
                           "- {name: ops2, token: " +
                           ops_token + "x, roles: [admin]}\n");
  CAF_CHECK(tokens.reload());
  auto now = auth->current();
  CAF_CHECK(now != first);
  CAF_CHECK(!now->find(ops_token).has_value());
  CAF_CHECK(now->find(viewer_token).has_value());
  CAF_CHECK(now->find(ci_token).has_value());
  CAF_CHECK_EQUAL(now->size(), 3u);
  CAF_CHECK(contains(logs.text(), "info reloaded 2 tokens from " + cfg.tokens_file));
  for (auto& token : {ci_token, ops_token, viewer_token})
    CAF_CHECK(!contains(logs.text(), token));
}

CAF_TEST(reload without a tokens file or in mode none changes nothing) {
  auth_config cfg;
  cfg.tokens = {{"ci", ci_token, {"submit"}}};
  auth::api_tokens tokens{cfg};
  auto before = tokens.authenticator()->current();
  CAF_CHECK(!tokens.reload());
  CAF_CHECK(tokens.authenticator()->current() == before);
  cfg.mode = "none";
  CAF_CHECK(!auth::api_tokens{cfg}.reload());
}

CAF_TEST(the generated token file is 0600 with at least 128 random bits) {
  log_capture logs;
  auto old_umask = ::umask(0); // even a permissive umask must not widen it
  auto entry = auth::data_dir_token(dir.path());
  ::umask(old_umask);
  auto path = auth::token_file_path(dir.path());
  CAF_CHECK_EQUAL(path, dir / "token");
  CAF_CHECK_EQUAL(mode_of(path), 0600u);
  CAF_CHECK_EQUAL(entry.name, "admin");
  CAF_CHECK(entry.granted == role::admin);
  CAF_CHECK_EQUAL(read_text(path), entry.token + "\n");
  CAF_CHECK_GREATER_OR_EQUAL(entry.token.size(), 32u); // 4 bits per hex digit
  CAF_CHECK(std::all_of(entry.token.begin(), entry.token.end(),
                        [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }));
  CAF_CHECK(!fs::exists(path + ".tmp"));
  test::temp_dir other;
  auto elsewhere = auth::data_dir_token(other.path());
  CAF_CHECK_NOT_EQUAL(elsewhere.token, entry.token);
  auto text = logs.text();
  CAF_CHECK(contains(text, "info API token written to " + path +
                               "; use it as Authorization: Bearer $(cat " + path + ")"));
  CAF_CHECK(!contains(text, entry.token));
  // It is a usable token.
  CAF_CHECK_EQUAL(table_error({entry}), "");
}

CAF_TEST(the generated token is reused and a readable file tightened) {
  log_capture logs;
  auto first = auth::data_dir_token(dir.path());
  auto path = auth::token_file_path(dir.path());
  auto again = auth::data_dir_token(dir.path());
  CAF_CHECK_EQUAL(again.token, first.token);
  CAF_CHECK(contains(logs.text(), "info API token read from " + path));
  ::chmod(path.c_str(), 0644);
  auto tightened = auth::data_dir_token(dir.path());
  CAF_CHECK_EQUAL(tightened.token, first.token);
  CAF_CHECK_EQUAL(mode_of(path), 0600u);
  CAF_CHECK(contains(logs.text(), "warn " + path +
                                      " could be read by group or others (mode 0644): "
                                      "tightened to 0600"));
  CAF_CHECK(!contains(logs.text(), first.token));
  // A token written by hand (no newline) is used as it is.
  write("token", ops_token, 0600);
  auto by_hand = auth::data_dir_token(dir.path());
  CAF_CHECK_EQUAL(by_hand.token, ops_token);
}

CAF_TEST(an unusable token file stops the start with its path) {
  auto path = auth::token_file_path(dir.path());
  auto error = [&] {
    try {
      auth::data_dir_token(dir.path());
      return std::string{};
    } catch (const std::runtime_error& e) {
      return std::string{e.what()};
    }
  };
  write("token", "\n");
  CAF_CHECK_EQUAL(error(), path + " is empty: remove it to have a new token generated");
  write("token", std::string(5000, 'a'));
  CAF_CHECK_EQUAL(error(), path + ": larger than 4096 bytes");
  fs::remove(path);
  fs::create_symlink(dir / "elsewhere", path);
  CAF_CHECK(contains(error(), "cannot open " + path));
  fs::remove(path);
  fs::create_directory(path);
  CAF_CHECK(contains(error(), path));
  fs::remove(path);
  // A short token in the file is refused by the table, naming the file.
  write("token", "short\n");
  auth::api_tokens tokens{auth_config{}};
  try {
    tokens.use_data_dir_token(dir.path());
    CAF_FAIL("a short DATA_DIR/token was accepted");
  } catch (const std::runtime_error& e) {
    CAF_CHECK_EQUAL(std::string{e.what()},
                    path + ": token of \"admin\" must be at least 16 bytes long");
  }
}

CAF_TEST(the data dir token joins the table and survives reloads) {
  auth_config cfg;
  cfg.tokens_file = write("tokens.yaml", "tokens: []\n");
  auth::api_tokens tokens{cfg};
  CAF_REQUIRE(tokens.needs_generated_token());
  tokens.use_data_dir_token(dir.path());
  auto admin = read_text(auth::token_file_path(dir.path()));
  admin.pop_back(); // the newline
  auto found = tokens.authenticator()->current()->find(admin);
  CAF_REQUIRE(found.has_value());
  CAF_CHECK_EQUAL(found->name, "admin");
  CAF_CHECK(found->granted == role::admin);
  write("tokens.yaml", "- {name: ci, token: " + ci_token + ", roles: [submit]}\n");
  CAF_CHECK(tokens.reload());
  CAF_CHECK(tokens.authenticator()->current()->find(admin).has_value());
  CAF_CHECK(tokens.authenticator()->current()->find(ci_token).has_value());
}

CAF_TEST_FIXTURE_SCOPE_END()
