#pragma once

// The documents users submit as specs (jobs, apps): JSON or YAML reduced to one
// tree, so one validator gives both formats the same rules and the same
// errors, and the readers that name the dotted field path in every error.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe {

/// A rejected spec: `field` is the dotted path (e.g. `resources.memory_mb`).
class spec_error : public std::runtime_error {
public:
  spec_error(std::string field, const std::string& reason)
      : std::runtime_error(field + ": " + reason), field_(std::move(field)) {}
  const std::string& field() const noexcept { return field_; }

private:
  std::string field_;
};

/// One value of a parsed document.
struct doc_value {
  /// `plain` is an untyped YAML scalar: the schema reads it as a string or a
  /// number, whichever the field wants.
  enum class kind { null, boolean, integer, floating, string, plain, array, object };
  kind type = kind::null;
  /// A scalar as written.
  std::string text;
  std::vector<doc_value> items;
  std::vector<std::pair<std::string, doc_value>> members;
};

/// How much of a document is kept. Containers deeper than `depth` are kept
/// without contents (hostile nesting and YAML alias bombs cost nothing);
/// more than `max_values` values in all is an error (0: no bound).
struct doc_limits {
  size_t depth = 2;
  size_t max_values = 0;
};

/// Parses JSON text (any root); malformed text, duplicate keys, invalid
/// UTF-8 and NUL bytes throw spec_error naming the field ("body" at the top).
doc_value parse_json_document(const std::string& body, doc_limits limits = {});

/// Parses a single YAML document with the same rules; quoted scalars are
/// strings, plain ones stay untyped until the schema reads them.
doc_value parse_yaml_document(const std::string& body, doc_limits limits = {});

/// `path.key`, or `key` at the top.
std::string join_path(const std::string& path, std::string_view key);

/// `path[index]`.
std::string index_path(const std::string& path, size_t index);

/// A value as error messages quote it, cut short at a character boundary.
std::string describe(const doc_value& v);

const std::string& read_string(const doc_value& v, const std::string& field);

std::optional<int64_t> as_integer(const doc_value& v);

/// An integer in [lo, hi]; the error names the range and the value.
int64_t read_integer(const doc_value& v, const std::string& field, int64_t lo, int64_t hi);

/// A non-negative integer up to `hi`.
uint64_t read_count(const doc_value& v, const std::string& field, int64_t hi = INT64_MAX);

/// A finite number (integer or decimal) in [lo, hi].
double read_number(const doc_value& v, const std::string& field, double lo, double hi);

/// true/false (JSON booleans; YAML true/false unquoted).
bool read_bool(const doc_value& v, const std::string& field);

const doc_value& read_object(const doc_value& v, const std::string& field);

const doc_value& read_array(const doc_value& v, const std::string& field);

/// Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool valid_utf8(std::string_view s);

/// Code points in valid UTF-8.
size_t characters(std::string_view s);

/// Only spaces, tabs and line breaks (or nothing).
bool blank(std::string_view s);

/// A POSIX environment variable name: letters, digits and _, not starting
/// with a digit.
bool valid_env_name(std::string_view name);

/// A label name: 1 to 63 characters from A-Z a-z 0-9 _ . - /
bool valid_label_name(std::string_view name);

} // namespace troupe
