#include "runtime/cli.hpp"

#include <iostream>
#include <map>

#include "runtime/config.hpp"
#include "runtime/runtime.hpp"
#include "troupe/build_info.hpp"

namespace troupe::cli {

namespace {

constexpr int exit_usage = 2;

const char* main_help = R"(troupe — a workload runtime: jobs, apps, logs, metrics, clusters.

Usage:
  troupe serve [flags]     run a node (HTTP API, store, actors)
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
  {"--log-level", "log.level"},
  {"--log-format", "log.format"},
};

int serve(const std::vector<std::string>& args) {
  config_sources src;
  for (size_t i = 0; i < args.size(); ++i) {
    auto& a = args[i];
    if (a == "-h" || a == "--help") {
      std::cout << serve_help << describe_config_keys();
      return 0;
    }
    auto eq = a.find('=');
    auto name = a.substr(0, eq);
    auto value_of = [&](std::string& out) {
      if (eq != std::string::npos) {
        out = a.substr(eq + 1);
        return true;
      }
      if (i + 1 >= args.size()) {
        std::cerr << "troupe serve: " << name << " needs a value\n";
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
        std::cerr << "troupe serve: --set needs KEY=VALUE, got '" << value << "'\n";
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
      std::cerr << "troupe serve: unknown flag '" << a << "' (see troupe serve --help)\n";
      return exit_usage;
    }
  }
  src.environment = process_environment();
  config cfg;
  try {
    cfg = load_config(src);
  } catch (const config_error& e) {
    std::cerr << e.what() << '\n';
    return exit_usage;
  }
  block_stop_signals();
  runtime rt{std::move(cfg)};
  try {
    rt.start();
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
  std::cerr << "troupe: unknown command '" << args[0] << "'\n" << main_help;
  return exit_usage;
}

} // namespace troupe::cli
