#include "runtime/cli.hpp"

#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/names.hpp"
#include "actors/metrics/metrics.hpp"
#include "actors/metrics/metrics_exporter.hpp"
#include "runtime/ground/logging.hpp"

#include "runtime/config_checks.hpp"
#include "runtime/ground/config.hpp"
#include "runtime/runtime.hpp"
#include "troupe/build_info.hpp"

namespace troupe::cli {

namespace {

constexpr int exit_usage = 2;

const char* main_help = R"(troupe — a workload runtime: jobs, apps, logs, metrics, clusters.

Usage:
  troupe serve [flags]     run a node (HTTP API, store, actors)
  troupe metrics export [--once] [flags]
                           run only the metrics export loop (Redis fold and
                           write-back, Pushgateway push, proxy polls); --once
                           (or metrics.run_once) exports once and exits
  troupe version           print the version
  troupe help [command]    show help

Run 'troupe serve --help' for the serve flags and every config key.
)";

const char* serve_help = R"(Usage: troupe serve [flags]

Runs a troupe node until SIGTERM/SIGINT (graceful: in-flight requests finish,
the store is flushed, exit code 0). A second signal exits at once.

Flags (highest precedence; then TROUPE_* environment and .env; then the
config file; then built-in defaults):
  --config FILE          YAML config file (default: $TROUPE_CONFIG, else none;
                         configs/troupe.yaml documents every key)
  --listen HOST:PORT     address to serve HTTP on (default 127.0.0.1:8000);
                         port 0 picks a free port; the first log line names it
  --data-dir DIR         LMDB store and workspaces (default ./data)
  --proxy-listen HOST:PORT  the apps' proxy listener (default 127.0.0.1:8080;
                         "" turns the proxy off)
  --log-level LEVEL      trace|debug|info|warn|error|critical|off (default info)
  --log-format FORMAT    json|text (default text)
  --set KEY=VALUE        set any config key, e.g. --set http.io_threads=2
  -h, --help             show this help

Exit codes: 0 stopped on request, 2 bad flags or config, 1 start-up failure,
70 the node supervisor gave up after too many actor restarts.

Config keys (env: TROUPE_ + key upper-cased, '.' written as '__'):
)";

struct flag_spec {
  const char* flag;
  const char* key;
};

constexpr flag_spec serve_flags[] = {
    {"--listen", "listen"},
    {"--data-dir", "data_dir"},
    {"--proxy-listen", "proxy.listen"},
    {"--log-level", "log.level"},
    {"--log-format", "log.format"},
};

const char* export_help = R"(Usage: troupe metrics export [--once] [flags]

Runs the metrics export loop without the rest of a node: every
metrics.export_interval it folds Redis stats and writes windows back (redis
mode), polls upstreams (proxy mode) and pushes to the Pushgateway. With --once
(or metrics.run_once: true) it exports once, prints a JSON summary and exits:
0 if every exporter succeeded, 1 otherwise (for schedulers such as cron or
EventBridge). Without it, SIGTERM deletes the Pushgateway group and exits 0.

Flags: --config FILE, --set KEY=VALUE, --log-level, --log-format (as for serve).
)";

/// Parses the config flags shared by the commands into `src`; returns an exit
/// code when the command should end now (help shown or bad flags).
std::optional<int> parse_config_flags(const std::string& cmd, const std::vector<std::string>& args,
                                      const char* help, config_sources& src,
                                      const std::vector<std::string>& switches,
                                      std::map<std::string, bool>* seen_switches) {
  for (size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    if (a == "-h" || a == "--help") {
      std::cout << help << describe_config_keys();
      return 0;
    }
    if (std::find(switches.begin(), switches.end(), a) != switches.end()) {
      (*seen_switches)[a] = true;
      continue;
    }
    auto eq = a.find('=');
    auto name = a.substr(0, eq);
    auto value_of = [&](std::string& out) {
      if (eq != std::string::npos) {
        out = a.substr(eq + 1);
        return true;
      }
      if (i + 1 >= args.size()) {
        std::cerr << "troupe " << cmd << ": " << name << " needs a value\n";
        return false;
      }
      out = args[++i];
      return true;
    };
    std::string value;
    if (name == "--config") {
      if (!value_of(value))
        return exit_usage;
      src.file = value;
      continue;
    }
    if (name == "--set") {
      if (!value_of(value))
        return exit_usage;
      auto kv = value.find('=');
      if (kv == std::string::npos || kv == 0) {
        std::cerr << "troupe " << cmd << ": --set needs KEY=VALUE, got '" << value << "'\n";
        return exit_usage;
      }
      src.flags[value.substr(0, kv)] = value.substr(kv + 1);
      continue;
    }
    bool known = false;
    for (auto& f : serve_flags) {
      if (name == f.flag) {
        if (!value_of(value))
          return exit_usage;
        src.flags[f.key] = value;
        known = true;
        break;
      }
    }
    if (!known) {
      std::cerr << "troupe " << cmd << ": unknown flag '" << a << "' (see troupe " << cmd
                << " --help)\n";
      return exit_usage;
    }
  }
  src.environment = process_environment();
  return std::nullopt;
}

std::optional<config> load_or_report(const config_sources& src) {
  try {
    return load_node_config(src);
  } catch (const config_error& e) {
    std::cerr << e.what() << '\n';
    return std::nullopt;
  }
}

struct plain_system_config : caf::actor_system_config {
  plain_system_config() { add_troupe_types(*this); }
};

int metrics_export(const std::vector<std::string>& args) {
  config_sources src;
  std::map<std::string, bool> switches;
  if (auto rc = parse_config_flags("metrics export", args, export_help, src, {"--once"}, &switches))
    return *rc;
  auto cfg = load_or_report(src);
  if (!cfg)
    return exit_usage;
  bool once = switches["--once"] || cfg->metrics.run_once;
  block_stop_signals();
  logging::setup(cfg->log.level, cfg->log.format);
  if (cfg->metrics.mode == "local" && !cfg->metrics.pushgateway.url.empty() &&
      cfg->metrics.pushgateway.job == pushgateway_config{}.job)
    logging::get("metrics")->warn(
        "metrics export in local mode pushes this process's own series only (heartbeat, last "
        "activity) to the default job={}: a troupe serve pushing to the same group would be "
        "replaced; give one of them another metrics.pushgateway.job or grouping",
        cfg->metrics.pushgateway.job);
  plain_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  auto registry =
      sys.spawn(metrics_registry, cfg->metrics, cfg->node_name, std::vector<metric_source>{});
  enroll(sys, names::metrics, registry);
  auto exporter = sys.spawn<caf::detached>(metrics_exporter, cfg->metrics, !once,
                                           std::shared_ptr<exporter_status>{});
  enroll(sys, names::exporter, exporter);
  int rc = 0;
  caf::scoped_actor self{sys};
  if (once) {
    auto timeout = std::chrono::seconds(60);
    self->request(exporter, timeout, export_atom::value)
        .receive(
            [&](std::string& summary) {
              std::cout << summary << '\n';
              auto doc = nlohmann::json::parse(summary, nullptr, false);
              rc = !doc.is_discarded() && doc.value("ok", false) ? 0 : 1;
            },
            [&](caf::error& err) {
              std::cerr << "troupe metrics export: " << caf::to_string(err) << '\n';
              rc = 1;
            });
  } else {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    self->request(exporter, std::chrono::seconds(30), shutdown_atom::value)
        .receive([](ok_atom) {}, [](caf::error&) {});
  }
  withdraw(sys, names::exporter);
  withdraw(sys, names::metrics);
  self->send_exit(exporter, caf::exit_reason::user_shutdown);
  self->send_exit(registry, caf::exit_reason::user_shutdown);
  return rc;
}

int serve(const std::vector<std::string>& args) {
  config_sources src;
  if (auto rc = parse_config_flags("serve", args, serve_help, src, {}, nullptr))
    return *rc;
  auto loaded = load_or_report(src);
  if (!loaded)
    return exit_usage;
  auto cfg = std::move(*loaded);
  block_stop_signals();
  runtime rt{std::move(cfg)};
  try {
    rt.start();
  } catch (const config_error& e) { // auth.tokens_file is read at start
    std::cerr << e.what() << '\n';
    return exit_usage;
  } catch (const std::exception& e) {
    std::cerr << "troupe: cannot start: " << e.what() << '\n';
    return 1;
  }
  handle_stop_signals(rt);
  return rt.run_until_stopped();
}

} // namespace

int main(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    if (args.size() >= 2 && args[1] == "serve") {
      std::cout << serve_help << describe_config_keys();
      return 0;
    }
    std::cout << main_help;
    return args.empty() ? exit_usage : 0;
  }
  if (args[0] == "version" || args[0] == "--version") {
    std::cout << "troupe " << build_info::version << " (" << build_info::git_sha << ", "
              << build_info::build_type << ")\n";
    return 0;
  }
  if (args[0] == "serve")
    return serve({args.begin() + 1, args.end()});
  if (args[0] == "metrics") {
    if (args.size() >= 2 && args[1] == "export")
      return metrics_export({args.begin() + 2, args.end()});
    std::cerr << "troupe metrics: expected 'export' (troupe metrics export [--once])\n";
    return exit_usage;
  }
  std::cerr << "troupe: unknown command '" << args[0] << "'\n" << main_help;
  return exit_usage;
}

} // namespace troupe::cli
