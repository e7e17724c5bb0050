#include "actors/traffic/nginx_traffic.hpp"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
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
    text = nginx::render(*tmpl, st.cfg.listen, parts);
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
  auto [rrc, rout] = run(cmd);
  if (rrc != 0) {
    write_file(file, st.current);
    reject("reload (" + cmd.front() + "): " + rout);
    return;
  }
  st.current = std::move(text);
  st.live = std::move(next);
  st.last_reload = std::chrono::steady_clock::now();
  ++st.reloads;
  log()->info("proxy: nginx reloaded ({} apps)", st.apps.size());
}

/// Applies now, or once proxy.nginx.min_reload_interval has passed since
/// the last reload (changes in between coalesce into one).
void schedule(self_ptr self) {
  auto& st = self->state;
  st.dirty = true;
  if (st.scheduled)
    return;
  auto due = st.last_reload + st.cfg.nginx.min_reload_interval;
  auto now = std::chrono::steady_clock::now();
  if (due <= now) {
    apply(self);
    return;
  }
  st.scheduled = true;
  self->delayed_send(self, std::chrono::duration_cast<std::chrono::milliseconds>(due - now),
                     tick_atom::value);
}

} // namespace

traffic_actor::behavior_type
nginx_traffic(traffic_actor::stateful_pointer<nginx_traffic_state> self, proxy_config cfg,
              std::string conf_dir) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.conf_dir = std::move(conf_dir);
  st.current = read_file(st.conf_dir + "/troupe.conf").value_or("");
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
        auto& live = self->state.live;
        auto i = live.find(app);
        return i != live.end() && i->second.count(instance) > 0 ? 1 : 0;
      },
      [self](get_atom, const std::string& app) {
        app_traffic out;
        out.app = app;
        if (auto i = self->state.live.find(app); i != self->state.live.end())
          for (auto& id : i->second)
            out.instances.push_back({id, 0, 0});
        return out;
      },
      [](ejected_atom, const std::string&, const std::string&) {},
      [self](tick_atom) {
        auto& st = self->state;
        st.scheduled = false;
        if (st.dirty)
          apply(self);
      },
      [self](status_atom) {
        auto& st = self->state;
        component_status s;
        s.name = nginx_traffic_state::name;
        s.healthy = st.last_error.empty() || st.rejected == 0;
        caf::put(s.fields, "mode", std::string{"nginx"});
        caf::put(s.fields, "reloads", st.reloads);
        caf::put(s.fields, "rejected", st.rejected);
        caf::put(s.fields, "last_error", st.last_error);
        return s;
      },
  };
}

} // namespace troupe
