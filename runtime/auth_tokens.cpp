#include "runtime/auth_tokens.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ground/logging.hpp"

namespace troupe::auth {

namespace {

constexpr size_t generated_bytes = 32; // 256 bits
constexpr size_t max_token_file_bytes = 4096;

std::string errno_text() {
  return std::strerror(errno);
}

/// Closes a descriptor when it goes out of scope.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

/// Reads at most `limit` bytes of `fd`; the caller names the file in errors.
std::string read_all(int fd, size_t limit) {
  std::string out;
  char buf[1024];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw std::runtime_error("cannot read: " + errno_text());
    if (n == 0)
      return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit)
      throw std::runtime_error("larger than " + std::to_string(limit) + " bytes");
  }
}

void write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    auto n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw std::runtime_error("cannot write " + path + ": " + errno_text());
    data.remove_prefix(static_cast<size_t>(n));
  }
}

/// `bytes` random bytes from the kernel's CSPRNG, as lower-case hex.
std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    auto n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw std::runtime_error("getrandom failed: " + errno_text());
    got += static_cast<size_t>(n);
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes * 2);
  for (unsigned char c : raw) {
    hex += digits[c >> 4];
    hex += digits[c & 0xf];
  }
  return hex;
}

/// Writes a fresh token to `path`: a temporary file created 0600 (so no one
/// else can open it, even for a moment), synced, then renamed into place.
std::string create_token_file(const std::string& dir, const std::string& path) {
  auto token = random_hex(generated_bytes);
  auto tmp = path + ".tmp";
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) // left by a crash
    throw std::runtime_error("cannot remove " + tmp + ": " + errno_text());
  fd_guard out{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)};
  if (out.fd < 0)
    throw std::runtime_error("cannot create " + tmp + ": " + errno_text());
  // The umask may only have removed bits; the owner must be able to read it.
  if (::fchmod(out.fd, 0600) != 0)
    throw std::runtime_error("cannot chmod " + tmp + ": " + errno_text());
  write_all(out.fd, token + "\n", tmp);
  if (::fsync(out.fd) != 0)
    throw std::runtime_error("cannot sync " + tmp + ": " + errno_text());
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + errno_text());
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0)
    ::fsync(d.fd); // the rename survives a crash
  return token;
}

/// The token of an existing file (`fd`), with its mode tightened to 0600.
std::string read_token_file(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw std::runtime_error("cannot stat " + path + ": " + errno_text());
  if (!S_ISREG(st.st_mode))
    throw std::runtime_error(path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    if (::fchmod(fd, 0600) != 0)
      throw std::runtime_error(path + " may be read by group or others (mode " +
                               octal_mode(st.st_mode) + ") and chmod failed: " + errno_text());
    logging::get("auth")->warn("{} could be read by group or others (mode {}): tightened to 0600",
                               path, octal_mode(st.st_mode));
  }
  std::string text;
  try {
    text = read_all(fd, max_token_file_bytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  auto end = text.find_last_not_of(" \t\r\n");
  text.erase(end == std::string::npos ? 0 : end + 1);
  if (text.empty())
    throw std::runtime_error(path + " is empty: remove it to have a new token generated");
  return text;
}

} // namespace

std::vector<http::token_entry> to_entries(const std::vector<auth_token>& tokens,
                                          const std::string& where) {
  std::vector<http::token_entry> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto& t = tokens[i];
    auto granted = http::role::none;
    for (auto& name : t.roles)
      if (auto r = http::parse_role(name); r && !http::allows(granted, *r))
        granted = *r;
    out.push_back({t.name, t.token, granted, where + "[" + std::to_string(i) + "]"});
  }
  return out;
}

std::vector<http::token_entry> read_tokens_file(const std::string& file) {
  auto fail = [&](const std::string& reason) {
    return config_error("auth.tokens_file", file + ": " + reason);
  };
  fd_guard in{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
  if (in.fd < 0)
    throw fail(errno == ENOENT ? std::string{"file not found"} : "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(in.fd, &st) != 0)
    throw fail("cannot stat: " + errno_text());
  if (S_ISDIR(st.st_mode))
    throw fail("is a directory, not a file");
  if ((st.st_mode & 077) != 0)
    logging::get("auth")->warn("auth.tokens_file {} may be read by group or others (mode {}): "
                               "make it 0600",
                               file, octal_mode(st.st_mode));
  std::string text;
  try {
    text = read_all(in.fd, 16u << 20);
  } catch (const std::runtime_error& e) {
    throw fail(e.what());
  }
  std::vector<http::token_entry> entries;
  try {
    entries = to_entries(parse_auth_tokens(text, "tokens", true), "tokens");
  } catch (const config_error& e) {
    throw fail(e.path() + ": " + e.reason());
  }
  try {
    http::token_table{entries}; // names and tokens checked as the server will use them
  } catch (const http::invalid_token_entry& e) {
    throw fail(e.what());
  }
  return entries;
}

std::string token_file_path(const std::string& data_dir) {
  return data_dir + "/token";
}

http::token_entry data_dir_token(const std::string& data_dir) {
  auto path = token_file_path(data_dir);
  auto log = logging::get("auth");
  fd_guard in{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
  std::string token;
  if (in.fd >= 0) {
    token = read_token_file(in.fd, path);
    log->info("API token read from {}", path);
  } else if (errno == ENOENT) {
    token = create_token_file(data_dir, path);
    log->info("API token written to {}; use it as Authorization: Bearer $(cat {})", path, path);
  } else {
    throw std::runtime_error("cannot open " + path + ": " + errno_text());
  }
  return {"admin", token, http::role::admin, path};
}

api_tokens::api_tokens(const auth_config& cfg) : cfg_(cfg) {
  if (cfg_.mode == "none") {
    if (!cfg_.tokens.empty() || !cfg_.tokens_file.empty())
      logging::get("auth")->warn(
          "auth.mode is none: auth.tokens and auth.tokens_file are not used");
    return;
  }
  base_ = to_entries(cfg_.tokens, "auth.tokens");
  if (!cfg_.tokens_file.empty())
    file_ = read_tokens_file(cfg_.tokens_file);
  auth_ = std::make_shared<http::authenticator>(table_of(file_));
}

bool api_tokens::needs_generated_token() const {
  return auth_ != nullptr && base_.empty() && file_.empty();
}

void api_tokens::use_data_dir_token(const std::string& data_dir) {
  std::lock_guard<std::mutex> guard{mtx_};
  base_.push_back(data_dir_token(data_dir));
  auth_->replace(table_of(file_));
}

bool api_tokens::reload() {
  std::lock_guard<std::mutex> guard{mtx_};
  auto log = logging::get("auth");
  if (auth_ == nullptr || cfg_.tokens_file.empty()) {
    log->info("SIGHUP: no tokens to reload ({})",
              auth_ == nullptr ? "auth.mode is none" : "auth.tokens_file is not set");
    return false;
  }
  try {
    auto file = read_tokens_file(cfg_.tokens_file);
    auth_->replace(table_of(file));
    file_ = std::move(file);
  } catch (const config_error& e) {
    log->error("cannot reload tokens, the previous ones stay in force: {}", e.reason());
    return false;
  } catch (const std::exception& e) { // runs on the signal thread: never let it end the node
    log->error("cannot reload tokens from {}, the previous ones stay in force: {}",
               cfg_.tokens_file, e.what());
    return false;
  }
  log->info("reloaded {} tokens from {}", file_.size(), cfg_.tokens_file);
  if (base_.empty() && file_.empty())
    log->warn("no API token is configured now: every request that needs one is refused");
  return true;
}

std::shared_ptr<const http::token_table>
api_tokens::table_of(const std::vector<http::token_entry>& file) const {
  auto all = base_;
  all.insert(all.end(), file.begin(), file.end());
  try {
    return std::make_shared<const http::token_table>(all);
  } catch (const http::invalid_token_entry& e) {
    // Entries are labelled by origin: auth.tokens[i], DATA_DIR/token or the file's tokens[i].
    if (e.where().rfind("auth.tokens[", 0) == 0)
      throw config_error(e.where(), e.reason());
    if (e.where().rfind("tokens[", 0) == 0)
      throw config_error("auth.tokens_file", cfg_.tokens_file + ": " + e.what());
    throw std::runtime_error(e.what());
  }
}

} // namespace troupe::auth
