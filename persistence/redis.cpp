#include "persistence/redis.hpp"

#include <cerrno>
#include <charconv>
#include <csignal>
#include <ctime>
#include <unordered_set>

#include <hiredis.h>
#include <pthread.h>

namespace troupe::redis {

namespace {

bool set_error(std::string* error, std::string text) {
  if (error)
    *error = std::move(text);
  return false;
}

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

reply convert(const redisReply& r) {
  reply out;
  switch (r.type) {
  case REDIS_REPLY_INTEGER:
    out.type = reply::kind::integer;
    out.integer = r.integer;
    break;
  case REDIS_REPLY_STRING:
    out.type = reply::kind::string;
    out.str.assign(r.str, r.len);
    break;
  case REDIS_REPLY_STATUS:
    out.type = reply::kind::status;
    out.str.assign(r.str, r.len);
    break;
  case REDIS_REPLY_ERROR:
    out.type = reply::kind::error;
    out.str.assign(r.str, r.len);
    break;
  case REDIS_REPLY_ARRAY:
    out.type = reply::kind::array;
    out.elements.reserve(r.elements);
    for (size_t i = 0; i < r.elements; ++i)
      out.elements.push_back(convert(*r.element[i]));
    break;
  default:
    out.type = reply::kind::nil;
  }
  return out;
}

/// hiredis writes with write(2): a server that went away would raise SIGPIPE.
/// Blocks it for this thread while the guard lives and swallows one raised
/// meanwhile (unless one was already pending before).
class sigpipe_guard {
public:
  sigpipe_guard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~sigpipe_guard() {
    if (!was_pending_) {
      timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
        // drained
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;

private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

} // namespace

// -- client -------------------------------------------------------------------

void client::context_deleter::operator()(redisContext* ctx) const {
  redisFree(ctx);
}

client::client(url_parts where, std::chrono::milliseconds timeout)
    : where_(std::move(where)), timeout_(timeout) {
  sigpipe_guard guard;
  connected_ = connect();
}

client::~client() = default;

std::string client::where() const {
  auto host = where_.host.find(':') == std::string::npos ? where_.host : "[" + where_.host + "]";
  return "redis " + host + ":" + std::to_string(where_.port);
}

bool client::fail(std::string what) {
  last_error_ = where() + ": " + what;
  connected_ = false;
  return false;
}

bool client::connect() {
  ctx_.reset();
  auto tv = to_timeval(timeout_);
  std::unique_ptr<redisContext, context_deleter> ctx{
      redisConnectWithTimeout(where_.host.c_str(), where_.port, tv)};
  if (!ctx)
    return fail("connect: cannot allocate a context");
  if (ctx->err)
    return fail(std::string{"connect: "} + ctx->errstr);
  if (redisSetTimeout(ctx.get(), tv) != REDIS_OK)
    return fail(std::string{"setting the timeout: "} + ctx->errstr);
  ctx_ = std::move(ctx);
  auto login = [&](std::vector<std::string> args, const char* what) {
    auto r = run(args);
    if (!r)
      return false;
    if (r->type == reply::kind::error) {
      ctx_.reset();
      return fail(std::string{what} + " failed: " + r->str);
    }
    return true;
  };
  if (!where_.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!where_.username.empty())
      auth.push_back(where_.username);
    auth.push_back(where_.password);
    if (!login(std::move(auth), "AUTH"))
      return false;
  }
  if (where_.db != 0 && !login({"SELECT", std::to_string(where_.db)}, "SELECT"))
    return false;
  return true;
}

std::optional<reply> client::run(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  errno = 0;
  auto* raw = static_cast<redisReply*>(
      redisCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv.data(), lengths.data()));
  if (raw == nullptr) {
    // The context is unusable after any error.
    std::string what = ctx_->errstr;
    if (ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
      what = "no reply within " + std::to_string(timeout_.count()) + " ms";
    ctx_.reset();
    fail(what);
    return std::nullopt;
  }
  auto out = convert(*raw);
  freeReplyObject(raw);
  return out;
}

std::optional<reply> client::command(const std::vector<std::string>& args, std::string* error) {
  if (args.empty()) {
    fail("empty command");
    set_error(error, last_error_);
    return std::nullopt;
  }
  sigpipe_guard guard;
  bool fresh = false;
  if (!ctx_) {
    if (!connect()) {
      set_error(error, last_error_);
      return std::nullopt;
    }
    fresh = true;
  }
  auto result = run(args);
  // A connection that worked before may have gone stale (server restarted,
  // idle timeout): one new connection, one more try.
  if (!result && !fresh) {
    auto first = last_error_;
    if (connect())
      result = run(args);
    if (!result)
      last_error_ += " (after: " + first.substr(where().size() + 2) + ")";
  }
  connected_ = result.has_value();
  if (!result)
    set_error(error, last_error_);
  return result;
}

std::optional<std::vector<std::string>> client::scan(const std::string& pattern,
                                                     std::string* error) {
  std::vector<std::string> keys;
  std::unordered_set<std::string> seen;
  std::string cursor = "0";
  do {
    auto r = command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}, error);
    if (!r)
      return std::nullopt;
    if (r->type == reply::kind::error) {
      fail("SCAN: " + r->str);
      set_error(error, last_error_);
      return std::nullopt;
    }
    if (r->type != reply::kind::array || r->elements.size() != 2 ||
        r->elements[0].type != reply::kind::string || r->elements[1].type != reply::kind::array) {
      fail("SCAN: unexpected reply shape");
      set_error(error, last_error_);
      return std::nullopt;
    }
    cursor = r->elements[0].str;
    for (auto& key : r->elements[1].elements)
      if (seen.insert(key.str).second)
        keys.push_back(std::move(key.str));
  } while (cursor != "0");
  return keys;
}

} // namespace troupe::redis
