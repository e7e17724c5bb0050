#include "actors/traffic/nginx_config.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "runtime/ground/spec_document.hpp"

namespace troupe::nginx {

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

/// `part` without its whole-line comments (the template's documentation
/// names the placeholders too).
std::string without_comments(const std::string& part) {
  std::string out;
  size_t at = 0;
  while (at < part.size()) {
    auto eol = part.find('\n', at);
    auto line = part.substr(at, eol == std::string::npos ? std::string::npos : eol - at + 1);
    auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] != '#')
      out += line;
    at = eol == std::string::npos ? part.size() : eol + 1;
  }
  return out;
}

/// nginx names: letters, digits and '_' ("web-1" → troupe_web_1).
std::string upstream_name(const std::string& app) {
  std::string out = "troupe_";
  for (char c : app)
    out += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '_';
  return out;
}

} // namespace

std::string render(const std::string& tmpl, const render_options& opts,
                   const std::vector<app_part>& apps) {
  auto& listen = opts.listen;
  auto marker = tmpl.find(location_marker);
  if (marker == std::string::npos)
    throw spec_error("proxy.nginx.template", std::string{"has no line '"} + location_marker +
                                                 "' between the upstream and the location part");
  auto upstream_part = without_comments(tmpl.substr(0, marker));
  auto eol = tmpl.find('\n', marker);
  auto location_part =
      without_comments(eol == std::string::npos ? std::string{} : tmpl.substr(eol + 1));
  std::string out = "# Rendered by troupe (proxy.mode: nginx). Do not edit: the next change of "
                    "an app replaces it.\n";
  if (!opts.access_log.empty())
    out += "log_format troupe_json escape=json '{\"app\":\"$troupe_app\",\"status\":\"$status\","
           "\"seconds\":\"$request_time\",\"upstream\":\"$upstream_addr\",\"msec\":\"$msec\"}';\n";
  // Server blocks by listener and host; the shared listener's hostless one
  // is its default server.
  struct server {
    std::string locations;
    bool has_root = false;
  };
  std::map<std::pair<std::string, std::string>, server> servers;
  servers[{listen, ""}]; // the shared listener always exists
  auto host_of_listen = listen.substr(0, listen.rfind(':'));
  for (auto& app : apps) {
    auto up = upstream_name(app.name);
    std::string servers_lines;
    for (auto& [id, port] : app.ready)
      servers_lines += "    server 127.0.0.1:" + std::to_string(port) + "; # " + id + "\n";
    std::string where = listen;
    std::string host;
    std::string location = "/" + app.name + "/";
    std::string uri = "/";
    if (app.expose) {
      auto& e = *app.expose;
      if (e.port != 0)
        where = host_of_listen + ":" + std::to_string(e.port);
      host = e.host;
      auto prefix = e.path_prefix.empty() ? std::string{"/"} : e.path_prefix;
      if (e.strip_prefix) {
        location = prefix.back() == '/' ? prefix : prefix + "/";
        uri = "/";
      } else {
        location = prefix;
        uri.clear();
      }
    }
    std::string loc;
    if (app.ready.empty()) {
      loc = "    location " + location +
            " {\n        default_type application/json;\n        add_header Retry-After 1 "
            "always;\n        return 503 '{\"error\":{\"code\":\"no_ready_instance\","
            "\"message\":\"app " +
            app.name + " has no ready instance\"}}';\n    }\n";
    } else {
      auto u = upstream_part;
      replace_all(u, "@SERVERS@", servers_lines.substr(0, servers_lines.size() - 1));
      replace_all(u, "@UPSTREAM@", up);
      replace_all(u, "@APP@", app.name);
      out += u;
      loc = location_part;
      replace_all(loc, "@LOCATION@", location);
      replace_all(loc, "@URI@", uri);
      replace_all(loc, "@UPSTREAM@", up);
      replace_all(loc, "@APP@", app.name);
    }
    if (!opts.access_log.empty()) {
      // The app's name for the access log, first in its location.
      auto brace = loc.find("{\n");
      if (brace != std::string::npos)
        loc.insert(brace + 2, "        set $troupe_app \"" + app.name + "\";\n");
    }
    auto& srv = servers[{where, host}];
    srv.locations += loc;
    srv.has_root = srv.has_root || location == "/";
  }
  for (auto& [key, srv] : servers) {
    auto& [where, host] = key;
    out += "server {\n    listen " + where + (host.empty() ? " default_server" : "") + ";\n" +
           "    server_name " + (host.empty() ? std::string{"_"} : host) + ";\n";
    if (!opts.access_log.empty())
      out += "    set $troupe_app \"\";\n    access_log " + opts.access_log + " troupe_json;\n";
    if (!srv.has_root)
      out += "    location / {\n        default_type application/json;\n        return 404 "
             "'{\"error\":{\"code\":\"no_route\",\"message\":\"no app is exposed here\"}}';\n"
             "    }\n";
    out += srv.locations + "}\n";
  }
  if (!opts.status_listen.empty())
    out += "server {\n    listen " + opts.status_listen +
           ";\n    access_log off;\n    location = /stub_status {\n        stub_status;\n    }\n"
           "    location / {\n        return 404;\n    }\n}\n";
  return out;
}

std::optional<access_entry> parse_access_line(std::string_view line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return std::nullopt;
  auto text = [&](const char* key) {
    auto i = j.find(key);
    return i != j.end() && i->is_string() ? i->get<std::string>() : std::string{};
  };
  access_entry e;
  e.app = text("app");
  if (e.app.empty())
    return std::nullopt;
  try {
    e.status = std::stoi(text("status"));
    e.seconds = std::stod(text("seconds"));
    // $msec: seconds with millisecond resolution.
    e.at_ns = static_cast<int64_t>(std::llround(std::stod(text("msec")) * 1e3)) * 1'000'000;
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return e;
}

std::optional<stub_status> parse_stub_status(std::string_view body) {
  // Active connections: 2 \n server accepts handled requests\n 10 10 31 \n
  // Reading: 0 Writing: 1 Waiting: 1 \n
  stub_status s;
  std::string text(body);
  auto count = std::sscanf(text.c_str(),
                           "Active connections: %lu server accepts handled requests %lu %lu %lu "
                           "Reading: %lu Writing: %lu Waiting: %lu",
                           &s.active, &s.accepts, &s.handled, &s.requests, &s.reading, &s.writing,
                           &s.waiting);
  if (count != 7)
    return std::nullopt;
  return s;
}

} // namespace troupe::nginx
