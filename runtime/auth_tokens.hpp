#pragma once

// The API tokens of a node: auth.tokens, auth.tokens_file (re-read on SIGHUP)
// and, when neither configures one, a generated admin token kept in
// DATA_DIR/token (0600). Logs name the files, never a token.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "http/auth.hpp"
#include "runtime/ground/config.hpp"

namespace troupe::auth {

/// The token_table entries of configured tokens, labelled `<where>[INDEX]`
/// for errors; each grants the strongest of its roles.
std::vector<http::token_entry> to_entries(const std::vector<auth_token>& tokens,
                                          const std::string& where);

/// Reads a tokens file (YAML or JSON: a list of {name, token, roles}, or a
/// mapping with `tokens:`). Throws config_error at auth.tokens_file whose
/// reason names the file and the element (`FILE: tokens[1].roles: ...`).
std::vector<http::token_entry> read_tokens_file(const std::string& file);

/// DATA_DIR/token.
std::string token_file_path(const std::string& data_dir);

/// The admin token of DATA_DIR/token, named `admin`. A missing file is
/// created atomically with mode 0600 and 256 random bits (64 hex digits); an
/// existing one is reused, its mode tightened to 0600 (with a warning) if
/// group or others may read it. Throws std::runtime_error naming the file.
http::token_entry data_dir_token(const std::string& data_dir);

/// The tokens in force and the authenticator that checks requests with them.
class api_tokens {
public:
  /// Reads auth.tokens and auth.tokens_file and checks them together.
  /// Throws config_error naming the key (and the file and element).
  explicit api_tokens(const auth_config& cfg);

  /// auth.mode is token and no token is configured anywhere: the node needs
  /// DATA_DIR/token (use_data_dir_token).
  bool needs_generated_token() const;

  /// Adds the token of DATA_DIR/token (data_dir_token); it stays across
  /// reloads. Call once the data dir is locked.
  void use_data_dir_token(const std::string& data_dir);

  /// Null when auth.mode is none (every caller is admin).
  std::shared_ptr<const http::authenticator> authenticator() const { return auth_; }

  /// Re-reads auth.tokens_file and replaces the table at once. A bad file
  /// keeps the table in force and logs an error naming the file and the
  /// reason; returns whether the table was replaced.
  bool reload();

private:
  /// The table of base_ plus `file`; throws config_error.
  std::shared_ptr<const http::token_table>
  table_of(const std::vector<http::token_entry>& file) const;

  auth_config cfg_;
  std::mutex mtx_;
  /// auth.tokens, and DATA_DIR/token when used.
  std::vector<http::token_entry> base_;
  std::vector<http::token_entry> file_;
  std::shared_ptr<http::authenticator> auth_;
};

} // namespace troupe::auth
