#include "runtime/runtime.hpp"

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/apps/app_manager.hpp"
#include "actors/autoscale/autoscaler.hpp"
#include "actors/core/event_bus.hpp"
#include "actors/core/http_bridge.hpp"
#include "actors/core/names.hpp"
#include "actors/core/node_supervisor.hpp"
#include "actors/core/reader_pool.hpp"
#include "actors/core/store.hpp"
#include "actors/jobs/job.hpp"
#include "actors/jobs/job_controller.hpp"
#include "actors/logs/log_batcher.hpp"
#include "actors/logs/log_router.hpp"
#include "actors/metrics/metrics.hpp"
#include "actors/metrics/metrics_exporter.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "actors/traffic/nginx_traffic.hpp"
#include "actors/traffic/traffic.hpp"
#include "http/api/app_routes.hpp"
#include "http/api/core_routes.hpp"
#include "http/api/job_routes.hpp"
#include "http/api/log_routes.hpp"
#include "http/api/metrics_routes.hpp"
#include "http/server.hpp"
#include "persistence/jobs.hpp"
#include "persistence/lmdb_env.hpp"
#include "runtime/auth_tokens.hpp"
#include "runtime/config_checks.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/host.hpp"
#include "runtime/ground/logging.hpp"
#include "runtime/ground/process.hpp"
#include "runtime/traffic_node.hpp"
#include "troupe/build_info.hpp"

namespace troupe {

namespace {

struct node_system_config : caf::actor_system_config {
  node_system_config() {
    add_troupe_types(*this);
    // Work sharing: idle workers block on a condition variable. CAF's default
    // work stealing polls with 50 us sleeps after every job, which under a
    // steady trickle of small messages (500 instances' health checks) burned
    // two thirds of troupe's CPU: 38 % of a core against 12 % for 300
    // instances, with jobs/s, log lines/s and GET /jobs/{id} no slower
    // (benchmarks/apps.sh, jobs.sh, logs.sh, http_healthz.sh, 2026-12-07).
    set("scheduler.policy", caf::atom("sharing"));
  }
};

/// Holds an exclusive flock on DATA_DIR/LOCK for the life of the node, so two
/// daemons never share a data dir.
class data_dir_lock {
public:
  explicit data_dir_lock(const std::string& dir) {
    auto path = dir + "/LOCK";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0)
      throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    // One written by an older troupe may be readable by others.
    ::fchmod(fd_, 0600);
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char buf[32] = {};
      auto n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
      ::close(fd_);
      throw std::runtime_error("data dir " + dir + " is in use by another troupe process" +
                               (n > 0 ? std::string{" (pid "} + buf + ")" : std::string{}));
    }
    auto pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) == 0)
      (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
  }
  ~data_dir_lock() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  data_dir_lock(const data_dir_lock&) = delete;
  data_dir_lock& operator=(const data_dir_lock&) = delete;

private:
  int fd_ = -1;
};

/// The data dir and DATA_DIR/workspaces with their modes (host::ensure_dir),
/// logging a mode that had to change.
void prepare_dir(const std::string& dir, const host::dir_access& access,
                 const std::shared_ptr<spdlog::logger>& log) {
  std::optional<mode_t> had;
  try {
    had = host::ensure_dir(dir, access);
  } catch (const std::system_error& e) {
    throw std::runtime_error(e.what());
  }
  if (had)
    log->info("{}: mode changed from {} to {}{}", dir, host::octal(*had), host::octal(access.mode),
              access.mode == 0700 ? " (troupe's alone)"
                                  : " (jobs.user may pass through to its workspace)");
}

/// Removes what a crash left under DATA_DIR/workspaces between creating a
/// workspace and committing its job: every entry no stored job claims. Runs
/// before the actors start, so no job or upload uses the directory yet.
void sweep_orphan_workspaces(const std::string& dir, const persistence::lmdb_env& env,
                             const std::shared_ptr<spdlog::logger>& log) {
  size_t removed = 0;
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator{dir, ec}) {
    auto id = entry.path().filename().string();
    auto rec = persistence::get_job(env, id);
    if (rec && !rec->workspace.empty())
      continue;
    std::error_code rm;
    std::filesystem::remove_all(entry.path(), rm);
    if (rm)
      log->warn("could not remove orphan workspace {}: {}", entry.path().string(), rm.message());
    else
      ++removed;
  }
  if (ec)
    log->warn("could not list {}: {}", dir, ec.message());
  log->info("removed {} orphan workspace(s) under {}", removed, dir);
}

/// The risks of who troupe and its jobs run as, said once at start.
void check_job_user(const config& cfg, const std::string& workspaces,
                    const std::shared_ptr<spdlog::logger>& log) {
  auto& who = cfg.jobs.identity;
  if (::geteuid() == 0 && !who) {
    log->warn("troupe runs as root and jobs.user is not set: jobs run as root and can read the "
              "store, the token file and the daemon's secrets (its environment and config); "
              "set jobs.user (e.g. nobody)");
    return;
  }
  if (!who || !who->switches)
    return;
  if (auto blocked = host::blocked_on_the_way(workspaces, *who); !blocked.empty())
    log->warn("jobs run as {} but {} does not let that user pass, so they cannot enter their "
              "workspaces under {}: choose a data_dir it can reach",
              who->user, blocked, workspaces);
  else
    log->info("jobs run as user {} (uid {}, gid {})", who->user, who->uid, who->gid);
}

/// Splits a comma-separated config list.
std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < list.size()) {
    auto comma = list.find(',', pos);
    if (comma == std::string::npos)
      comma = list.size();
    if (comma > pos)
      out.push_back(list.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

/// Raises the soft descriptor limit to the hard one and derives how many
/// connections may be open, keeping http.reserved_fds for jobs, the store
/// and sinks: a flood of connections can then never make a job fail to spawn.
size_t connection_limit(const http_config& cfg, const std::shared_ptr<spdlog::logger>& log) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    auto raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0)
      lim = raised;
  }
  auto fds = lim.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : uint64_t{lim.rlim_cur};
  auto reserved = static_cast<uint64_t>(cfg.reserved_fds);
  uint64_t limit = cfg.max_connections > 0 ? static_cast<uint64_t>(cfg.max_connections)
                   : fds > reserved + 16   ? fds - reserved
                                           : 16;
  if (cfg.max_connections > 0 && limit + reserved > fds)
    log->warn("http.max_connections ({}) plus http.reserved_fds ({}) exceed the descriptor limit "
              "({}): a flood of connections may starve jobs of descriptors",
              limit, reserved, fds);
  return static_cast<size_t>(limit);
}

} // namespace

namespace {

/// What the apps wing shares on this node.
std::shared_ptr<apps_env> make_apps_env(const config& cfg,
                                        std::shared_ptr<persistence::lmdb_env> env,
                                        std::shared_ptr<process::io> io) {
  auto ctx = std::make_shared<apps_env>();
  ctx->env = std::move(env);
  ctx->io = std::move(io);
  ctx->cfg = cfg.apps;
  ctx->node_name = cfg.node_name;
  ctx->ports =
      std::make_shared<shared_ports>(port_allocator{*parse_port_range(cfg.apps.port_range)});
  // Instances inherit what jobs do (never TROUPE_* settings).
  ctx->base_env = inherited_environment(process_environment(), cfg.jobs.inherit_env);
  // Instances without a workingDir run in a directory of their own, not the store's.
  ctx->work_dir = cfg.data_dir + "/apps";
  std::error_code ec;
  std::filesystem::create_directories(ctx->work_dir, ec);
  apps::prober_limits pl;
  pl.max_concurrent = static_cast<uint32_t>(cfg.apps.max_concurrent_probes);
  pl.max_response_bytes = cfg.apps.max_probe_response_bytes;
  ctx->probes = apps::make_prober(*ctx->io, pl);
  auto ceiling = apps::parse_limit_mechanism(cfg.apps.limits);
  ctx->limits = apps::detect_limit_host(ceiling.value_or(apps::limit_mechanism::cgroup_v2));
  ctx->backoff = {cfg.apps.restart_backoff_initial, cfg.apps.restart_backoff_max,
                  cfg.apps.restart_backoff_reset};
  return ctx;
}

} // namespace

struct runtime::impl {
  explicit impl(config c) : cfg(std::move(c)) {}

  config cfg;
  std::string address;
  std::unique_ptr<data_dir_lock> lock;
  std::unique_ptr<auth::api_tokens> tokens;
  std::shared_ptr<persistence::lmdb_env> env;
  std::shared_ptr<process::io> proc_io;
  std::unique_ptr<node_system_config> sys_cfg;
  std::unique_ptr<caf::actor_system> sys;
  node_supervisor_actor supervisor;
  std::vector<http_bridge_actor> bridges;
  std::shared_ptr<reader_pool> readers;
  std::atomic<size_t> next_bridge{0};
  std::unique_ptr<http::server> server;
  /// The built-in proxy (null: off or nginx mode); its io threads find the
  /// actor system through the slot.
  std::shared_ptr<http::proxy_server> proxy;
  system_slot sys_slot = std::make_shared<std::atomic<caf::actor_system*>>(nullptr);
  std::shared_ptr<spdlog::logger> log = logging::get("node");

  std::mutex mtx;
  std::condition_variable cv;
  bool stop_requested = false;
  int exit_code = 0;
  std::string stop_reason;
  std::atomic<bool> stopping{false};
  std::atomic<bool> started{false};
  std::atomic<bool> supervisor_alive{false};

  /// Publishes an event and waits for its commit (main thread only). A bus
  /// that is restarting under its supervisor is waited for, up to 10 s.
  bool publish(const std::string& type, const nlohmann::json& data) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::string last_error = "event bus is not running";
    while (supervisor_alive) {
      if (auto bus = lookup(*sys, names::event_bus)) {
        caf::scoped_actor self{*sys};
        bool ok = false;
        self->request(*bus, std::chrono::seconds(10), publish_atom::value,
                      make_event(type, data.dump()))
            .receive([&](uint64_t) { ok = true; },
                     [&](caf::error& err) { last_error = caf::to_string(err); });
        if (ok)
          return true;
      }
      if (std::chrono::steady_clock::now() >= deadline)
        break;
      // The supervisor restarts the bus after its backoff; look again soon.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    log->error("could not publish {}: {}", type, last_error);
    return false;
  }
};

runtime::runtime(config cfg) : impl_(std::make_unique<impl>(std::move(cfg))) {}

runtime::~runtime() {
  if (impl_->started && !impl_->stopping) {
    request_stop(0, "runtime destroyed");
    run_until_stopped();
  }
  // Detached readers would keep the actor system waiting (a start that threw).
  if (impl_->readers)
    impl_->readers->stop();
  // Actors may still hold HTTP exchanges (and so sessions) and the
  // environment: the actor system goes first, then the servers, then LMDB.
  impl_->sys_slot->store(nullptr);
  impl_->sys.reset();
  impl_->proxy.reset();
  impl_->server.reset();
  impl_->proc_io.reset();
  impl_->env.reset();
}

void runtime::start() {
  auto& d = *impl_;
  auto& cfg = d.cfg;
  check_config(cfg); // a host program may hand over a config from load_config
  logging::setup(cfg.log.level, cfg.log.format);
  // Tokens are read before anything is bound: a bad tokens file is a config error.
  d.tokens = std::make_unique<auth::api_tokens>(cfg.auth);
  // Bind first: the first log line names the bound address (port 0 → any).
  auto ctx = std::make_shared<node_context>();
  ctx->cfg = &d.cfg;
  auto routes = std::make_shared<http::router>();
  add_node_routes(*routes, ctx);
  add_log_routes(*routes, ctx);
  add_job_routes(*routes, ctx);
  add_app_routes(*routes, ctx);
  add_metrics_routes(*routes, ctx);
  http::server_options opts;
  // Request metrics: one short lock per request on the io thread; the
  // metrics registry drains the recorder on its tick.
  auto recorder = std::make_shared<metrics::recorder>(cfg.metrics.relative_accuracy,
                                                      static_cast<size_t>(cfg.metrics.max_series));
  auto activity_ns = std::make_shared<std::atomic<int64_t>>(0);
  opts.on_answered = [recorder, activity_ns, quiet = opts.quiet_routes,
                      duration = metrics::find_family("http.request.duration"),
                      latency = metrics::find_family("http.request.latency")](
                         const http::request& req, const std::string& route, unsigned status,
                         double seconds) {
    // Reused per io thread: no allocation per request once warm.
    thread_local std::vector<std::string> labels(3);
    labels[0].assign(metrics::method_label(req.method));
    labels[1].assign(route.empty() ? std::string_view{"unmatched"} : std::string_view{route});
    char digits[8];
    auto end = std::to_chars(digits, digits + sizeof(digits), status).ptr;
    labels[2].assign(digits, end);
    recorder->observe(*duration, labels, seconds);
    if (route == "/monitoring/system" ||
        std::find(quiet.begin(), quiet.end(), route) != quiet.end())
      return;
    static const std::vector<std::string> none;
    recorder->observe(*latency, none, seconds);
    activity_ns->store(now_ns(), std::memory_order_relaxed);
  };
  opts.io_threads = cfg.http.io_threads;
  opts.max_json_bytes = cfg.http.max_json_bytes;
  // A multipart upload carries the archive, the spec and the framing.
  opts.max_upload_bytes = cfg.jobs.max_archive_bytes + cfg.http.max_json_bytes + 64 * 1024;
  opts.upload_dir = cfg.data_dir + "/uploads";
  opts.request_timeout = cfg.http.request_timeout;
  opts.header_timeout = cfg.http.header_timeout;
  opts.max_request_duration = cfg.http.max_request_duration;
  opts.sse_ping_interval = cfg.http.sse_ping_interval;
  opts.sse_queue_limit = static_cast<size_t>(cfg.http.sse_queue_limit);
  opts.sse_queue_bytes = cfg.http.sse_queue_bytes;
  opts.auth = d.tokens->authenticator();
  opts.max_connections = connection_limit(cfg.http, d.log);
  opts.allowed_origins = split_list(cfg.http.allowed_origins);
  opts.allowed_hosts = split_list(cfg.http.allowed_hosts);
  opts.rate_limit = cfg.http.rate_limit.requests_per_second;
  opts.rate_burst = cfg.http.rate_limit.burst;
  opts.tls_cert_file = cfg.http.tls.cert_file;
  opts.tls_key_file = cfg.http.tls.key_file;
  d.server = std::make_unique<http::server>(opts, routes);
  d.address = d.server->bind(cfg.listen_host(), cfg.listen_port());
  d.log->info("listening on {}", d.address);
  d.proxy = start_proxy(cfg, recorder, d.sys_slot);
  if (cfg.auth.mode == "none")
    d.log->warn("auth.mode is none: every client that reaches {} is admin", d.address);
  // Storage: private to troupe (jobs.user may only pass through to its
  // workspace), the store within it 0700 with 0600 files.
  auto access = host::shared_dir_access(cfg.jobs.identity);
  prepare_dir(cfg.data_dir, access, d.log);
  d.lock = std::make_unique<data_dir_lock>(cfg.data_dir);
  // Under the lock: two daemons never race to create DATA_DIR/token.
  if (d.tokens->needs_generated_token())
    d.tokens->use_data_dir_token(cfg.data_dir);
  d.env = persistence::lmdb_env::open(cfg.data_dir + "/store", cfg.store.map_size_bytes);
  d.log->info("store opened at {}/store (schema version {})", cfg.data_dir,
              persistence::schema_version);
  auto workspaces = cfg.data_dir + "/workspaces";
  prepare_dir(workspaces, access, d.log);
  check_job_user(cfg, workspaces, d.log);
  sweep_orphan_workspaces(workspaces, *d.env, d.log);
  // Uploads left by a previous process are incomplete or already extracted.
  std::error_code fs_err;
  std::filesystem::remove_all(cfg.data_dir + "/uploads", fs_err);
  if (fs_err || ::mkdir((cfg.data_dir + "/uploads").c_str(), 0700) != 0)
    throw std::runtime_error("cannot create " + cfg.data_dir +
                             "/uploads: " + (fs_err ? fs_err.message() : std::strerror(errno)));
  d.proc_io = std::make_shared<process::io>();
  auto jobs_ctx = std::make_shared<job_env>();
  jobs_ctx->env = d.env;
  jobs_ctx->io = d.proc_io;
  jobs_ctx->cfg = cfg.jobs;
  jobs_ctx->node_name = cfg.node_name;
  jobs_ctx->metrics_accuracy = cfg.metrics.relative_accuracy;
  jobs_ctx->log_retention = cfg.logs.retention;
  jobs_ctx->log_max_bytes = std::min(cfg.logs.max_bytes, cfg.store.map_size_bytes / 2);
  // Gauges that actors keep (job queue, Loki lag), sampled by the registry.
  auto gauges = std::make_shared<metrics::gauge_board>();
  jobs_ctx->gauges = gauges;
  jobs_ctx->base_env = inherited_environment(process_environment(), cfg.jobs.inherit_env);
  // Actors.
  d.sys_cfg = std::make_unique<node_system_config>();
  d.sys = std::make_unique<caf::actor_system>(*d.sys_cfg);
  d.sys_slot->store(d.sys.get());
  auto env = d.env;
  auto node_name = cfg.node_name;
  std::vector<child_spec> children{
      make_child(names::store,
                 [env](caf::actor_system& sys) {
                   // Detached: LMDB commits fsync and must not stall a scheduler thread.
                   return sys.spawn<caf::detached>(store, env);
                 }),
      make_child(names::event_bus,
                 [node_name](caf::actor_system& sys) { return sys.spawn(event_bus, node_name); }),
      make_child(names::logs,
                 [logs_cfg = cfg.logs, node_name,
                  json = cfg.log.format == "json"](caf::actor_system& sys) {
                   return sys.spawn(log_router, logs_cfg, node_name, json);
                 }),
  };
  auto* server_ptr = d.server.get();
  std::vector<metric_source> metric_sources{
      [recorder] { return recorder->take(); }, [gauges] { return gauges->read(); },
      [server_ptr, activity_ns] {
        metric_deltas out{
            gauge_delta("http.active_requests", {}, static_cast<double>(server_ptr->in_flight())),
            gauge_delta("sse.connections", {}, static_cast<double>(server_ptr->sse_streams()))};
        // Sent every tick, not only on change: a restarted registry learns it
        // again at once (it keeps the maximum).
        if (auto t = activity_ns->load(std::memory_order_relaxed); t > 0)
          out.push_back(gauge_delta("troupe.last_activity", {}, static_cast<double>(t) / 1e9));
        return out;
      }};
  if (cfg.metrics.mode == "proxy")
    metric_sources.clear(); // proxy mode re-exports upstreams instead of local series
  children.push_back(make_child(names::metrics, [metrics_cfg = cfg.metrics, node_name,
                                                 metric_sources](caf::actor_system& sys) {
    return sys.spawn(metrics_registry, metrics_cfg, node_name, metric_sources);
  }));
  if (cfg.metrics.mode != "local" || !cfg.metrics.pushgateway.url.empty()) {
    ctx->exporter_board = std::make_shared<exporter_status>();
    children.push_back(
        make_child(names::exporter, [metrics_cfg = cfg.metrics,
                                     board = ctx->exporter_board](caf::actor_system& sys) {
          // Detached: Redis and HTTP calls block.
          return sys.spawn<caf::detached>(metrics_exporter, metrics_cfg, true, board);
        }));
  }
  if (!cfg.logs.loki.url.empty())
    children.push_back(
        make_child(names::loki, [env, loki_cfg = cfg.logs.loki, gauges](caf::actor_system& sys) {
          // Detached: pushes are blocking HTTP calls.
          return sys.spawn<caf::detached>(log_batcher, env, loki_cfg, gauges);
        }));
  children.push_back(make_child(names::jobs, [jobs_ctx](caf::actor_system& sys) {
    return sys.spawn(job_controller, std::shared_ptr<const job_env>{jobs_ctx});
  }));
  if (d.proxy)
    // Before the apps: they tell it their ready instances from the start.
    children.push_back(make_child(
        names::traffic, [proxy = d.proxy, tick = cfg.metrics.sample_interval](
                            caf::actor_system& sys) { return sys.spawn(traffic, proxy, tick); }));
  if (cfg.proxy.enabled() && cfg.proxy.mode == "nginx") {
    // nginx mode: troupe renders, validates and reloads nginx's config.
    auto conf_dir =
        cfg.proxy.nginx.conf_dir.empty() ? cfg.data_dir + "/nginx" : cfg.proxy.nginx.conf_dir;
    std::error_code ec;
    std::filesystem::create_directories(conf_dir, ec);
    if (ec)
      throw std::runtime_error("cannot create proxy.nginx.conf_dir " + conf_dir + ": " +
                               ec.message());
    children.push_back(make_child(
        names::traffic, [proxy_cfg = cfg.proxy, conf_dir, recorder](caf::actor_system& sys) {
          // Detached: it runs nginx -t and the reload and waits for them.
          return sys.spawn<caf::detached>(nginx_traffic, proxy_cfg, conf_dir, recorder);
        }));
  }
  auto apps_ctx = make_apps_env(cfg, d.env, d.proc_io);
  apps_ctx->autoscaler = [](caf::actor_system& sys, const std::string& app,
                            const app_scaling_policy& policy, const autoscale::bounds& limits) {
    // LLEN blocks (bounded): an autoscaler with a Redis queue has a thread.
    if (policy.queue_redis)
      return sys.spawn<caf::detached>(autoscaler, app, policy, limits);
    return sys.spawn(autoscaler, app, policy, limits);
  };
  children.push_back(make_child(names::apps, [apps_ctx](caf::actor_system& sys) {
    return sys.spawn(app_manager, std::shared_ptr<const apps_env>{apps_ctx});
  }));
  d.supervisor = d.sys->spawn(node_supervisor, cfg.supervisor, std::move(children));
  d.supervisor_alive = true;
  {
    // The supervisor answers once it has started (and registered) its children.
    caf::scoped_actor self{*d.sys};
    self->request(d.supervisor, std::chrono::seconds(10), status_atom::value)
        .receive([](component_status&) {},
                 [](caf::error& err) {
                   throw std::runtime_error("node supervisor did not start: " +
                                            caf::to_string(err));
                 });
  }
  // troupe's own lines join the pipeline (the pipeline's and the store's own
  // loggers excepted: a failing store would otherwise feed itself its errors).
  auto* sys_ptr = d.sys.get();
  logging::start_capture(16384,
                         [sys_ptr] {
                           if (auto router = lookup(*sys_ptr, names::logs))
                             caf::anon_send(*router, drain_atom::value);
                         },
                         {"logs", "loki", "store"});
  auto* raw = impl_.get();
  caf::actor_cast<caf::abstract_actor*>(d.supervisor)
      ->attach_functor([raw](const caf::error& reason) {
        raw->supervisor_alive = false;
        if (reason && reason != caf::exit_reason::normal) {
          std::unique_lock<std::mutex> guard{raw->mtx};
          if (!raw->stop_requested) {
            raw->stop_requested = true;
            raw->exit_code = exit_escalated;
            raw->stop_reason = "node supervisor gave up: " + caf::to_string(reason);
            raw->cv.notify_all();
          }
        }
      });
  for (int i = 0; i < cfg.http.io_threads; ++i)
    d.bridges.push_back(d.sys->spawn(http_bridge));
  d.readers = std::make_shared<reader_pool>(*d.sys, static_cast<size_t>(cfg.http.read_workers),
                                            static_cast<size_t>(cfg.http.read_queue));
  ctx->readers = d.readers;
  ctx->sys = d.sys.get();
  ctx->env = d.env;
  // After shutdown the bridges are gone; tasks sent to an invalid handle are
  // dropped and their exchanges answer 500.
  ctx->bridge = [raw]() -> http_bridge_actor {
    if (raw->bridges.empty())
      return {};
    return raw->bridges[raw->next_bridge++ % raw->bridges.size()];
  };
  ctx->stopping = [raw] { return raw->stopping.load(); };
  d.server->start();
  d.started = true;
  nlohmann::json data{{"address", d.address},
                      {"pid", ::getpid()},
                      {"version", build_info::version},
                      {"data_dir", cfg.data_dir}};
  if (!d.publish("node.started", data))
    throw std::runtime_error("could not record the node.started event in the store");
  d.log->info("node {} started (troupe {}, pid {})", cfg.node_name, build_info::version,
              ::getpid());
}

const std::string& runtime::address() const {
  return impl_->address;
}

bool runtime::reload_tokens() {
  return impl_->tokens != nullptr && impl_->tokens->reload();
}

void runtime::request_stop(int exit_code, std::string reason) {
  std::unique_lock<std::mutex> guard{impl_->mtx};
  if (impl_->stop_requested)
    return;
  impl_->stop_requested = true;
  impl_->exit_code = exit_code;
  impl_->stop_reason = std::move(reason);
  impl_->cv.notify_all();
}

int runtime::run_until_stopped() {
  auto& d = *impl_;
  {
    std::unique_lock<std::mutex> guard{d.mtx};
    d.cv.wait(guard, [&] { return d.stop_requested; });
  }
  if (d.stopping.exchange(true))
    return d.exit_code;
  if (d.exit_code == 0)
    d.log->info("shutting down: {}", d.stop_reason);
  else
    d.log->error("shutting down: {}", d.stop_reason);
  if (d.supervisor_alive)
    d.publish("node.shutting_down", nlohmann::json{{"reason", d.stop_reason}});
  // Stop taking requests and let in-flight ones finish while actors still run.
  if (d.server)
    d.server->stop(d.cfg.http.shutdown_grace);
  if (d.supervisor_alive) {
    caf::scoped_actor self{*d.sys};
    self->request(d.supervisor, std::chrono::seconds(30), shutdown_atom::value)
        .receive([](ok_atom) {},
                 [&](caf::error& err) {
                   d.log->error("supervisor shutdown failed: {}", caf::to_string(err));
                 });
  }
  // The apps are stopped: nothing is left to route to.
  if (d.proxy)
    d.proxy->stop();
  logging::stop_capture();
  for (auto& b : d.bridges)
    caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
  if (d.readers)
    d.readers->stop();
  if (d.supervisor)
    caf::anon_send_exit(d.supervisor, caf::exit_reason::user_shutdown);
  d.supervisor = nullptr;
  d.log->info("stopped (exit code {})", d.exit_code);
  return d.exit_code;
}

bool runtime::ready() const {
  return impl_->started && !impl_->stopping && impl_->supervisor_alive;
}

caf::actor_system& runtime::system() {
  return *impl_->sys;
}

const config& runtime::cfg() const {
  return impl_->cfg;
}

const std::shared_ptr<persistence::lmdb_env>& runtime::env() const {
  return impl_->env;
}

namespace {

/// The signals the sigwait thread takes: stop (INT, TERM) and reload (HUP).
sigset_t node_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

} // namespace

void block_stop_signals() {
  std::signal(SIGPIPE, SIG_IGN);
  auto set = node_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void handle_stop_signals(runtime& rt) {
  std::thread([&rt] {
    auto set = node_signals();
    int received = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0)
        continue;
      if (sig == SIGHUP) {
        rt.reload_tokens(); // logs what it did
        continue;
      }
      auto name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
      if (++received == 1) {
        rt.request_stop(0, std::string{"received "} + name);
      } else {
        logging::get("node")->warn("second {} received: exiting immediately", name);
        std::_Exit(1);
      }
    }
  }).detach();
}

} // namespace troupe
