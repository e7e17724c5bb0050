#pragma once

// Who may call which route: bearer tokens, each granting one role. Roles are
// ordered (admin ⊇ submit ⊇ read); a route declares the least role it needs.
// Tokens are kept only as SHA-256 digests and compared in constant time.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/ground/role.hpp"

namespace troupe::http {

// Roles (runtime/ground/role.hpp) are spoken of here as http::role.
using troupe::allows;
using troupe::parse_role;
using troupe::role;
using troupe::to_string;

/// One configured token: its name (shown in logs and as a job's submitter,
/// never the secret), the secret itself, and the role it grants (the
/// strongest of its configured roles).
struct token_entry {
  token_entry() = default;
  token_entry(std::string name, std::string token, role granted, std::string origin = {})
      : name(std::move(name)), token(std::move(token)), granted(granted),
        origin(std::move(origin)) {}

  std::string name;
  std::string token;
  role granted = role::read;
  /// Where the entry was configured, for errors (e.g. "auth.tokens[1]");
  /// empty: "tokens[INDEX]".
  std::string origin;
};

/// Why token_table refused an entry: `where` is the entry's origin (or
/// tokens[INDEX]), `reason` names it by name, never by its token.
class invalid_token_entry : public std::invalid_argument {
public:
  invalid_token_entry(std::string where, std::string reason);
  const std::string& where() const noexcept { return where_; }
  const std::string& reason() const noexcept { return reason_; }

private:
  std::string where_;
  std::string reason_;
};

/// Who made a request, once authenticated.
struct identity {
  std::string name;
  role granted = role::none;
};

/// An immutable set of tokens. Holds SHA-256 digests only.
class token_table {
public:
  token_table() = default;
  /// Throws invalid_token_entry (a std::invalid_argument) naming the entry
  /// when a name or token is empty, a name has control characters, a token
  /// is shorter than 16 bytes or has other than visible ASCII characters (it
  /// could never be sent in a header), or a name or token repeats.
  explicit token_table(const std::vector<token_entry>& entries);

  /// The identity of a presented token; every entry is compared, in constant
  /// time, whether or not one matches.
  std::optional<identity> find(std::string_view presented) const;

  size_t size() const { return entries_.size(); }

private:
  struct entry {
    std::string name;
    unsigned char digest[32];
    role granted;
  };
  std::vector<entry> entries_;
};

/// The token table in force; replaced as a whole on reload (SIGHUP), read by
/// every io thread. Thread-safe.
class authenticator {
public:
  /// A null table stands for an empty one.
  explicit authenticator(std::shared_ptr<const token_table> table = nullptr);
  /// Never null; a caller keeps the table it got even if it is replaced.
  std::shared_ptr<const token_table> current() const;
  void replace(std::shared_ptr<const token_table> table);

private:
  mutable std::mutex mtx_;
  std::shared_ptr<const token_table> table_;
};

/// The token of an `Authorization: Bearer <token>` header value ("Bearer" in
/// any case, one space or more, a token of visible ASCII characters; spaces
/// around the value are ignored); empty if the value is not of that form.
std::string_view bearer_token(std::string_view authorization);

} // namespace troupe::http
