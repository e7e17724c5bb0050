#include "http/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <future>
#include <memory>
#include <thread>

#include "runtime/ground/text.hpp"
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace troupe::http {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

/// `base` + `suffix` with exactly one slash between them.
std::string join_target(std::string_view base, std::string_view suffix) {
  if (suffix.empty())
    return base.empty() ? "/" : std::string{base};
  std::string out{base};
  while (!out.empty() && out.back() == '/')
    out.pop_back();
  if (suffix.front() != '/' && suffix.front() != '?')
    out += '/';
  out += suffix;
  return out;
}

std::string host_header(const url& u) {
  auto host = u.host.find(':') == std::string::npos ? u.host : "[" + u.host + "]";
  return u.port == "80" ? host : host + ":" + u.port;
}

std::string millis(std::chrono::milliseconds d) {
  return std::to_string(d.count()) + " ms";
}

struct resolved {
  std::vector<tcp::endpoint> endpoints;
  std::string error;
};

resolved resolve_now(const std::string& host, const std::string& port) {
  resolved out;
  net::io_context ioc;
  tcp::resolver resolver{ioc};
  error_code ec;
  auto results = resolver.resolve(host, port, ec);
  if (ec)
    out.error = "resolve " + host + ": " + ec.message();
  for (const auto& r : results)
    out.endpoints.push_back(r.endpoint());
  return out;
}

/// Resolves `u`, giving up after `timeout`. getaddrinfo cannot be cancelled,
/// so names are looked up on a detached thread that may outlive the call.
resolved resolve(const url& u, std::chrono::milliseconds timeout) {
  error_code ec;
  auto address = net::ip::make_address(u.host, ec);
  if (!ec)
    return {{tcp::endpoint{address, static_cast<unsigned short>(std::stoi(u.port))}}, {}};
  auto promise = std::make_shared<std::promise<resolved>>();
  auto result = promise->get_future();
  std::thread{[promise, host = u.host, port = u.port] {
    try {
      promise->set_value(resolve_now(host, port));
    } catch (const std::exception& e) {
      promise->set_value({{}, std::string{"resolve: "} + e.what()});
    }
  }}.detach();
  if (result.wait_for(timeout) != std::future_status::ready)
    return {{}, "resolve " + u.host + ": timed out after " + millis(timeout)};
  return result.get();
}

/// Starts one async operation and runs it to completion; the stream's
/// deadline bounds how long that takes.
template <class Start> error_code run(net::io_context& ioc, Start&& start) {
  error_code result;
  start([&result](error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

bhttp::request<bhttp::string_body>
make_request(const url& base, std::string_view method, std::string_view path_suffix,
             const std::vector<std::pair<std::string, std::string>>& headers,
             std::string_view body) {
  bhttp::request<bhttp::string_body> req;
  req.version(11);
  auto verb = bhttp::string_to_verb(method);
  if (verb == bhttp::verb::unknown)
    req.method_string(method);
  else
    req.method(verb);
  req.target(join_target(base.target, path_suffix));
  req.set(bhttp::field::host, host_header(base));
  req.set(bhttp::field::user_agent, "troupe");
  req.set(bhttp::field::connection, "close");
  for (const auto& [name, value] : headers)
    req.set(name, value);
  req.body() = body;
  req.prepare_payload();
  return req;
}

client_response to_client_response(const bhttp::response<bhttp::string_body>& res) {
  client_response out;
  out.status = res.result_int();
  for (const auto& field : res) {
    auto [it, added] = out.headers.try_emplace(ascii_lower(field.name_string()), field.value());
    if (!added)
      it->second.append(", ").append(field.value());
  }
  out.body = res.body();
  return out;
}

client_response transport_error(std::string_view stage, const url& base, error_code ec,
                                std::chrono::milliseconds timeout) {
  client_response out;
  out.error = std::string{stage} + " " + base.host + ":" + base.port + ": " +
              (ec == beast::error::timeout ? "timed out after " + millis(timeout) : ec.message());
  return out;
}

client_response perform(const url& base, std::string_view method, std::string_view path_suffix,
                        const std::vector<std::pair<std::string, std::string>>& headers,
                        std::string_view body, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto endpoints = resolve(base, timeout);
  if (!endpoints.error.empty() || endpoints.endpoints.empty())
    return {0, {}, {}, endpoints.error.empty() ? "resolve: no addresses" : endpoints.error};
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  // One deadline for connect, write and read together.
  stream.expires_at(deadline);
  if (auto ec = run(ioc, [&](auto h) { stream.async_connect(endpoints.endpoints, h); }))
    return transport_error("connect", base, ec, timeout);
  auto req = make_request(base, method, path_suffix, headers, body);
  if (auto ec = run(ioc, [&](auto h) { bhttp::async_write(stream, req, h); }))
    return transport_error("write", base, ec, timeout);
  beast::flat_buffer buffer;
  // Beast's default 8 MiB is too small for large expositions (proxy mode
  // reads whole /monitoring/system documents).
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(max_response_bytes);
  if (auto ec = run(ioc, [&](auto h) { bhttp::async_read(stream, buffer, parser, h); }))
    return transport_error("read", base, ec, timeout);
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  return to_client_response(parser.get());
}

} // namespace

client_response fetch(const url& base, std::string_view method, std::string_view path_suffix,
                      const std::vector<std::pair<std::string, std::string>>& headers,
                      std::string_view body, std::chrono::milliseconds timeout) {
  try {
    return perform(base, method, path_suffix, headers, body, timeout);
  } catch (const std::exception& e) {
    return {0, {}, {}, std::string{"request failed: "} + e.what()};
  }
}

std::string base64(std::string_view data) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  for (size_t i = 0; i < data.size(); i += 3) {
    auto byte = [&](size_t k) {
      return i + k < data.size() ? static_cast<uint8_t>(data[i + k]) : 0u;
    };
    uint32_t chunk = (byte(0) << 16) | (byte(1) << 8) | byte(2);
    size_t emit = std::min<size_t>(data.size() - i, 3) + 1;
    for (size_t k = 0; k < 4; ++k)
      out += k < emit ? alphabet[(chunk >> (18 - 6 * k)) & 0x3F] : '=';
  }
  return out;
}

} // namespace troupe::http
