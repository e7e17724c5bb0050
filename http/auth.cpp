#include "http/auth.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>

namespace troupe::http {

namespace {

constexpr size_t min_token_bytes = 16;

using digest = std::array<unsigned char, 32>;

/// SHA-256 of `data`; false only if OpenSSL fails. The algorithm is fetched
/// once and each thread reuses one context: no allocation per request.
bool sha256(std::string_view data, unsigned char* out) {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr); // lives as long as the process
  thread_local std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(),
                                                                           &EVP_MD_CTX_free};
  unsigned len = 0;
  return md != nullptr && ctx != nullptr && EVP_DigestInit_ex2(ctx.get(), md, nullptr) == 1 &&
         EVP_DigestUpdate(ctx.get(), data.data(), data.size()) == 1 &&
         EVP_DigestFinal_ex(ctx.get(), out, &len) == 1 && len == 32;
}

bool is_control(char ch) {
  auto c = static_cast<unsigned char>(ch);
  return c < 0x20 || c == 0x7f;
}

/// What may appear in a bearer token on the wire: visible ASCII, no spaces.
bool is_token_char(char ch) {
  auto c = static_cast<unsigned char>(ch);
  return c > 0x20 && c < 0x7f;
}

std::string in_quotes(std::string_view s) {
  return '"' + std::string{s} + '"';
}

std::string label(const token_entry& e, size_t index) {
  return e.origin.empty() ? "tokens[" + std::to_string(index) + "]" : e.origin;
}

/// Checks one entry on its own; the reason names it by name only.
void check_entry(const token_entry& e, size_t index) {
  auto fail = [&](std::string reason) { throw invalid_token_entry(label(e, index), reason); };
  if (e.name.empty())
    fail("name must not be empty");
  if (std::any_of(e.name.begin(), e.name.end(), is_control))
    fail("name must not contain control characters");
  auto of = "token of " + in_quotes(e.name);
  if (e.token.empty())
    fail(of + " must not be empty");
  if (e.token.size() < min_token_bytes)
    fail(of + " must be at least " + std::to_string(min_token_bytes) + " bytes long");
  if (!std::all_of(e.token.begin(), e.token.end(), is_token_char))
    fail(of + " must consist of visible ASCII characters (no spaces or control characters)");
  if (e.granted == role::none)
    fail(in_quotes(e.name) + " must grant a role (read, submit or admin)");
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

} // namespace

invalid_token_entry::invalid_token_entry(std::string where, std::string reason)
    : std::invalid_argument(where + ": " + reason), where_(std::move(where)),
      reason_(std::move(reason)) {}

token_table::token_table(const std::vector<token_entry>& entries) {
  std::map<std::string, size_t> names;
  std::map<digest, size_t> tokens;
  entries_.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    auto& e = entries[i];
    check_entry(e, i);
    entry stored{e.name, {}, e.granted};
    if (!sha256(e.token, stored.digest))
      throw std::runtime_error("SHA-256 of a token failed (OpenSSL)");
    if (auto [at, fresh] = names.emplace(e.name, i); !fresh)
      throw invalid_token_entry(label(e, i), "name " + in_quotes(e.name) + " is also used by " +
                                                 label(entries[at->second], at->second));
    digest d;
    std::copy(std::begin(stored.digest), std::end(stored.digest), d.begin());
    if (auto [at, fresh] = tokens.emplace(d, i); !fresh) {
      auto& other = entries[at->second];
      throw invalid_token_entry(label(e, i), "token of " + in_quotes(e.name) + " is also used by " +
                                                 label(other, at->second) + " (" +
                                                 in_quotes(other.name) + ")");
    }
    entries_.push_back(std::move(stored));
  }
}

std::optional<identity> token_table::find(std::string_view presented) const {
  unsigned char d[32];
  if (presented.empty() || !sha256(presented, d))
    return std::nullopt;
  // Every entry is compared in constant time and the loop never ends early,
  // so the time taken says nothing about which entry (if any) matched.
  const entry* match = nullptr;
  for (auto& e : entries_) {
    bool equal = CRYPTO_memcmp(d, e.digest, sizeof(d)) == 0;
    match = equal ? &e : match;
  }
  if (match == nullptr)
    return std::nullopt;
  return identity{match->name, match->granted};
}

authenticator::authenticator(std::shared_ptr<const token_table> table) {
  replace(std::move(table));
}

std::shared_ptr<const token_table> authenticator::current() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return table_;
}

void authenticator::replace(std::shared_ptr<const token_table> table) {
  if (table == nullptr)
    table = std::make_shared<const token_table>();
  std::lock_guard<std::mutex> guard{mtx_};
  // The old table is released outside the lock (by `table` going out of
  // scope) so readers never wait for its destruction.
  table_.swap(table);
}

std::string_view bearer_token(std::string_view authorization) {
  auto is_space = [](char ch) { return ch == ' ' || ch == '\t'; };
  while (!authorization.empty() && is_space(authorization.front()))
    authorization.remove_prefix(1);
  while (!authorization.empty() && is_space(authorization.back()))
    authorization.remove_suffix(1);
  constexpr std::string_view scheme = "Bearer";
  if (authorization.size() <= scheme.size() ||
      !iequals(authorization.substr(0, scheme.size()), scheme) ||
      authorization[scheme.size()] != ' ')
    return {};
  auto token = authorization.substr(scheme.size());
  while (!token.empty() && token.front() == ' ')
    token.remove_prefix(1);
  if (token.empty() || !std::all_of(token.begin(), token.end(), is_token_char))
    return {};
  return token;
}

} // namespace troupe::http
