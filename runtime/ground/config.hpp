#pragma once

// troupe's configuration: defaults < YAML file < TROUPE_* environment < flags.
// Validation names the key's path and the reason; nothing touches the data
// dir before it passes.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace troupe {

/// A configuration problem, rendered as `config error: <path>: <reason>`.
class config_error : public std::runtime_error {
public:
  config_error(std::string path, std::string reason);
  const std::string& path() const noexcept { return path_; }
  const std::string& reason() const noexcept { return reason_; }

private:
  std::string path_;
  std::string reason_;
};

struct log_config {
  /// trace, debug, info, warn, error, critical, off
  std::string level = "info";
  /// json or text
  std::string format = "text";
};

struct rate_limit_config {
  /// Sustained mutating requests per second, per token and per client
  /// address (0: off).
  double requests_per_second = 0;
  /// Requests allowed in a burst above the sustained rate.
  int burst = 20;
};

struct tls_config {
  /// PEM certificate (chain) and private key; both set: the API is HTTPS.
  std::string cert_file;
  std::string key_file;
};

struct http_config {
  /// Threads running the Beast io_context (>= 1).
  int io_threads = 1;
  /// Largest JSON/YAML request body; larger ones get 413 (uploads are bounded
  /// by jobs.max_archive_bytes instead).
  uint64_t max_json_bytes = 1ull << 20;
  /// Idle timeout of a connection: reset whenever bytes arrive or leave
  /// (keep-alive waits included).
  std::chrono::milliseconds request_timeout{30'000};
  /// A request's headers must arrive within this time of its first byte.
  std::chrono::milliseconds header_timeout{10'000};
  /// Overall cap on reading one request (its body included).
  std::chrono::milliseconds max_request_duration{600'000};
  /// Interval of `: ping` comments on idle SSE streams.
  std::chrono::milliseconds sse_ping_interval{15'000};
  /// Events queued for one SSE client before it is disconnected.
  int sse_queue_limit = 4096;
  /// Bytes queued for one SSE client before it is disconnected.
  uint64_t sse_queue_bytes = 4ull << 20;
  /// How long shutdown waits for in-flight requests.
  std::chrono::milliseconds shutdown_grace{10'000};
  /// Threads (detached actors) that run the long store reads of requests:
  /// GET /logs and GET /jobs pages.
  int read_workers = 2;
  /// Such reads waiting or running at once; further ones get 503 `busy`.
  int read_queue = 64;
  /// Open connections at most (0: the descriptor limit minus reserved_fds);
  /// further ones are answered 503 and closed.
  int max_connections = 0;
  /// Descriptors kept free of connections for jobs, the store and sinks.
  int reserved_fds = 256;
  /// Origins (scheme://host[:port]) besides the server's own whose browser
  /// requests are served (with CORS headers); comma-separated.
  std::string allowed_origins;
  /// Host header values accepted besides localhost/127.0.0.1/[::1] while
  /// listening on loopback (DNS rebinding); comma-separated.
  std::string allowed_hosts;
  rate_limit_config rate_limit;
  tls_config tls;
};

/// One API token of `auth.tokens`.
struct auth_token {
  std::string name;
  std::string token;
  /// read, submit or admin (admin ⊇ submit ⊇ read).
  std::vector<std::string> roles;
};

struct auth_config {
  /// token (bearer tokens required) or none (only while listening on loopback,
  /// unless allow_insecure).
  std::string mode = "token";
  /// Tokens from the config (TROUPE_AUTH__TOKENS: the same list as JSON).
  std::vector<auth_token> tokens;
  /// A YAML/JSON file with more tokens (same shape); re-read on SIGHUP.
  std::string tokens_file;
  /// GET /metrics needs no token (Prometheus scrapes, probes).
  bool public_metrics = true;
  /// Allows auth.mode none on a non-loopback listen address.
  bool allow_insecure = false;
};

struct store_config {
  /// LMDB map size (upper bound of the data file).
  uint64_t map_size_bytes = 4ull << 30;
};

struct supervisor_config {
  /// More than `max_restarts` restarts within `restart_window` escalates.
  int max_restarts = 5;
  std::chrono::milliseconds restart_window{60'000};
  /// Restart backoff: initial delay, doubled per recent restart, capped.
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{5'000};
};

/// Who jobs run as: jobs.user / jobs.group resolved against the host's user
/// database when the config is loaded (runtime/ground/host.hpp).
struct job_identity {
  std::string user;
  uint32_t uid = 0;
  uint32_t gid = 0;
  /// Supplementary groups of the user (as initgroups would set them).
  std::vector<uint32_t> groups;
  std::string home;
  std::string shell;
  /// troupe is root and switches to this identity in each job's process;
  /// false when jobs.user names troupe's own user.
  bool switches = false;
};

struct jobs_config {
  /// Jobs running at once on this node (>= 1; default: number of cores).
  int concurrency = 1;
  /// User (and group; empty: the user's primary group) jobs run as while
  /// troupe is root; empty: troupe's own user.
  std::string user;
  std::string group;
  /// Names or fnmatch globs of troupe's environment variables jobs inherit
  /// besides PATH, HOME, LANG, LC_*, TZ, USER and SHELL; comma-separated.
  std::string inherit_env;
  /// jobs.user resolved (unset without jobs.user).
  std::optional<job_identity> identity;
  /// Shell command of the seed endpoints (/submit*) and of specs without one.
  std::string default_command =
      "if [ -f Makefile ] || [ -f makefile ] || [ -f GNUmakefile ]; then exec make test; "
      "else exec ./ci.sh; fi";
  /// SIGTERM → SIGKILL grace when a job is cancelled or times out.
  std::chrono::milliseconds cancel_grace{10'000};
  /// Retry backoff: initial delay, doubled per attempt, capped.
  std::chrono::milliseconds retry_backoff_initial{1'000};
  std::chrono::milliseconds retry_backoff_max{300'000};
  /// How long a finished job's workspace is kept.
  std::chrono::milliseconds workspace_retention{3'600'000};
  /// How long job records and logs are kept after the job ended.
  std::chrono::milliseconds retention{7ll * 24 * 3'600'000};
  /// Interval of the retention sweep.
  std::chrono::milliseconds sweep_interval{60'000};
  /// Longer output lines are split into pieces of this size.
  uint64_t max_line_bytes = 64 * 1024;
  /// Upload limits for project archives.
  uint64_t max_archive_bytes = 256ull << 20;
  int max_archive_entries = 100'000;
  uint64_t max_expanded_bytes = 2ull << 30;
  /// Archives extracted at once (>= 1; default: number of cores); further
  /// uploads wait their turn in FIFO order.
  int max_concurrent_extractions = 1;
  /// Most memory one archive's decoder may need (xz/lzma dictionary, zstd
  /// window, PPMd model), read from its headers before decoding. 256 MiB
  /// admits every xz/lzma preset (xz -9 needs 64 MiB) and zstd's own default
  /// decoder cap (128 MiB windows) with room, while cores × this bounds what
  /// concurrent extractions can take.
  uint64_t max_archive_memory_bytes = 256ull << 20;
};

struct loki_config {
  /// Base URL of Loki (empty: the Loki sink is off), e.g. http://127.0.0.1:3100
  std::string url;
  /// X-Scope-OrgID (multi-tenant Loki); empty: not sent.
  std::string tenant;
  bool gzip = false;
  /// Basic auth (with password) or bearer token; empty: none.
  std::string username;
  std::string password;
  std::string bearer_token;
  /// Flush at this many entries, bytes of lines, or age of the oldest entry.
  int batch_entries = 100;
  uint64_t batch_bytes = 1ull << 20;
  std::chrono::milliseconds batch_wait{1000};
  /// structured_metadata or label.
  std::string request_id_as = "structured_metadata";
  /// Unshipped bytes kept; beyond that the oldest are dropped (and counted).
  uint64_t outbox_bytes = 256ull << 20;
  std::chrono::milliseconds timeout{10'000};
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30'000};
  /// Consecutive failures that open the circuit breaker, and its cooldown.
  int breaker_failures = 5;
  std::chrono::milliseconds breaker_cooldown{10'000};
};

struct logs_config {
  /// `namespace` label of every entry.
  std::string ns = "default";
  /// `service` label of troupe's own lines.
  std::string service = "troupe";
  /// Level of lines without one of their own, by stream.
  std::string stdout_level = "info";
  std::string stderr_level = "error";
  /// Forward every entry to troupe's stdout (for kubectl logs / journald).
  bool stdout_sink = false;
  /// Lines older than this are removed from the local store.
  std::chrono::milliseconds retention{7ll * 24 * 3'600'000};
  /// The local store's log table is kept below this size (oldest lines go).
  uint64_t max_bytes = 1ull << 30;
  loki_config loki;
};

struct pushgateway_config {
  /// Pushgateway base URL (empty: no push), e.g. http://127.0.0.1:9091
  std::string url;
  /// `job` of the grouping key.
  std::string job = "troupe";
  /// Further grouping labels as a JSON object, e.g. {"tenant":"t","project":"p"}.
  std::string grouping;
  std::chrono::milliseconds timeout{10'000};
};

struct redis_metrics_config {
  /// redis://[[user]:password@]host[:port][/db]; required in redis mode.
  std::string url;
  /// Key layout: {prefix}:{tenant}:{project}:sse:connections:{instance}:{pid}
  /// (read) and {prefix}:{tenant}:{project}:metrics:{series} (written).
  std::string prefix = "troupe";
  std::string tenant = "default";
  std::string project = "default";
  /// Published stats older than this are ignored.
  std::chrono::milliseconds stats_max_age{120'000};
  /// TTL of the windows written back.
  std::chrono::milliseconds ttl{120'000};
  std::chrono::milliseconds timeout{2'000};
};

struct proxy_metrics_config {
  /// Base URLs whose /monitoring/system is re-exported (comma-separated or a
  /// JSON/YAML list); required in proxy mode.
  std::string urls;
  /// Header sent with every poll (e.g. Authorization: Bearer …); empty: none.
  std::string auth_header_name;
  std::string auth_header_value;
  std::chrono::milliseconds timeout{5'000};
};

struct metrics_config {
  /// local: this node's series; redis: local plus stats folded from Redis,
  /// windows written back; proxy: upstreams' /monitoring/system re-exported.
  std::string mode = "local";
  /// Relative error of the percentile sketches (0.01 = 1 %).
  double relative_accuracy = 0.01;
  /// Hot paths are drained and gauges sampled this often.
  std::chrono::milliseconds sample_interval{1'000};
  /// Most windowed series; observations of further series are dropped and counted.
  int max_series = 20'000;
  /// Export loop (Pushgateway push, Redis fold/write-back, proxy poll).
  std::chrono::milliseconds export_interval{30'000};
  bool export_on_start = true;
  /// `troupe metrics export` exports once and exits (as with --once).
  bool run_once = false;
  /// Internal key → {"name", "unit"} as a JSON object.
  std::string mapping;
  /// Cache of GET /metrics (0: live).
  std::chrono::milliseconds scrape_ttl{0};
  pushgateway_config pushgateway;
  redis_metrics_config redis;
  proxy_metrics_config proxy;
};

struct apps_config {
  /// Ports handed to app instances, FIRST-LAST inclusive (parse_port_range).
  std::string port_range = "20000-29999";
  /// Restart backoff of an instance: first delay, doubled per quick exit,
  /// capped; a run this long resets it.
  std::chrono::milliseconds restart_backoff_initial{1'000};
  std::chrono::milliseconds restart_backoff_max{300'000};
  std::chrono::milliseconds restart_backoff_reset{600'000};
  /// Apps registered on the node at most (each holds an actor and records).
  int max_apps = 100;
  /// Instances of all apps that are up, at most (processes, ports, actors).
  int max_instances = 1000;
  // -- health probes and resource limits (apps-health) --
  /// Health probes running at once on this node; further ones wait.
  int max_concurrent_probes = 64;
  /// Bytes of a probe's HTTP response read at most (only the status line
  /// is needed; an endless health endpoint costs no more than this).
  uint64_t max_probe_response_bytes = 8 * 1024;
  /// How instance limits are enforced: auto (cgroup-v2, else cgroup-v1,
  /// else rlimit), or at most the named one: cgroup-v2|cgroup-v1|rlimit|none.
  std::string limits = "auto";
  /// How often each instance's CPU and RSS are sampled into its windows.
  std::chrono::milliseconds sample_interval{5'000};
};

struct proxy_nginx_config {
  /// Where troupe writes nginx's configuration (troupe.conf, included by
  /// the server's nginx.conf) and its candidates; empty: DATA_DIR/nginx.
  std::string conf_dir;
  /// The template each app's upstream and server blocks are rendered from;
  /// empty: the one built in (configs/nginx-app.conf.in).
  std::string template_path;
  /// nginx's main configuration file `nginx -t -c` validates (it includes
  /// conf_dir/troupe.conf); empty: conf_dir/nginx.conf, written by troupe.
  std::string main_conf;
  /// The nginx binary (validation) and the reload command.
  std::string binary = "nginx";
  std::string reload_command;
  /// At most one reload per this interval (changes in between coalesce).
  std::chrono::milliseconds min_reload_interval{1'000};
  /// HOST:PORT of a server block troupe renders with nginx's stub_status
  /// (the connection gauges); empty: none.
  std::string status_listen = "127.0.0.1:8081";
};

/// The built-in proxy (or nginx, mode nginx): how apps are reached.
struct proxy_config {
  /// builtin: troupe's own proxy; nginx: troupe writes and reloads nginx's config.
  std::string mode = "builtin";
  /// HOST:PORT of the shared listener; empty turns the proxy off.
  std::string listen = "127.0.0.1:8080";
  int io_threads = 1;
  /// No response header (or no further body byte) from an instance this long: 504.
  std::chrono::milliseconds upstream_timeout{60'000};
  std::chrono::milliseconds connect_timeout{5'000};
  /// Consecutive connect failures that eject an instance, and for how long.
  int max_fails = 3;
  int eject_seconds = 10;
  /// Client connections held at most (further ones are closed at once).
  int max_connections = 10'000;
  /// A client connection idle this long between requests is closed; its
  /// request header must arrive within header_timeout.
  std::chrono::milliseconds client_idle_timeout{75'000};
  std::chrono::milliseconds header_timeout{10'000};
  uint64_t max_header_bytes = 16 * 1024;
  /// Idle keep-alive connections kept per instance, and how long.
  int upstream_keepalive = 32;
  std::chrono::milliseconds upstream_idle_timeout{60'000};
  /// Adds `Via: 1.1 troupe` both ways.
  bool via = false;
  proxy_nginx_config nginx;

  bool enabled() const { return !listen.empty(); }
};

struct debug_config {
  /// Enables `POST /debug/crash/{actor}` (for tests and chaos drills).
  bool fault_injection = false;
};

/// The whole validated configuration of one node.
struct config {
  /// Node name (default: the host name).
  std::string node_name;
  /// HOST:PORT to listen on; port 0 picks a free port.
  std::string listen = "127.0.0.1:8000";
  /// Where LMDB and workspaces live.
  std::string data_dir = "./data";
  log_config log;
  auth_config auth;
  http_config http;
  store_config store;
  supervisor_config supervisor;
  jobs_config jobs;
  logs_config logs;
  metrics_config metrics;
  apps_config apps;
  proxy_config proxy;
  debug_config debug;

  /// Host part of `listen`.
  std::string listen_host() const;
  /// Port part of `listen`.
  uint16_t listen_port() const;
};

/// Where configuration comes from, in increasing precedence.
struct config_sources {
  /// YAML file; empty: `TROUPE_CONFIG`, else no file (built-in defaults).
  std::string file;
  /// Environment as NAME=VALUE (normally `environ`); only TROUPE_* are read.
  std::vector<std::string> environment;
  /// Path of a dotenv file to read (`.env` in the working directory by default);
  /// its variables fill in what `environment` does not set.
  std::string dotenv = ".env";
  /// Flags as dotted key → raw value, e.g. {"listen", "127.0.0.1:0"}.
  std::map<std::string, std::string> flags;
};

/// Loads, merges and validates all but the rules of layers above this one
/// (runtime/config_checks.hpp adds those). Throws config_error.
config load_config(const config_sources& src);

/// The current process environment as NAME=VALUE strings.
std::vector<std::string> process_environment();

/// Describes every key with its type, built-in default and meaning (for --help
/// and docs); configured values (tokens, passwords) are never shown.
std::string describe_config_keys();

/// Parses API tokens from YAML or JSON text: a list of {name, token, roles}
/// (with `tokens_key`, also a mapping whose `tokens:` holds the list; empty
/// text or null: none). Throws config_error whose path names the element,
/// e.g. `auth.tokens[1].roles` for `where` "auth.tokens"; no error ever
/// contains a token. Names and token strength are checked by the token table
/// (http::token_table), not here.
std::vector<auth_token> parse_auth_tokens(std::string_view text, const std::string& where,
                                          bool tokens_key = false);

/// An inclusive range of TCP ports.
struct port_range {
  uint16_t first = 0;
  uint16_t last = 0;
};

/// Parses `FIRST-LAST` (1 <= FIRST <= LAST <= 65535, e.g. "20000-29999");
/// nullopt with `why` set otherwise.
std::optional<port_range> parse_port_range(std::string_view text, std::string* why = nullptr);

/// True for hosts only this machine reaches: 127.0.0.0/8, ::1 (also as
/// ::ffff:127.x.y.z) and localhost. `host` is without brackets and port.
bool is_loopback_host(std::string_view host);

} // namespace troupe
