#include "actors/traffic/nginx_traffic.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/metrics/metrics.hpp"
#include "actors/traffic/traffic.hpp"
#include "runtime/ground/logging.hpp"
#include "runtime/ground/process.hpp"

namespace troupe {

namespace {

using self_ptr = traffic_actor::stateful_pointer<nginx_traffic_state>;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("proxy");
}

/// Runs `argv` to its end (this actor is detached); its exit code and
/// stdout+stderr (the first 8 KiB).
std::pair<int, std::string> run(const std::vector<std::string>& argv) {
  process::spawn_options o;
  o.argv = argv;
  o.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  o.cwd = "/";
  process::child c;
  try {
    c = process::spawn(o);
  } catch (const std::exception& e) {
    return {-1, e.what()};
  }
  // Both pipes at once: a child that fills one while troupe waits on the
  // other would never end.
  std::string out;
  char buf[4096];
  pollfd fds[2] = {{c.out_fd, POLLIN, 0}, {c.err_fd, POLLIN, 0}};
  int open = 2;
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    for (auto& p : fds) {
      if (p.fd < 0 || p.revents == 0)
        continue;
      auto n = ::read(p.fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        ::close(p.fd);
        p.fd = -1;
        --open;
        continue;
      }
      if (out.size() < 8192)
        out.append(buf, static_cast<size_t>(n));
    }
  }
  for (auto& p : fds)
    if (p.fd >= 0)
      ::close(p.fd);
  if (c.pidfd >= 0)
    ::close(c.pidfd);
  int status = 0;
  while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;)
    out.push_back(w);
  return out;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

bool write_file(const std::string& path, const std::string& text) {
  auto tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush())
      return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// -- nginx's processes ----------------------------------------------------------

std::optional<std::string> slurp(const std::string& path) {
  return read_file(path);
}

/// The parent's pid and the state letter of /proc/PID/stat; nullopt if the
/// process is gone.
std::optional<std::pair<int, char>> proc_stat(int pid) {
  auto text = slurp("/proc/" + std::to_string(pid) + "/stat");
  if (!text)
    return std::nullopt;
  auto close = text->rfind(')');
  if (close == std::string::npos || close + 4 >= text->size())
    return std::nullopt;
  char state = (*text)[close + 2];
  return std::make_pair(std::atoi(text->c_str() + close + 4), state);
}

bool alive(int pid) {
  auto s = proc_stat(pid);
  return s && s->second != 'Z' && s->second != 'X';
}

/// The master of the nginx that runs `main_conf` (its title names the file
/// when it was started with -c), else the only nginx master; 0 if none is
/// found.
int nginx_master(const std::string& main_conf) {
  int named = 0, any = 0, masters = 0;
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    auto cmd = slurp(entry.path().string() + "/cmdline");
    if (!cmd || cmd->rfind("nginx: master process", 0) != 0)
      continue;
    int pid = std::atoi(name.c_str());
    ++masters;
    any = pid;
    if (!main_conf.empty() && cmd->find(main_conf) != std::string::npos)
      named = pid;
  }
  return named != 0 ? named : masters == 1 ? any : 0;
}

std::vector<int> children_of(int parent) {
  std::vector<int> out;
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    int pid = std::atoi(name.c_str());
    if (auto s = proc_stat(pid); s && s->first == parent)
      out.push_back(pid);
  }
  return out;
}

// -- metrics ----------------------------------------------------------------------

/// GET http://HOST:PORT/path with a deadline; the body of a 200, else nullopt.
std::optional<std::string> http_get(const std::string& host_port, const std::string& path,
                                    int timeout_ms, std::string* why) {
  auto colon = host_port.rfind(':');
  auto host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[')
    host = host.substr(1, host.size() - 2);
  auto port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
    *why = "cannot resolve " + host_port;
    return std::nullopt;
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int rc = fd < 0 ? -1 : ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (fd < 0 || (rc < 0 && errno != EINPROGRESS)) {
    *why = std::string{"connect: "} + std::strerror(errno);
    if (fd >= 0)
      ::close(fd);
    return std::nullopt;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto wait = [&](short events) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    pollfd p{fd, events, 0};
    return left > 0 && ::poll(&p, 1, static_cast<int>(left)) == 1;
  };
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + host_port + "\r\n\r\n";
  std::string answer;
  bool ok = wait(POLLOUT);
  int err = 0;
  socklen_t len = sizeof(err);
  if (ok && (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0))
    ok = false;
  if (ok)
    ok = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(request.size());
  char buf[4096];
  while (ok && answer.size() < 65536 && wait(POLLIN)) {
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!ok) {
    *why = "no answer from " + host_port + (err != 0 ? std::string{": "} + std::strerror(err) : "");
    return std::nullopt;
  }
  auto end = answer.find("\r\n\r\n");
  if (answer.rfind("HTTP/1.1 200", 0) != 0 || end == std::string::npos) {
    *why = "GET " + path + " on " + host_port + ": " + answer.substr(0, answer.find('\r'));
    return std::nullopt;
  }
  return answer.substr(end + 4);
}

void poll_stub_status(self_ptr self) {
  auto& st = self->state;
  if (st.cfg.nginx.status_listen.empty())
    return;
  std::string why;
  auto body = http_get(st.cfg.nginx.status_listen, "/stub_status", 1000, &why);
  auto s = body ? nginx::parse_stub_status(*body) : std::nullopt;
  if (!s) {
    st.stub_error = body ? "not a stub_status page" : why;
    return;
  }
  st.stub_error.clear();
  st.stub = *s;
  report_metrics(
      self->system(),
      {gauge_delta("proxy.nginx.connections", {"active"}, static_cast<double>(s->active)),
       gauge_delta("proxy.nginx.connections", {"reading"}, static_cast<double>(s->reading)),
       gauge_delta("proxy.nginx.connections", {"writing"}, static_cast<double>(s->writing)),
       gauge_delta("proxy.nginx.connections", {"waiting"}, static_cast<double>(s->waiting))});
}

/// The access log grows by nginx's appends; troupe empties it once it has
/// read this much (nginx writes with O_APPEND, so it goes on at 0).
constexpr uint64_t access_log_keep = 64u << 20;
/// At most this much is read per poll (the rest the next second).
constexpr uint64_t access_log_read_max = 16u << 20;

void account(self_ptr self, std::string_view line) {
  auto& st = self->state;
  auto e = nginx::parse_access_line(line);
  if (!e)
    return;
  ++st.log_lines;
  static const auto* requests = metrics::find_family("apps.requests");
  static const auto* duration = metrics::find_family("apps.request.duration");
  if (st.recorder && requests != nullptr && duration != nullptr) {
    st.recorder->add(*requests, {e->app, std::to_string(e->status)});
    st.recorder->observe(*duration, {e->app}, e->seconds);
  }
  auto& last = st.last_request_ns[e->app];
  last = std::max(last, e->at_ns);
  if (e->status == 503 && st.apps.count(e->app) > 0) {
    auto live = st.live.find(e->app);
    if (live == st.live.end() || live->second.empty())
      ++st.refused_at_zero[e->app];
  }
}

void tail_access_log(self_ptr self) {
  auto& st = self->state;
  if (st.access_log.empty())
    return;
  struct stat sb {};
  if (::stat(st.access_log.c_str(), &sb) != 0)
    return; // nginx creates it on the first reload that names it
  if (st.log_fd < 0 || static_cast<uint64_t>(sb.st_ino) != st.log_inode) {
    if (st.log_fd >= 0)
      ::close(st.log_fd);
    st.log_fd = ::open(st.access_log.c_str(), O_RDONLY | O_CLOEXEC);
    if (st.log_fd < 0)
      return;
    // What an earlier troupe left unread was counted by no one now alive:
    // the file found at start is read from its end, a new one (created,
    // rotated) from its start.
    st.log_offset = st.log_inode == 0 && st.log_at_start ? static_cast<uint64_t>(sb.st_size) : 0;
    st.log_inode = static_cast<uint64_t>(sb.st_ino);
    st.log_partial.clear();
  }
  if (::fstat(st.log_fd, &sb) != 0)
    return;
  if (static_cast<uint64_t>(sb.st_size) < st.log_offset) { // emptied by someone
    st.log_offset = 0;
    st.log_partial.clear();
  }
  char buf[65536];
  uint64_t read_now = 0;
  while (read_now < access_log_read_max) {
    auto n = ::pread(st.log_fd, buf, sizeof(buf), static_cast<off_t>(st.log_offset));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    st.log_offset += static_cast<uint64_t>(n);
    read_now += static_cast<uint64_t>(n);
    std::string_view chunk(buf, static_cast<size_t>(n));
    size_t at = 0;
    for (auto nl = chunk.find('\n'); nl != std::string_view::npos; nl = chunk.find('\n', at)) {
      if (st.log_partial.empty()) {
        account(self, chunk.substr(at, nl - at));
      } else {
        st.log_partial.append(chunk.substr(at, nl - at));
        account(self, st.log_partial);
        st.log_partial.clear();
      }
      at = nl + 1;
    }
    if (st.log_partial.size() + (chunk.size() - at) <= 65536)
      st.log_partial.append(chunk.substr(at));
    else
      st.log_partial.clear(); // no line of troupe's is this long
  }
  if (st.log_offset >= access_log_keep && read_now < access_log_read_max &&
      st.log_partial.empty() && ::truncate(st.access_log.c_str(), 0) == 0)
    st.log_offset = 0;
}

/// Instances a reload took out whose old workers have all exited are gone.
bool still_leaving(self_ptr self, const std::string& app, const std::string& instance) {
  auto& leaving = self->state.leaving;
  auto a = leaving.find(app);
  if (a == leaving.end())
    return false;
  auto i = a->second.find(instance);
  if (i == a->second.end())
    return false;
  auto& pids = i->second;
  pids.erase(std::remove_if(pids.begin(), pids.end(), [](int pid) { return !alive(pid); }),
             pids.end());
  if (!pids.empty())
    return true;
  a->second.erase(i);
  if (a->second.empty())
    leaving.erase(a);
  return false;
}

/// Renders, validates and reloads once; what nginx runs afterwards is
/// either the new rendering or, refused, the previous one.
void apply(self_ptr self) {
  auto& st = self->state;
  st.dirty = false;
  auto tmpl_path =
      st.cfg.nginx.template_path.empty() ? "configs/nginx-app.conf.in" : st.cfg.nginx.template_path;
  auto reject = [&](const std::string& why) {
    ++st.rejected;
    st.last_error = why;
    log()->error("proxy: nginx configuration rejected, the previous one stays live: {}", why);
    publish_traffic_event(self, "proxy.config_rejected",
                          {{"app", st.last_changed}, {"reason", why}, {"template", tmpl_path}});
  };
  auto tmpl = read_file(tmpl_path);
  if (!tmpl) {
    reject("cannot read proxy.nginx.template " + tmpl_path);
    return;
  }
  std::vector<nginx::app_part> parts;
  std::map<std::string, std::set<std::string>> next;
  for (auto& [name, part] : st.apps) {
    parts.push_back(part);
    for (auto& [id, port] : part.ready)
      next[name].insert(id);
  }
  std::string text;
  try {
    text = nginx::render(*tmpl, {st.cfg.listen, st.access_log, st.cfg.nginx.status_listen}, parts);
  } catch (const std::exception& e) {
    reject(e.what());
    return;
  }
  if (text == st.current && next == st.live)
    return;
  auto file = st.conf_dir + "/troupe.conf";
  if (!write_file(file, text)) {
    reject("cannot write " + file);
    return;
  }
  if (!st.access_log.empty() && ::access(st.access_log.c_str(), F_OK) != 0) {
    // Created by troupe (0640), so troupe may empty it once read.
    int fd = ::open(st.access_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0)
      ::close(fd);
  }
  auto [rc, out] = run({st.cfg.nginx.binary, "-t", "-q", "-c", st.cfg.nginx.main_conf});
  if (rc != 0) {
    write_file(file, st.current); // back to what nginx runs
    reject("nginx -t: " + out);
    return;
  }
  auto cmd = st.cfg.nginx.reload_command.empty()
                 ? std::vector<std::string>{st.cfg.nginx.binary, "-s", "reload", "-c",
                                            st.cfg.nginx.main_conf}
                 : words(st.cfg.nginx.reload_command);
  // The workers before the reload finish what they hold and exit; an
  // instance the reload takes out may serve until then.
  auto master = nginx_master(st.cfg.nginx.main_conf);
  auto old_workers = master > 0 ? children_of(master) : std::vector<int>{};
  auto [rrc, rout] = run(cmd);
  if (rrc != 0) {
    write_file(file, st.current);
    reject("reload (" + cmd.front() + "): " + rout);
    return;
  }
  if (master == 0)
    log()->warn("proxy: no nginx master process found for {}; drains do not wait for its old "
                "workers",
                st.cfg.nginx.main_conf);
  for (auto& [app, ids] : st.live)
    for (auto& id : ids)
      if (next[app].count(id) == 0 && !old_workers.empty())
        st.leaving[app][id] = old_workers;
  for (auto& [app, ids] : next)
    if (auto a = st.leaving.find(app); a != st.leaving.end())
      for (auto& id : ids)
        a->second.erase(id);
  st.current = std::move(text);
  st.live = std::move(next);
  st.last_reload = std::chrono::steady_clock::now();
  ++st.reloads;
  log()->info("proxy: nginx reloaded ({} apps)", st.apps.size());
}

/// A tick at `when`, unless one at or before it is pending.
void arm(self_ptr self, std::chrono::steady_clock::time_point when) {
  auto& pending = self->state.pending_ticks;
  if (!pending.empty() && *pending.begin() <= when)
    return;
  pending.insert(when);
  auto now = std::chrono::steady_clock::now();
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(when - now);
  self->delayed_send(self, std::max(delay, std::chrono::milliseconds(0)), tick_atom::value);
}

/// Applies now, or once proxy.nginx.min_reload_interval has passed since
/// the last reload (changes in between coalesce into one).
void schedule(self_ptr self) {
  auto& st = self->state;
  st.dirty = true;
  auto due = st.last_reload + st.cfg.nginx.min_reload_interval;
  if (due <= std::chrono::steady_clock::now())
    apply(self);
  else
    arm(self, due);
}

/// Each tick: the metrics once a second, a coalesced reload when due.
void on_tick(self_ptr self) {
  auto& st = self->state;
  if (!st.pending_ticks.empty())
    st.pending_ticks.erase(st.pending_ticks.begin());
  auto now = std::chrono::steady_clock::now();
  constexpr auto poll_every = std::chrono::seconds(1);
  if (now >= st.last_poll + poll_every) {
    st.last_poll = now;
    st.refused_at_zero.clear();
    tail_access_log(self);
    if (auto apps = lookup(self->system(), names::apps))
      for (auto& [app, n] : st.refused_at_zero)
        self->send(*apps, activate_atom::value, app);
    poll_stub_status(self);
  }
  auto due = st.last_reload + st.cfg.nginx.min_reload_interval;
  if (st.dirty && due <= now)
    apply(self);
  auto next = st.last_poll + poll_every;
  if (st.dirty)
    next = std::min(next, st.last_reload + st.cfg.nginx.min_reload_interval);
  arm(self, next);
}

} // namespace

nginx_traffic_state::~nginx_traffic_state() {
  if (log_fd >= 0)
    ::close(log_fd);
}

traffic_actor::behavior_type
nginx_traffic(traffic_actor::stateful_pointer<nginx_traffic_state> self, proxy_config cfg,
              std::string conf_dir, std::shared_ptr<metrics::recorder> recorder) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.conf_dir = std::move(conf_dir);
  st.recorder = std::move(recorder);
  // Absolute: nginx resolves a relative path against its own prefix.
  std::error_code ec;
  auto log_path = std::filesystem::absolute(st.conf_dir + "/access.json", ec);
  st.access_log = ec ? st.conf_dir + "/access.json" : log_path.lexically_normal().string();
  st.log_at_start = ::access(st.access_log.c_str(), F_OK) == 0;
  st.current = read_file(st.conf_dir + "/troupe.conf").value_or("");
  on_tick(self); // the log's end now; the next tick in a second
  return {
      [self](app_endpoints& x) {
        auto& st = self->state;
        st.last_changed = x.app;
        if (x.deleted) {
          st.apps.erase(x.app);
        } else {
          auto& part = st.apps[x.app];
          part.name = x.app;
          part.expose = rule_of(x);
          part.ready.clear();
          for (auto& e : x.ready)
            part.ready.emplace_back(e.instance, e.port);
        }
        schedule(self);
      },
      [self](in_flight_atom, const std::string& app, const std::string& instance) -> uint32_t {
        // nginx does not tell; an instance still in the live configuration
        // may get requests, one the last reload left out no new ones.
        // A reload left out serves no new ones once the workers from
        // before that reload have exited.
        auto& live = self->state.live;
        auto i = live.find(app);
        if (i != live.end() && i->second.count(instance) > 0)
          return uint32_t{1};
        return still_leaving(self, app, instance) ? uint32_t{1} : uint32_t{0};
      },
      [self](get_atom, const std::string& app) {
        app_traffic out;
        out.app = app;
        if (auto t = self->state.last_request_ns.find(app); t != self->state.last_request_ns.end())
          out.last_request_ns = t->second;
        if (auto i = self->state.live.find(app); i != self->state.live.end())
          for (auto& id : i->second)
            out.instances.push_back({id, 0, 0});
        if (auto i = self->state.refused_at_zero.find(app); i != self->state.refused_at_zero.end())
          out.pending = i->second;
        return out;
      },
      [](ejected_atom, const std::string&, const std::string&) {},
      [self](activate_atom, const std::string& app) {
        if (auto apps = lookup(self->system(), names::apps))
          self->send(*apps, activate_atom::value, app);
      },
      [self](tick_atom) { on_tick(self); },
      [self](status_atom) {
        auto& st = self->state;
        component_status s;
        s.name = nginx_traffic_state::name;
        s.healthy = st.last_error.empty() || st.rejected == 0;
        caf::put(s.fields, "mode", std::string{"nginx"});
        caf::put(s.fields, "reloads", st.reloads);
        caf::put(s.fields, "rejected", st.rejected);
        caf::put(s.fields, "last_error", st.last_error);
        caf::put(s.fields, "access_log", st.access_log);
        caf::put(s.fields, "access_log_lines", st.log_lines);
        if (!st.cfg.nginx.status_listen.empty()) {
          caf::put(s.fields, "stub_status_error", st.stub_error);
          caf::put(s.fields, "active_connections", st.stub.active);
          caf::put(s.fields, "requests", st.stub.requests);
        }
        return s;
      },
  };
}

} // namespace troupe
