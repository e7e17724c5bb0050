#define CAF_SUITE config
#include "actors/metrics/metrics_model.hpp"
#include "runtime/config_checks.hpp"
#include "runtime/ground/config.hpp"
#include "support/dsl.hpp"

#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

using troupe::config;
using troupe::config_error;
using troupe::config_sources;
using troupe::load_node_config;

namespace fs = std::filesystem;

namespace {

/// Every key of the schema, as a user writes it.
const std::vector<std::string> all_keys = {
    "node_name",
    "listen",
    "data_dir",
    "log.level",
    "log.format",
    "auth.mode",
    "auth.tokens",
    "auth.tokens_file",
    "auth.public_metrics",
    "auth.allow_insecure",
    "http.io_threads",
    "http.max_json_bytes",
    "http.request_timeout",
    "http.sse_ping_interval",
    "http.header_timeout",
    "http.max_request_duration",
    "http.sse_queue_limit",
    "http.sse_queue_bytes",
    "http.shutdown_grace",
    "http.read_workers",
    "http.read_queue",
    "http.max_connections",
    "http.reserved_fds",
    "http.allowed_origins",
    "http.allowed_hosts",
    "http.rate_limit.requests_per_second",
    "http.rate_limit.burst",
    "http.tls.cert_file",
    "http.tls.key_file",
    "store.map_size_bytes",
    "supervisor.max_restarts",
    "supervisor.restart_window",
    "supervisor.backoff_initial",
    "supervisor.backoff_max",
    "jobs.concurrency",
    "jobs.user",
    "jobs.group",
    "jobs.inherit_env",
    "jobs.max_concurrent_extractions",
    "jobs.max_archive_memory_bytes",
    "proxy.mode",
    "proxy.listen",
    "proxy.io_threads",
    "proxy.upstream_timeout",
    "proxy.connect_timeout",
    "proxy.max_fails",
    "proxy.eject_seconds",
    "proxy.max_connections",
    "proxy.client_idle_timeout",
    "proxy.header_timeout",
    "proxy.max_header_bytes",
    "proxy.upstream_keepalive",
    "proxy.upstream_idle_timeout",
    "proxy.via",
    "proxy.nginx.conf_dir",
    "proxy.nginx.template",
    "proxy.nginx.main_conf",
    "proxy.nginx.binary",
    "proxy.nginx.reload_command",
    "proxy.nginx.min_reload_interval",
    "proxy.nginx.status_listen",
    "metrics.mode",
    "metrics.relative_accuracy",
    "metrics.sample_interval",
    "metrics.max_series",
    "metrics.export_interval",
    "metrics.export_on_start",
    "metrics.run_once",
    "metrics.mapping",
    "metrics.prometheus.scrape_ttl",
    "metrics.pushgateway.url",
    "metrics.pushgateway.job",
    "metrics.pushgateway.grouping",
    "metrics.pushgateway.timeout",
    "metrics.redis.url",
    "metrics.redis.prefix",
    "metrics.redis.tenant",
    "metrics.redis.project",
    "metrics.redis.stats_max_age",
    "metrics.redis.ttl",
    "metrics.redis.timeout",
    "metrics.proxy.urls",
    "metrics.proxy.auth_header_name",
    "metrics.proxy.auth_header_value",
    "metrics.proxy.timeout",
    "apps.port_range",
    "apps.restart_backoff_initial",
    "apps.restart_backoff_max",
    "apps.restart_backoff_reset",
    "apps.max_apps",
    "apps.max_instances",
    "apps.max_concurrent_probes",
    "apps.max_probe_response_bytes",
    "apps.limits",
    "apps.sample_interval",
    "debug.fault_injection",
};

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

int cores() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// The first `prefix.size()` characters of `text`, for readable prefix checks.
std::string head(const std::string& text, const std::string& prefix) {
  return text.substr(0, prefix.size());
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// A private temp directory; every source of a test points into it.
struct fixture {
  std::string dir;

  fixture() {
    char tmpl[] = "/tmp/troupe-config-test-XXXXXX";
    if (mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
  }

  ~fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  /// Writes `text` to `name` in the temp dir and returns its path.
  std::string write(const std::string& name, const std::string& text) {
    auto path = dir + "/" + name;
    std::ofstream{path} << text;
    return path;
  }

  /// Sources that read nothing from the machine: no file, no environment, no .env.
  config_sources sources() const {
    config_sources src;
    src.dotenv = dir + "/absent.env";
    return src;
  }

  config_sources with_file(const std::string& yaml) {
    auto src = sources();
    src.file = write("troupe.yaml", yaml);
    return src;
  }

  config_sources with_env(std::vector<std::string> env) {
    auto src = sources();
    src.environment = std::move(env);
    return src;
  }

  config_sources with_flag(const std::string& key, const std::string& value) {
    auto src = sources();
    src.flags[key] = value;
    return src;
  }

  /// The message load_config throws, or "" if it succeeds.
  static std::string error_of(const config_sources& src) {
    try {
      load_node_config(src);
      return "";
    } catch (const config_error& e) {
      return e.what();
    }
  }

  std::string flag_error(const std::string& key, const std::string& value) {
    return error_of(with_flag(key, value));
  }

  std::string file_error(const std::string& yaml) { return error_of(with_file(yaml)); }

  std::string env_error(const std::string& entry) { return error_of(with_env({entry})); }

  config flag(const std::string& key, const std::string& value) {
    return load_node_config(with_flag(key, value));
  }

  /// The YAML fails on `path` with a reason starting with `reason`.
  void check_yaml_error(const std::string& yaml, const std::string& path,
                        const std::string& reason) {
    auto err = file_error(yaml);
    auto want = "config error: " + path + ": " + reason;
    if (!contains(err, want))
      CAF_FAIL("expected '" << want << "' in '" << err << "'");
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(config_tests, fixture)

CAF_TEST(builtin defaults apply without any source) {
  auto c = load_node_config(sources());
  CAF_CHECK_EQUAL(c.node_name, host_name());
  CAF_CHECK_EQUAL(c.listen, "127.0.0.1:8000");
  CAF_CHECK_EQUAL(c.listen_host(), "127.0.0.1");
  CAF_CHECK_EQUAL(c.listen_port(), 8000);
  CAF_CHECK_EQUAL(c.data_dir, "./data");
  CAF_CHECK_EQUAL(c.log.level, "info");
  CAF_CHECK_EQUAL(c.log.format, "text");
  CAF_CHECK_EQUAL(c.http.io_threads, 1);
  CAF_CHECK_EQUAL(c.http.max_json_bytes, 1ull << 20);
  CAF_CHECK_EQUAL(c.http.request_timeout.count(), 30'000);
  CAF_CHECK_EQUAL(c.http.sse_ping_interval.count(), 15'000);
  CAF_CHECK_EQUAL(c.http.sse_queue_limit, 4096);
  CAF_CHECK_EQUAL(c.http.shutdown_grace.count(), 10'000);
  CAF_CHECK_EQUAL(c.http.read_workers, 2);
  CAF_CHECK_EQUAL(c.http.read_queue, 64);
  CAF_CHECK_EQUAL(c.store.map_size_bytes, 4ull << 30);
  CAF_CHECK_EQUAL(c.supervisor.max_restarts, 5);
  CAF_CHECK_EQUAL(c.supervisor.restart_window.count(), 60'000);
  CAF_CHECK_EQUAL(c.supervisor.backoff_initial.count(), 100);
  CAF_CHECK_EQUAL(c.supervisor.backoff_max.count(), 5'000);
  CAF_CHECK_EQUAL(c.jobs.concurrency, cores());
  CAF_CHECK_EQUAL(c.jobs.max_concurrent_extractions, cores());
  CAF_CHECK_EQUAL(c.jobs.max_archive_memory_bytes, 256ull << 20);
  CAF_CHECK_EQUAL(c.debug.fault_injection, false);
}

CAF_TEST(an empty dotenv path reads no dotenv file) {
  auto src = sources();
  src.dotenv.clear();
  CAF_CHECK_EQUAL(error_of(src), "");
}

CAF_TEST(file is overridden by environment which is overridden by flags) {
  auto src = with_file("listen: 127.0.0.1:1111\n"
                       "data_dir: /from/file\n"
                       "log:\n  level: debug\n"
                       "http:\n  io_threads: 2\n"
                       "jobs:\n  concurrency: 3\n");
  src.environment = {"TROUPE_DATA_DIR=/from/env", "TROUPE_LOG__LEVEL=warn",
                     "TROUPE_JOBS__CONCURRENCY=5"};
  src.flags = {{"jobs.concurrency", "7"}};
  auto c = load_node_config(src);
  CAF_CHECK_EQUAL(c.listen, "127.0.0.1:1111");
  CAF_CHECK_EQUAL(c.http.io_threads, 2);
  CAF_CHECK_EQUAL(c.data_dir, "/from/env");
  CAF_CHECK_EQUAL(c.log.level, "warn");
  CAF_CHECK_EQUAL(c.jobs.concurrency, 7);
  CAF_CHECK_EQUAL(c.log.format, "text");
}

CAF_TEST(ranges are checked after merging so a later layer can fix a value) {
  auto src = with_file("jobs:\n  concurrency: 0\n");
  src.flags = {{"jobs.concurrency", "2"}};
  CAF_CHECK_EQUAL(load_node_config(src).jobs.concurrency, 2);
  src.flags = {{"supervisor.backoff_initial", "10ms"}};
  src.environment = {"TROUPE_SUPERVISOR__BACKOFF_MAX=20ms", "TROUPE_JOBS__CONCURRENCY=4"};
  auto c = load_node_config(src);
  CAF_CHECK_EQUAL(c.supervisor.backoff_max.count(), 20);
  CAF_CHECK_EQUAL(c.supervisor.backoff_initial.count(), 10);
}

CAF_TEST(TROUPE_CONFIG names the file unless a file is given) {
  auto good = write("good.yaml", "data_dir: /from/troupe_config\n");
  auto src = with_env({"TROUPE_CONFIG=" + good});
  CAF_CHECK_EQUAL(load_node_config(src).data_dir, "/from/troupe_config");
  src.environment = {"TROUPE_CONFIG=" + dir + "/missing.yaml"};
  src.file = write("explicit.yaml", "data_dir: /from/explicit\n");
  CAF_CHECK_EQUAL(load_node_config(src).data_dir, "/from/explicit");
  src.file.clear();
  CAF_CHECK_EQUAL(error_of(src), "config error: " + dir + "/missing.yaml: file not found");
  src.environment = {"TROUPE_CONFIG="};
  CAF_CHECK_EQUAL(load_node_config(src).data_dir, "./data");
}

CAF_TEST(dotenv fills in what the environment does not set) {
  auto src = sources();
  src.dotenv = write(".env", "# settings for local runs\n"
                             "export TROUPE_DATA_DIR=\"/from dotenv\"\n"
                             "TROUPE_LOG__FORMAT='json'\n"
                             "TROUPE_HTTP__IO_THREADS=3   # a comment\n"
                             "\n"
                             "  TROUPE_LOG__LEVEL = debug\n"
                             "TROUPE_NODE_NAME=\"quoted \\\"name\\\" # not a comment\"\n"
                             "OTHER_TOOL_SETTING=ignored by troupe\r\n"
                             "TROUPE_JOB_ID=never read as config\n");
  src.environment = {"TROUPE_LOG__LEVEL=error", "PATH=/usr/bin"};
  auto c = load_node_config(src);
  CAF_CHECK_EQUAL(c.data_dir, "/from dotenv");
  CAF_CHECK_EQUAL(c.log.format, "json");
  CAF_CHECK_EQUAL(c.http.io_threads, 3);
  CAF_CHECK_EQUAL(c.log.level, "error");
  CAF_CHECK_EQUAL(c.node_name, "quoted \"name\" # not a comment");
}

CAF_TEST(dotenv can name the config file and its errors name the dotenv file) {
  auto src = sources();
  auto yaml = write("from-dotenv.yaml", "data_dir: /via/dotenv\n");
  src.dotenv = write(".env", "TROUPE_CONFIG=" + yaml + "\n");
  CAF_CHECK_EQUAL(load_node_config(src).data_dir, "/via/dotenv");
  src.dotenv = write(".env", "TROUPE_HTTP__IO_THREADS=x\n");
  CAF_CHECK_EQUAL(error_of(src), "config error: http.io_threads: expected an integer, got \"x\" "
                                 "(from TROUPE_HTTP__IO_THREADS in " +
                                     src.dotenv + ")");
}

CAF_TEST(a malformed dotenv line names the file and the line) {
  auto src = sources();
  src.dotenv = write(".env", "# fine\nTROUPE_DATA_DIR=/x\nthis is not an assignment\n");
  CAF_CHECK_EQUAL(error_of(src), "config error: " + src.dotenv + ": line 3: expected KEY=VALUE");
  src.dotenv = write(".env", "\nTROUPE_DATA_DIR=\"/unterminated\n");
  CAF_CHECK_EQUAL(error_of(src),
                  "config error: " + src.dotenv + ": line 2: unterminated double-quoted value");
  src.dotenv = write(".env", "1BAD=x\n");
  CAF_CHECK_EQUAL(error_of(src),
                  "config error: " + src.dotenv + ": line 1: invalid variable name \"1BAD\"");
  src.dotenv = write(".env", "TROUPE_DATA_DIR='/x' trailing\n");
  CAF_CHECK_EQUAL(head(error_of(src), "config error: " + src.dotenv + ": line 1: unexpected"),
                  "config error: " + src.dotenv + ": line 1: unexpected");
}

CAF_TEST(double underscores nest and single ones stay inside a key) {
  auto c = load_node_config(with_env({
      "TROUPE_HTTP__IO_THREADS=4",
      "TROUPE_HTTP__MAX_JSON_BYTES=1MB",
      "TROUPE_SUPERVISOR__BACKOFF_MAX=10s",
      "TROUPE_DEBUG__FAULT_INJECTION=yes",
      "TROUPE_STORE__MAP_SIZE_BYTES=1GiB",
      "TROUPE_NODE_NAME=node=1",
      "TROUPE_LISTEN=[::1]:9000",
  }));
  CAF_CHECK_EQUAL(c.http.io_threads, 4);
  CAF_CHECK_EQUAL(c.http.max_json_bytes, 1'000'000u);
  CAF_CHECK_EQUAL(c.supervisor.backoff_max.count(), 10'000);
  CAF_CHECK_EQUAL(c.debug.fault_injection, true);
  CAF_CHECK_EQUAL(c.store.map_size_bytes, 1ull << 30);
  CAF_CHECK_EQUAL(c.node_name, "node=1");
  CAF_CHECK_EQUAL(c.listen_host(), "::1");
  CAF_CHECK_EQUAL(c.listen_port(), 9000);
  CAF_CHECK_EQUAL(env_error("TROUPE_HTTP_IO_THREADS=4"),
                  "config error: http_io_threads: unknown key (from TROUPE_HTTP_IO_THREADS)");
}

CAF_TEST(names set by troupe for jobs or by Kubernetes are ignored) {
  auto c = load_node_config(with_env({
      "TROUPE_JOB_ID=42",
      "TROUPE_REQUEST_ID=abc",
      "TROUPE_SERVICE_HOST=10.0.0.1",
      "TROUPE_SERVICE_PORT=8000",
      "TROUPE_SERVICE_PORT_HTTP=8000",
      "TROUPE_PORT=tcp://10.0.0.1:8000",
      "TROUPE_PORT_8000_TCP_ADDR=10.0.0.1",
      "TROUPE_CONFIG=",
      "TROUPE_WITHOUT_VALUE",
      "troupe_data_dir=/lowercase/is/not/ours",
      "HOME=/root",
  }));
  CAF_CHECK_EQUAL(c.data_dir, "./data");
  CAF_CHECK_EQUAL(c.listen, "127.0.0.1:8000");
}

CAF_TEST(unknown keys are rejected in file environment and flags) {
  CAF_CHECK_EQUAL(file_error("colour: blue\n"), "config error: colour: unknown key");
  CAF_CHECK_EQUAL(file_error("http:\n  io_thread: 2\n"),
                  "config error: http.io_thread: unknown key");
  CAF_CHECK_EQUAL(file_error("metrics:\n  port: 9\n"), "config error: metrics.port: unknown key");
  CAF_CHECK_EQUAL(file_error("cluster:\n  port: 9\n"), "config error: cluster: unknown key");
  CAF_CHECK_EQUAL(env_error("TROUPE_HTTP__IO_THREAD=2"),
                  "config error: http.io_thread: unknown key (from TROUPE_HTTP__IO_THREAD)");
  CAF_CHECK_EQUAL(env_error("TROUPE_VERBOSE=1"),
                  "config error: verbose: unknown key (from TROUPE_VERBOSE)");
  CAF_CHECK_EQUAL(flag_error("http.io_thread", "2"), "config error: http.io_thread: unknown key");
  CAF_CHECK_EQUAL(flag_error("log", "debug"),
                  "config error: log: is a section, not a key (its keys: log.level, log.format)");
  CAF_CHECK_EQUAL(env_error("TROUPE_LOG=debug"),
                  "config error: log: is a section, not a key (its keys: log.level, log.format) "
                  "(from TROUPE_LOG)");
}

CAF_TEST(wrong types name the key and the expected form) {
  auto expect_int = [&](const std::string& raw) {
    return "config error: http.io_threads: expected an integer, got \"" + raw + "\"";
  };
  for (auto raw : {"abc", "2x", "1.5", "", "0x10", "+"})
    CAF_CHECK_EQUAL(flag_error("http.io_threads", raw), expect_int(raw));
  CAF_CHECK_EQUAL(flag_error("jobs.concurrency", "99999999999"),
                  "config error: jobs.concurrency: out of range, got \"99999999999\"");
  CAF_CHECK_EQUAL(flag_error("debug.fault_injection", "maybe"),
                  "config error: debug.fault_injection: expected true or false (or yes/no, "
                  "on/off, 1/0), got \"maybe\"");
  for (auto raw : {"lots", "12XB", "-1", "1.5GiB", "64M", "MiB"})
    CAF_CHECK_EQUAL(flag_error("http.max_json_bytes", raw),
                    std::string{"config error: http.max_json_bytes: expected a size like 64MiB, "
                                "10MB or 1048576, got \""} +
                        raw + "\"");
  CAF_CHECK_EQUAL(flag_error("store.map_size_bytes", "99999999999GiB"),
                  "config error: store.map_size_bytes: too large, got \"99999999999GiB\"");
  for (auto raw : {"soon", "1.5s", "5 parsecs", "15w", "ms", "-"})
    CAF_CHECK_EQUAL(flag_error("http.request_timeout", raw),
                    std::string{"config error: http.request_timeout: expected a duration like "
                                "15s or 100ms, got \""} +
                        raw + "\"");
  CAF_CHECK_EQUAL(flag_error("log.format", "xml"),
                  "config error: log.format: expected one of json|text, got \"xml\"");
  CAF_CHECK_EQUAL(flag_error("log.level", "verbose"),
                  "config error: log.level: expected one of "
                  "trace|debug|info|warn|error|critical|off, got \"verbose\"");
  CAF_CHECK_EQUAL(file_error("http:\n  io_threads: many\n"),
                  "config error: http.io_threads: expected an integer, got \"many\"");
  CAF_CHECK_EQUAL(env_error("TROUPE_HTTP__SHUTDOWN_GRACE=later"),
                  "config error: http.shutdown_grace: expected a duration like 15s or 100ms, "
                  "got \"later\" (from TROUPE_HTTP__SHUTDOWN_GRACE)");
}

CAF_TEST(out of range values name the key and the bound) {
  CAF_CHECK_EQUAL(flag_error("jobs.concurrency", "0"),
                  "config error: jobs.concurrency: must be >= 1, got 0");
  CAF_CHECK_EQUAL(flag_error("jobs.concurrency", "-3"),
                  "config error: jobs.concurrency: must be >= 1, got -3");
  CAF_CHECK_EQUAL(file_error("jobs:\n  concurrency: 0\n"),
                  "config error: jobs.concurrency: must be >= 1, got 0");
  CAF_CHECK_EQUAL(flag_error("http.io_threads", "0"),
                  "config error: http.io_threads: must be between 1 and 64, got 0");
  CAF_CHECK_EQUAL(flag_error("http.io_threads", "65"),
                  "config error: http.io_threads: must be between 1 and 64, got 65");
  CAF_CHECK_EQUAL(flag("http.io_threads", "64").http.io_threads, 64);
  CAF_CHECK_EQUAL(flag_error("http.sse_queue_limit", "0"),
                  "config error: http.sse_queue_limit: must be >= 1, got 0");
  CAF_CHECK_EQUAL(flag_error("supervisor.max_restarts", "-1"),
                  "config error: supervisor.max_restarts: must be >= 0, got -1");
  CAF_CHECK_EQUAL(flag("supervisor.max_restarts", "0").supervisor.max_restarts, 0);
  CAF_CHECK_EQUAL(flag_error("store.map_size_bytes", "1000"),
                  "config error: store.map_size_bytes: must be >= 1MiB, got 1000");
  CAF_CHECK_EQUAL(flag("store.map_size_bytes", "1MiB").store.map_size_bytes, 1u << 20);
  for (auto key : {"http.request_timeout", "http.sse_ping_interval", "supervisor.restart_window",
                   "supervisor.backoff_initial"}) {
    CAF_CHECK_EQUAL(flag_error(key, "0"),
                    std::string{"config error: "} + key + ": must be > 0s, got 0s");
    CAF_CHECK_EQUAL(flag_error(key, "-5ms"),
                    std::string{"config error: "} + key + ": must be > 0s, got -5ms");
  }
  CAF_CHECK_EQUAL(flag_error("http.shutdown_grace", "-1s"),
                  "config error: http.shutdown_grace: must be >= 0s, got -1s");
  CAF_CHECK_EQUAL(flag("http.shutdown_grace", "0").http.shutdown_grace.count(), 0);
  CAF_CHECK_EQUAL(flag_error("http.read_workers", "0"),
                  "config error: http.read_workers: must be between 1 and 64, got 0");
  CAF_CHECK_EQUAL(flag_error("http.read_queue", "0"),
                  "config error: http.read_queue: must be >= 1, got 0");
  CAF_CHECK_EQUAL(flag_error("supervisor.backoff_max", "50ms"),
                  "config error: supervisor.backoff_max: must be >= "
                  "supervisor.backoff_initial (100ms), got 50ms");
  auto src = sources();
  src.flags = {{"supervisor.backoff_initial", "2s"}, {"supervisor.backoff_max", "1s"}};
  CAF_CHECK_EQUAL(error_of(src), "config error: supervisor.backoff_max: must be >= "
                                 "supervisor.backoff_initial (2s), got 1s");
  src.flags = {{"supervisor.backoff_initial", "1s"}, {"supervisor.backoff_max", "1s"}};
  CAF_CHECK_EQUAL(error_of(src), "");
  CAF_CHECK_EQUAL(flag_error("data_dir", ""), "config error: data_dir: must not be empty");
  CAF_CHECK_EQUAL(flag_error("node_name", ""), "config error: node_name: must not be empty");
}

CAF_TEST(malformed YAML names the file line and column) {
  auto src = with_file("log:\n  level: info\n  format: [text\n");
  auto err = error_of(src);
  auto prefix = "config error: " + src.file + ": invalid YAML at line ";
  CAF_CHECK_EQUAL(head(err, prefix), prefix);
  CAF_CHECK(contains(err, ", column "));
  CAF_MESSAGE(err);
  src = with_file("a: b: c\n");
  err = error_of(src);
  CAF_CHECK_EQUAL(err, "config error: " + src.file +
                           ": invalid YAML at line 1, column 5: illegal map value");
}

CAF_TEST(a missing explicit file is an error naming it) {
  auto src = sources();
  src.file = dir + "/nope.yaml";
  CAF_CHECK_EQUAL(error_of(src), "config error: " + src.file + ": file not found");
  src.file = dir;
  CAF_CHECK_EQUAL(error_of(src), "config error: " + dir + ": is a directory, not a file");
}

CAF_TEST(shapes of sections and values are checked) {
  CAF_CHECK_EQUAL(file_error("log: debug\n"),
                  "config error: log: expected a mapping of log.level, log.format, got \"debug\"");
  CAF_CHECK_EQUAL(file_error("log:\n  - debug\n"),
                  "config error: log: expected a mapping of log.level, log.format, got a "
                  "sequence");
  CAF_CHECK_EQUAL(file_error("listen:\n  host: x\n"),
                  "config error: listen: expected a single value, got a mapping");
  CAF_CHECK_EQUAL(file_error("http:\n  io_threads: [1, 2]\n"),
                  "config error: http.io_threads: expected a single value, got a sequence");
  auto src = with_file("- listen\n");
  CAF_CHECK_EQUAL(error_of(src), "config error: " + src.file +
                                     ": expected a mapping of keys at the top level, got a "
                                     "sequence");
  CAF_CHECK_EQUAL(file_error("data_dir: /a\ndata_dir: /b\n"),
                  "config error: data_dir: duplicate key");
  CAF_CHECK_EQUAL(file_error("log:\n  level: info\n  level: warn\n"),
                  "config error: log.level: duplicate key");
}

CAF_TEST(null sections and null values keep the defaults) {
  auto c = load_node_config(with_file("jobs:\nhttp:\n  io_threads: ~\ndata_dir:\nlog: ~\n"));
  CAF_CHECK_EQUAL(c.jobs.concurrency, cores());
  CAF_CHECK_EQUAL(c.http.io_threads, 1);
  CAF_CHECK_EQUAL(c.data_dir, "./data");
  CAF_CHECK_EQUAL(c.log.level, "info");
  CAF_CHECK_EQUAL(error_of(with_file("")), "");
  CAF_CHECK_EQUAL(error_of(with_file("# only a comment\n")), "");
}

CAF_TEST(listen takes HOST : PORT and bracketed IPv6) {
  auto check_ok = [&](const std::string& listen, const std::string& host, uint16_t port) {
    auto c = flag("listen", listen);
    CAF_CHECK_EQUAL(c.listen_host(), host);
    CAF_CHECK_EQUAL(c.listen_port(), port);
  };
  check_ok("0.0.0.0:0", "0.0.0.0", 0);
  check_ok("[::1]:8080", "::1", 8080);
  check_ok("[::]:80", "::", 80);
  check_ok("localhost:65535", "localhost", 65535);
  check_ok("example.com:443", "example.com", 443);
  auto err = [&](const std::string& listen) { return flag_error("listen", listen); };
  CAF_CHECK_EQUAL(err("localhost"), "config error: listen: expected HOST:PORT like "
                                    "127.0.0.1:8000, got \"localhost\"");
  CAF_CHECK_EQUAL(err(":8000"), "config error: listen: host must not be empty, got \":8000\"");
  CAF_CHECK_EQUAL(err("[]:80"), "config error: listen: host must not be empty, got \"[]:80\"");
  CAF_CHECK_EQUAL(err("my host:80"),
                  "config error: listen: host must not contain spaces, got \"my host:80\"");
  for (auto bad : {"host:", "host:65536", "host:80a", "host:-1", "host:99999999999"})
    CAF_CHECK_EQUAL(err(bad), std::string{"config error: listen: port must be a number from 0 "
                                          "to 65535, got \""} +
                                  bad + "\"");
  CAF_CHECK_EQUAL(err("::1:8080"), "config error: listen: an IPv6 host needs brackets, like "
                                   "[::1]:8000, got \"::1:8080\"");
  for (auto bad : {"[::1]8080", "[::1", "[::1]"})
    CAF_CHECK_EQUAL(err(bad), std::string{"config error: listen: expected [IPV6]:PORT like "
                                          "[::1]:8000, got \""} +
                                  bad + "\"");
  config c;
  c.listen = "nonsense";
  std::string what;
  try {
    c.listen_port();
  } catch (const config_error& e) {
    what = e.what();
  }
  CAF_CHECK_EQUAL(what, "config error: listen: expected HOST:PORT like 127.0.0.1:8000, got "
                        "\"nonsense\"");
}

CAF_TEST(sizes take byte counts and decimal or binary suffixes) {
  const std::pair<const char*, uint64_t> cases[] = {
      {"1024", 1024},         {"1B", 1},
      {"1KB", 1000},          {"1KiB", 1024},
      {"3MB", 3'000'000},     {"64MiB", 64 << 20},
      {"2GB", 2'000'000'000}, {"4GiB", 4ull << 30},
      {"64 MiB", 64 << 20},   {"10mb", 10'000'000},
      {" 7kib ", 7 * 1024},
  };
  for (auto [raw, bytes] : cases)
    CAF_CHECK_EQUAL(flag("http.max_json_bytes", raw).http.max_json_bytes, bytes);
}

CAF_TEST(durations take ms s m h d and bare seconds) {
  const std::pair<const char*, long long> cases[] = {
      {"100ms", 100},      {"15s", 15'000}, {"5m", 300'000}, {"1h", 3'600'000},
      {"7d", 604'800'000}, {"30", 30'000},  {"2 s", 2'000},  {"1S", 1'000},
  };
  for (auto [raw, ms] : cases)
    CAF_CHECK_EQUAL(flag("http.request_timeout", raw).http.request_timeout.count(), ms);
}

CAF_TEST(bools take true false yes no on off 1 0) {
  for (auto raw : {"true", "yes", "on", "1", "TRUE", "Yes"})
    CAF_CHECK_EQUAL(flag("debug.fault_injection", raw).debug.fault_injection, true);
  for (auto raw : {"false", "no", "off", "0", "False", "OFF"})
    CAF_CHECK_EQUAL(flag("debug.fault_injection", raw).debug.fault_injection, false);
  CAF_CHECK_EQUAL(flag("log.level", "DEBUG").log.level, "debug");
}

CAF_TEST(loading creates nothing on disk) {
  auto data_dir = dir + "/fresh/data";
  auto src = with_file("data_dir: " + data_dir + "\n");
  src.dotenv = dir + "/no/such/dir/.env";
  src.environment = {"TROUPE_LOG__LEVEL=debug"};
  CAF_CHECK_EQUAL(load_node_config(src).data_dir, data_dir);
  src.flags = {{"jobs.concurrency", "0"}};
  CAF_CHECK_NOT_EQUAL(error_of(src), "");
  CAF_CHECK(!fs::exists(dir + "/fresh"));
  CAF_CHECK(!fs::exists(dir + "/no"));
  auto entries = std::distance(fs::directory_iterator{dir}, fs::directory_iterator{});
  CAF_CHECK_EQUAL(entries, 1); // just troupe.yaml
}

CAF_TEST(the shipped configs troupe yaml loads and matches the defaults) {
  auto root = std::getenv("TROUPE_SOURCE_DIR");
  auto path = std::string{root != nullptr ? root : ".."} + "/configs/troupe.yaml";
  CAF_REQUIRE(fs::exists(path));
  auto src = sources();
  src.file = path;
  auto shipped = load_node_config(src);
  auto builtin = load_node_config(sources());
  CAF_CHECK_EQUAL(shipped.node_name, builtin.node_name);
  CAF_CHECK_EQUAL(shipped.listen, builtin.listen);
  CAF_CHECK_EQUAL(shipped.data_dir, builtin.data_dir);
  CAF_CHECK_EQUAL(shipped.log.level, builtin.log.level);
  CAF_CHECK_EQUAL(shipped.log.format, builtin.log.format);
  CAF_CHECK_EQUAL(shipped.http.io_threads, builtin.http.io_threads);
  CAF_CHECK_EQUAL(shipped.http.max_json_bytes, builtin.http.max_json_bytes);
  CAF_CHECK_EQUAL(shipped.http.request_timeout.count(), builtin.http.request_timeout.count());
  CAF_CHECK_EQUAL(shipped.http.sse_ping_interval.count(), builtin.http.sse_ping_interval.count());
  CAF_CHECK_EQUAL(shipped.http.sse_queue_limit, builtin.http.sse_queue_limit);
  CAF_CHECK_EQUAL(shipped.http.shutdown_grace.count(), builtin.http.shutdown_grace.count());
  CAF_CHECK_EQUAL(shipped.http.read_workers, builtin.http.read_workers);
  CAF_CHECK_EQUAL(shipped.http.read_queue, builtin.http.read_queue);
  CAF_CHECK_EQUAL(shipped.store.map_size_bytes, builtin.store.map_size_bytes);
  CAF_CHECK_EQUAL(shipped.supervisor.max_restarts, builtin.supervisor.max_restarts);
  CAF_CHECK_EQUAL(shipped.supervisor.restart_window.count(),
                  builtin.supervisor.restart_window.count());
  CAF_CHECK_EQUAL(shipped.supervisor.backoff_initial.count(),
                  builtin.supervisor.backoff_initial.count());
  CAF_CHECK_EQUAL(shipped.supervisor.backoff_max.count(), builtin.supervisor.backoff_max.count());
  CAF_CHECK_EQUAL(shipped.jobs.concurrency, builtin.jobs.concurrency);
  CAF_CHECK_EQUAL(shipped.jobs.user, builtin.jobs.user);
  CAF_CHECK_EQUAL(shipped.jobs.group, builtin.jobs.group);
  CAF_CHECK_EQUAL(shipped.jobs.inherit_env, builtin.jobs.inherit_env);
  CAF_CHECK_EQUAL(shipped.jobs.max_concurrent_extractions, builtin.jobs.max_concurrent_extractions);
  CAF_CHECK_EQUAL(shipped.jobs.max_archive_memory_bytes, builtin.jobs.max_archive_memory_bytes);
  CAF_CHECK_EQUAL(shipped.apps.port_range, builtin.apps.port_range);
  CAF_CHECK_EQUAL(shipped.apps.restart_backoff_initial.count(),
                  builtin.apps.restart_backoff_initial.count());
  CAF_CHECK_EQUAL(shipped.apps.restart_backoff_max.count(),
                  builtin.apps.restart_backoff_max.count());
  CAF_CHECK_EQUAL(shipped.apps.restart_backoff_reset.count(),
                  builtin.apps.restart_backoff_reset.count());
  CAF_CHECK_EQUAL(shipped.debug.fault_injection, builtin.debug.fault_injection);
  CAF_CHECK_EQUAL(shipped.proxy.mode, builtin.proxy.mode);
  CAF_CHECK_EQUAL(shipped.proxy.listen, builtin.proxy.listen);
  CAF_CHECK_EQUAL(shipped.proxy.io_threads, builtin.proxy.io_threads);
  CAF_CHECK_EQUAL(shipped.proxy.upstream_timeout.count(), builtin.proxy.upstream_timeout.count());
  CAF_CHECK_EQUAL(shipped.proxy.eject_seconds, builtin.proxy.eject_seconds);
  CAF_CHECK_EQUAL(shipped.proxy.max_connections, builtin.proxy.max_connections);
  CAF_CHECK_EQUAL(shipped.proxy.upstream_keepalive, builtin.proxy.upstream_keepalive);
  CAF_CHECK_EQUAL(shipped.proxy.nginx.binary, builtin.proxy.nginx.binary);
  CAF_CHECK_EQUAL(shipped.proxy.nginx.status_listen, builtin.proxy.nginx.status_listen);
  CAF_CHECK_EQUAL(shipped.proxy.nginx.min_reload_interval.count(),
                  builtin.proxy.nginx.min_reload_interval.count());
  CAF_CHECK_EQUAL(shipped.auth.mode, builtin.auth.mode);
  CAF_CHECK_EQUAL(shipped.auth.tokens.size(), 0u);
  CAF_CHECK_EQUAL(shipped.auth.tokens_file, builtin.auth.tokens_file);
  CAF_CHECK_EQUAL(shipped.auth.public_metrics, builtin.auth.public_metrics);
  CAF_CHECK_EQUAL(shipped.auth.allow_insecure, builtin.auth.allow_insecure);
  CAF_CHECK_EQUAL(shipped.metrics.mode, builtin.metrics.mode);
  CAF_CHECK_EQUAL(shipped.metrics.relative_accuracy, builtin.metrics.relative_accuracy);
  CAF_CHECK_EQUAL(shipped.metrics.max_series, builtin.metrics.max_series);
  CAF_CHECK_EQUAL(shipped.metrics.export_interval.count(), builtin.metrics.export_interval.count());
  CAF_CHECK_EQUAL(shipped.metrics.scrape_ttl.count(), builtin.metrics.scrape_ttl.count());
  CAF_CHECK_EQUAL(shipped.metrics.mapping, "{}");
  CAF_CHECK_EQUAL(shipped.metrics.proxy.urls, builtin.metrics.proxy.urls);
  CAF_CHECK_EQUAL(shipped.metrics.redis.ttl.count(), builtin.metrics.redis.ttl.count());
  CAF_CHECK_EQUAL(shipped.metrics.redis.stats_max_age.count(),
                  builtin.metrics.redis.stats_max_age.count());
  // Every key is documented in the file: a leaf name followed by a colon.
  std::ifstream in{path};
  std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  for (auto& key : all_keys) {
    auto leaf = key.substr(key.rfind('.') + 1);
    CAF_CHECK(contains(text, leaf + ":"));
  }
}

CAF_TEST(the proxy keys validate and nginx mode needs its main configuration) {
  CAF_CHECK_EQUAL(flag("proxy.listen", "").proxy.enabled(), false);
  CAF_CHECK_EQUAL(flag("proxy.io_threads", "2").proxy.io_threads, 2);
  CAF_CHECK(contains(flag_error("proxy.listen", "nowhere"), "config error: proxy.listen:"));
  CAF_CHECK(contains(flag_error("proxy.mode", "haproxy"), "config error: proxy.mode:"));
  CAF_CHECK(contains(flag_error("proxy.eject_seconds", "0"), "config error: proxy.eject_seconds:"));
  CAF_CHECK_EQUAL(flag("proxy.nginx.status_listen", "").proxy.nginx.status_listen, "");
  CAF_CHECK(contains(flag_error("proxy.nginx.status_listen", "8081"),
                     "config error: proxy.nginx.status_listen:"));
  CAF_CHECK(contains(flag_error("proxy.mode", "nginx"),
                     "config error: proxy.nginx.main_conf: required with proxy.mode nginx"));
}

CAF_TEST(extraction limits default to the cores and 256MiB and can be set) {
  CAF_CHECK_EQUAL(flag("jobs.max_concurrent_extractions", "3").jobs.max_concurrent_extractions, 3);
  CAF_CHECK_EQUAL(flag("jobs.max_archive_memory_bytes", "1GiB").jobs.max_archive_memory_bytes,
                  1ull << 30);
  CAF_CHECK_EQUAL(flag_error("jobs.max_concurrent_extractions", "0"),
                  "config error: jobs.max_concurrent_extractions: must be >= 1, got 0");
  CAF_CHECK_EQUAL(flag_error("jobs.max_archive_memory_bytes", "512KiB"),
                  "config error: jobs.max_archive_memory_bytes: must be >= 1MiB, got 512KiB");
  // --help shows the default as what it is, like jobs.concurrency's.
  auto text = troupe::describe_config_keys();
  auto at = text.find("jobs.max_concurrent_extractions ");
  CAF_REQUIRE(at != std::string::npos);
  auto line = text.substr(at, text.find('\n', at) - at);
  CAF_CHECK(contains(line, "(number of cores)"));
}

CAF_TEST(apps probe and limit keys have defaults and are validated) {
  auto c = flag("apps.limits", "auto");
  CAF_CHECK_EQUAL(c.apps.max_concurrent_probes, 64);
  CAF_CHECK_EQUAL(c.apps.max_probe_response_bytes, 8u * 1024);
  CAF_CHECK_EQUAL(flag("apps.limits", "cgroup-v1").apps.limits, "cgroup-v1");
  CAF_CHECK_EQUAL(flag("apps.max_probe_response_bytes", "16KiB").apps.max_probe_response_bytes,
                  16u * 1024);
  CAF_CHECK_EQUAL(flag_error("apps.max_concurrent_probes", "0"),
                  "config error: apps.max_concurrent_probes: must be >= 1, got 0");
  CAF_CHECK(contains(flag_error("apps.limits", "cgroups"), "config error: apps.limits: "));
}

CAF_TEST(describe_config_keys lists every key with its env var and default) {
  auto text = troupe::describe_config_keys();
  for (auto& key : all_keys) {
    auto env = "TROUPE_" + key;
    std::transform(env.begin(), env.end(), env.begin(), [](char ch) {
      return static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    });
    for (auto pos = env.find('.'); pos != std::string::npos; pos = env.find('.'))
      env.replace(pos, 1, "__");
    CAF_CHECK(contains(text, key + " "));
    CAF_CHECK(contains(text, env));
  }
  CAF_CHECK(contains(text, "127.0.0.1:8000"));
  CAF_CHECK(contains(text, "256MiB"));
  CAF_CHECK(contains(text, "duration > 0s"));
  CAF_CHECK(contains(text, "trace|debug|info|warn|error|critical|off"));
  CAF_CHECK(contains(text, "(host name)"));
  CAF_MESSAGE("\n" << text);
}

CAF_TEST(config_error renders path and reason) {
  config_error e{"jobs.concurrency", "must be >= 1, got 0"};
  CAF_CHECK_EQUAL(std::string{e.what()}, "config error: jobs.concurrency: must be >= 1, got 0");
  CAF_CHECK_EQUAL(e.path(), "jobs.concurrency");
  CAF_CHECK_EQUAL(e.reason(), "must be >= 1, got 0");
}

CAF_TEST(process_environment returns NAME = VALUE entries) {
  setenv("TROUPE_CONFIG_TEST_MARKER", "a=b", 1);
  auto env = troupe::process_environment();
  unsetenv("TROUPE_CONFIG_TEST_MARKER");
  CAF_CHECK(std::find(env.begin(), env.end(), "TROUPE_CONFIG_TEST_MARKER=a=b") != env.end());
}

CAF_TEST(metrics keys accept YAML mappings and lists and name what is wrong) {
  auto c = load_node_config(
      with_file("metrics:\n  mode: proxy\n  proxy:\n    urls: [http://127.0.0.1:1, "
                "http://127.0.0.1:2/base]\n  pushgateway:\n    grouping: {instance: t1, "
                "env: p/1}\n  mapping:\n    sse.connections: {name: "
                "Ingress/SSEConnections, unit: Count}\n"));
  CAF_CHECK_EQUAL(c.metrics.proxy.urls, "http://127.0.0.1:1,http://127.0.0.1:2/base");
  auto grouping = nlohmann::json::parse(c.metrics.pushgateway.grouping);
  CAF_CHECK_EQUAL(grouping["env"].get<std::string>(), std::string{"p/1"});
  troupe::metrics::naming names{c.metrics.mapping};
  CAF_CHECK_EQUAL(names.name(*troupe::metrics::find_family("sse.connections")),
                  "Ingress_SSEConnections");
  CAF_CHECK_EQUAL(names.unit(*troupe::metrics::find_family("sse.connections")), "Count");
  check_yaml_error("metrics:\n  mode: redis\n", "metrics.redis.url",
                   "required when metrics.mode is redis");
  check_yaml_error("metrics:\n  mode: proxy\n", "metrics.proxy.urls", "required");
  check_yaml_error("metrics:\n  mapping: {nope.key: {name: x}}\n", "metrics.mapping",
                   "nope.key: unknown metric key");
  check_yaml_error("metrics:\n  mapping: {troupe.heartbeat: {name: beats}}\n", "metrics.mapping",
                   "troupe.heartbeat.name: a counter's name must end in _total");
  check_yaml_error("metrics:\n  relative_accuracy: 0.7\n", "metrics.relative_accuracy",
                   "must be between 1e-06 and 0.5");
  check_yaml_error("metrics:\n  relative_accuracy: 0.0000001\n", "metrics.relative_accuracy",
                   "must be between 1e-06 and 0.5");
  check_yaml_error("metrics:\n  pushgateway:\n    url: https://x\n", "metrics.pushgateway.url", "");
  check_yaml_error("metrics:\n  redis:\n    url: http://x\n", "metrics.redis.url", "");
  check_yaml_error("metrics:\n  pushgateway:\n    grouping: not json\n",
                   "metrics.pushgateway.grouping", "expected a JSON object");
  check_yaml_error("metrics:\n  pushgateway:\n    grouping: {route: x}\n",
                   "metrics.pushgateway.grouping", "route: is a label of troupe's series");
  check_yaml_error("metrics:\n  mode: redis\n  redis:\n    url: redis://127.0.0.1\n    tenant: "
                   "t1\n  pushgateway:\n    grouping: {tenant: t2}\n",
                   "metrics.pushgateway.grouping", "tenant: must equal metrics.redis.tenant");
  check_yaml_error("metrics:\n  mode: proxy\n  proxy:\n    urls: [http://127.0.0.1:1]\n  "
                   "pushgateway:\n    grouping: {project: p}\n",
                   "metrics.pushgateway.grouping",
                   "project: not usable for grouping in proxy mode");
  check_yaml_error("metrics:\n  redis:\n    tenant: 'a:b'\n", "metrics.redis.tenant",
                   "must not contain ':'");
  check_yaml_error("metrics:\n  redis:\n    project: 'p*'\n", "metrics.redis.project",
                   "must not contain ':', glob characters (*?[]\\), spaces or control "
                   "characters, got \"p*\"");
  check_yaml_error("metrics:\n  mapping: {sse.connections: {name: troupe_job_queue_depth}}\n",
                   "metrics.mapping",
                   "sse.connections.name: troupe_job_queue_depth is already a name of "
                   "jobs.queue.depth");
  check_yaml_error("metrics:\n  mapping: {sse.connections: {name: troupe_job_queue_depth_max}}\n",
                   "metrics.mapping",
                   "sse.connections.name: troupe_job_queue_depth_max is already a name of "
                   "jobs.queue.depth");
  check_yaml_error(
      "metrics:\n  mapping: {sse.connections: {name: troupe_job_queue_wait_seconds_count}}\n",
      "metrics.mapping",
      "sse.connections.name: troupe_job_queue_wait_seconds_count is already a name of "
      "jobs.queue.wait");
  check_yaml_error("metrics:\n  mapping: {sse.connections: {name: sse_total}}\n", "metrics.mapping",
                   "sse.connections.name: only counters may end in _total");
}

CAF_TEST(jobs user and group are resolved and inherit_env takes names and globs) {
  auto c = load_node_config(with_file("jobs:\n  inherit_env: [CI, \"AWS_*\", \"LC_[A-Z]*\"]\n"));
  CAF_CHECK_EQUAL(c.jobs.inherit_env, "CI,AWS_*,LC_[A-Z]*");
  CAF_CHECK(!c.jobs.identity);
  check_yaml_error("jobs:\n  inherit_env: [\"A=B\"]\n", "jobs.inherit_env",
                   "expected variable names or globs like AWS_*, got \"A=B\"");
  check_yaml_error("jobs:\n  user: no-such-user-here\n", "jobs.user",
                   "no such user \"no-such-user-here\"");
  check_yaml_error("jobs:\n  group: nogroup\n", "jobs.group", "needs jobs.user");
  // troupe's own user is accepted whoever runs the test.
  auto* me = ::getpwuid(::geteuid());
  CAF_REQUIRE(me != nullptr);
  auto own = flag("jobs.user", me->pw_name);
  CAF_REQUIRE(own.jobs.identity.has_value());
  CAF_CHECK_EQUAL(own.jobs.identity->uid, ::geteuid());
  CAF_CHECK_EQUAL(own.jobs.identity->user, std::string{me->pw_name});
}

const std::string ci_token = "ci-0123456789abcdef";
const std::string ops_token = "ops-0123456789abcdef";

CAF_TEST(auth defaults to tokens with public metrics) {
  auto c = load_node_config(sources());
  CAF_CHECK_EQUAL(c.auth.mode, "token");
  CAF_CHECK_EQUAL(c.auth.tokens.size(), 0u);
  CAF_CHECK_EQUAL(c.auth.tokens_file, "");
  CAF_CHECK_EQUAL(c.auth.public_metrics, true);
  CAF_CHECK_EQUAL(c.auth.allow_insecure, false);
  CAF_CHECK(contains(troupe::describe_config_keys(), "list of {name, token, roles}"));
}

CAF_TEST(auth tokens come from a YAML list the environment or a flag as JSON) {
  auto c = load_node_config(with_file("auth:\n  tokens:\n    - name: ci\n      token: " + ci_token +
                                      "\n      roles: [read, submit]\n    - {name: ops, token: '" +
                                      ops_token +
                                      "', roles: [ADMIN]}\n  tokens_file: /etc/t.yaml\n"
                                      "  public_metrics: false\n"));
  CAF_REQUIRE_EQUAL(c.auth.tokens.size(), 2u);
  CAF_CHECK_EQUAL(c.auth.tokens[0].name, "ci");
  CAF_CHECK_EQUAL(c.auth.tokens[0].token, ci_token);
  CAF_CHECK(c.auth.tokens[0].roles == std::vector<std::string>({"read", "submit"}));
  CAF_CHECK(c.auth.tokens[1].roles == std::vector<std::string>({"admin"}));
  CAF_CHECK_EQUAL(c.auth.tokens_file, "/etc/t.yaml");
  CAF_CHECK_EQUAL(c.auth.public_metrics, false);
  auto json = R"([{"name": "ci", "token": ")" + ci_token + R"(", "roles": ["submit"]}])";
  auto env = load_node_config(with_env({"TROUPE_AUTH__TOKENS=" + json}));
  CAF_REQUIRE_EQUAL(env.auth.tokens.size(), 1u);
  CAF_CHECK_EQUAL(env.auth.tokens[0].token, ci_token);
  CAF_CHECK_EQUAL(flag("auth.tokens", json).auth.tokens.size(), 1u);
  CAF_CHECK_EQUAL(flag("auth.tokens", "").auth.tokens.size(), 0u);
  CAF_CHECK_EQUAL(flag("auth.tokens", "[]").auth.tokens.size(), 0u);
  // The environment wins over the file, as for every key.
  auto src = with_file("auth:\n  tokens: [{name: a, token: " + ops_token + ", roles: [read]}]\n");
  src.environment = {"TROUPE_AUTH__TOKENS=" + json};
  auto merged = load_node_config(src);
  CAF_REQUIRE_EQUAL(merged.auth.tokens.size(), 1u);
  CAF_CHECK_EQUAL(merged.auth.tokens[0].name, "ci");
}

CAF_TEST(auth token errors name the element and never show a token) {
  auto element = [](const std::string& roles) {
    return "{name: ci, token: " + ci_token + ", roles: " + roles + "}";
  };
  check_yaml_error("auth:\n  tokens: [" + element("[read]") + ", " + element("[root]") + "]\n",
                   "auth.tokens[1].roles", "unknown role \"root\" (read, submit or admin)");
  CAF_CHECK_EQUAL(env_error(R"(TROUPE_AUTH__TOKENS=[{"name": "ci", "token": ")" + ci_token +
                            R"(", "roles": ["root"]}])"),
                  "config error: auth.tokens[0].roles: unknown role \"root\" (read, submit or "
                  "admin) (from TROUPE_AUTH__TOKENS)");
  check_yaml_error("auth:\n  tokens: [" + element("[]") + "]\n", "auth.tokens[0].roles",
                   "must name at least one role");
  check_yaml_error("auth:\n  tokens: [{name: ci, roles: [read]}]\n", "auth.tokens[0].token",
                   "required");
  check_yaml_error("auth:\n  tokens: [{name: ci, token: [a], roles: [read]}]\n",
                   "auth.tokens[0].token", "expected a string, got a list");
  check_yaml_error("auth:\n  tokens:\n    name: ci\n    token: " + ci_token + "\n", "auth.tokens",
                   "expected a list of {name, token, roles}, got a mapping");
  check_yaml_error("auth:\n  tokens: " + ci_token + "\n", "auth.tokens",
                   "expected a list of {name, token, roles}, got a single value");
  // The token table's checks apply to configured tokens too.
  check_yaml_error("auth:\n  tokens: [{name: ci, token: short, roles: [read]}]\n", "auth.tokens[0]",
                   "token of \"ci\" must be at least 16 bytes long");
  check_yaml_error("auth:\n  tokens: [" + element("[read]") + ", " + element("[admin]") + "]\n",
                   "auth.tokens[1]", "name \"ci\" is also used by auth.tokens[0]");
  check_yaml_error("auth:\n  tokens: [" + element("[read]") + ", {name: ops, token: " + ci_token +
                       ", roles: [read]}]\n",
                   "auth.tokens[1]", "token of \"ops\" is also used by auth.tokens[0] (\"ci\")");
  // Not one of these messages shows the token, however it was misplaced.
  for (auto& text : {
           file_error("auth:\n  tokens: [" + element("[read]") + ", " + element("[read]") + "]\n"),
           file_error("auth:\n  tokens: [" + element("[" + ops_token + "]") + "]\n"),
           file_error("auth:\n  tokens: [{name: ci, " + ops_token + ", roles: [read]}]\n"),
           file_error("auth:\n  tokens: [{name: ci, token: " + ops_token + ", roles: [read]},\n"),
           file_error("auth:\n  tokens: " + ops_token + "\n"),
           file_error("auth:\n  tokens: [" + ops_token + "]\n"),
           env_error("TROUPE_AUTH__TOKENS=" + ops_token),
           env_error("TROUPE_AUTH__TOKENS=[{\"name\": \"ci\", \"token\": \"" + ops_token + "\""),
           env_error("TROUPE_AUTH__TOKENS={\"token\": \"" + ops_token + "\"}"),
           flag_error("auth.tokens", "[{\"name\": \"ci\", \"token\": \"" + ops_token +
                                         "\", \"roles\": \"admin\"}]"),
       }) {
    CAF_CHECK_NOT_EQUAL(text, "");
    CAF_CHECK(!contains(text, ops_token));
    CAF_CHECK(!contains(text, "0123456789"));
    CAF_MESSAGE(text);
  }
}

CAF_TEST(auth mode none needs a loopback listen unless insecure is allowed) {
  for (auto listen : {"127.0.0.1:0", "127.8.9.10:80", "[::1]:8000", "localhost:1", "LOCALHOST:1",
                      "[::ffff:127.0.0.1]:9"}) {
    auto src = sources();
    src.flags = {{"auth.mode", "none"}, {"listen", listen}};
    CAF_CHECK_EQUAL(error_of(src), "");
  }
  for (auto listen : {"0.0.0.0:0", "[::]:80", "10.0.0.1:80", "128.0.0.1:80", "example.com:80",
                      "localhost.example.com:80", "[::2]:80", "[::ffff:10.0.0.1]:9"}) {
    auto src = sources();
    src.flags = {{"auth.mode", "none"}, {"listen", listen}};
    CAF_CHECK_EQUAL(error_of(src),
                    std::string{"config error: auth.mode: none is accepted only while listen is "
                                "a loopback address (127.0.0.0/8, ::1, localhost), not "} +
                        listen +
                        ": use tokens, or set auth.allow_insecure: true to give every client on "
                        "the network admin rights");
    src.flags["auth.allow_insecure"] = "true";
    CAF_CHECK_EQUAL(error_of(src), "");
  }
  // Tokens on any address are fine.
  CAF_CHECK_EQUAL(flag("listen", "0.0.0.0:0").auth.mode, "token");
  CAF_CHECK_EQUAL(flag_error("auth.mode", "open"),
                  "config error: auth.mode: expected one of token|none, got \"open\"");
}

CAF_TEST(yaml errors do not quote the text they fail on) {
  for (auto escape : {"\\U7FFFFFFF", "\\q", "\\xZZ"}) {
    auto err =
        file_error("logs:\n  loki:\n    password: \"hunter2" + std::string{escape} + "rest\"\n");
    CAF_CHECK(contains(err, "invalid YAML at line 3"));
    CAF_CHECK(!contains(err, "hunter2"));
    CAF_CHECK(!contains(err, "7FFFFFFF") && !contains(err, "7fffffff"));
    CAF_CHECK(!contains(err, ": q"));
    CAF_MESSAGE(err);
  }
}

CAF_TEST(malformed dotenv lines do not echo what may be a secret) {
  auto src = sources();
  src.dotenv = write(".env", "TROUPE_LOGS__LOKI__PASSWORD: hunter2hunter2\n");
  CAF_CHECK_EQUAL(error_of(src), "config error: " + src.dotenv + ": line 1: expected KEY=VALUE");
  src.dotenv = write(".env", "TROUPE_LOGS__LOKI__PASSWORD='hunter2'hunter2\n");
  CAF_CHECK_EQUAL(error_of(src), "config error: " + src.dotenv +
                                     ": line 1: unexpected text after the closing quote");
}

// Found by fuzz_config: these errors named no key ("config error: : unknown key").
CAF_TEST(an empty key is named as such) {
  CAF_CHECK_EQUAL(env_error("TROUPE_=1"), "config error: (empty key): unknown key (from TROUPE_)");
  CAF_CHECK_EQUAL(file_error("\"\": 1\n"), "config error: (empty key): unknown key");
}

// Found by fuzz_config: a list or mapping holding invalid UTF-8 threw
// nlohmann's type_error out of load_config (the daemon died in terminate).
CAF_TEST(lists and mappings with invalid utf8 are a config error naming the key) {
  check_yaml_error("metrics:\n  mode: proxy\n  proxy:\n    urls: [\"http://127.0.0.1/\xff\"]\n",
                   "metrics.proxy.urls", "is not valid UTF-8");
  check_yaml_error("metrics:\n  pushgateway:\n    grouping: {env: \"\xc3\x28\"}\n",
                   "metrics.pushgateway.grouping", "is not valid UTF-8");
}

CAF_TEST(apps port range and restart backoff default and are validated) {
  auto c = load_node_config(sources());
  CAF_CHECK_EQUAL(c.apps.port_range, "20000-29999");
  CAF_CHECK_EQUAL(c.apps.restart_backoff_initial.count(), 1000);
  CAF_CHECK_EQUAL(c.apps.restart_backoff_max.count(), 300'000);
  CAF_CHECK_EQUAL(c.apps.restart_backoff_reset.count(), 600'000);
  CAF_CHECK_EQUAL(flag("apps.port_range", "30000-30009").apps.port_range, "30000-30009");
  CAF_CHECK_EQUAL(flag_error("apps.port_range", "30000"),
                  "config error: apps.port_range: expected FIRST-LAST with ports 1..65535, e.g. "
                  "20000-29999, got \"30000\"");
  CAF_CHECK_EQUAL(flag_error("apps.port_range", "2-1"),
                  "config error: apps.port_range: FIRST must not exceed LAST, got \"2-1\"");
  CAF_CHECK_EQUAL(flag_error("apps.port_range", "0-70000"),
                  "config error: apps.port_range: expected FIRST-LAST with ports 1..65535, e.g. "
                  "20000-29999, got \"0-70000\"");
  CAF_CHECK_EQUAL(flag_error("apps.restart_backoff_max", "500ms"),
                  "config error: apps.restart_backoff_max: must be >= "
                  "apps.restart_backoff_initial (1s), got 500ms");
  auto range = troupe::parse_port_range("20000-20002");
  CAF_REQUIRE(range.has_value());
  CAF_CHECK_EQUAL(range->first, 20000u);
  CAF_CHECK_EQUAL(range->last, 20002u);
}

CAF_TEST_FIXTURE_SCOPE_END()
