#include "runtime/ground/spec_document.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace troupe {

namespace {

using nlohmann::json;
using kind = doc_value::kind;

std::string field_or_body(const std::string& path) {
  return path.empty() ? "body" : path;
}

/// Bytes in the sequence a UTF-8 lead byte starts (0: not a lead byte).
size_t utf8_length(unsigned char lead) {
  if (lead < 0x80)
    return 1;
  if ((lead & 0xE0) == 0xC0)
    return 2;
  if ((lead & 0xF0) == 0xE0)
    return 3;
  return (lead & 0xF8) == 0xF0 ? 4 : 0;
}

} // namespace

/// Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool valid_utf8(std::string_view s) {
  static constexpr uint32_t min_code_point[] = {0, 0, 0x80, 0x800, 0x10000};
  for (size_t i = 0; i < s.size();) {
    auto lead = static_cast<unsigned char>(s[i]);
    auto len = utf8_length(lead);
    if (len == 0 || i + len > s.size())
      return false;
    if (len == 1) {
      ++i;
      continue;
    }
    uint32_t cp = lead & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min_code_point[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

/// Code points in valid UTF-8.
size_t characters(std::string_view s) {
  return static_cast<size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

/// Text we keep must survive JSON output and execve.
void check_text(std::string_view text, const std::string& field) {
  if (!valid_utf8(text))
    throw spec_error(field, "must be valid UTF-8");
  if (text.find('\0') != std::string_view::npos)
    throw spec_error(field, "must not contain a NUL byte");
}

namespace {

/// Assembles a doc_value from parse events (JSON SAX or a YAML walk) and
/// enforces what both formats share: unique keys, UTF-8 text without NULs.
class tree_builder {
public:
  explicit tree_builder(doc_limits limits) : limits_(limits) {}

  /// Adds a scalar at the current position.
  void scalar(kind type, std::string text) {
    if (ignoring())
      return;
    if (type == kind::string || type == kind::plain)
      check_text(text, field_or_body(next_path()));
    doc_value v;
    v.type = type;
    v.text = std::move(text);
    add(std::move(v));
    count();
  }

  /// Opens an array or object; false if its contents will be ignored.
  bool open(kind type) {
    auto path = next_path();
    doc_value* node = nullptr;
    if (!ignoring()) {
      doc_value v;
      v.type = type;
      node = add(std::move(v));
      count();
    }
    bool keep = node != nullptr && stack_.size() < limits_.depth;
    stack_.push_back({keep ? node : nullptr, std::move(path), {}});
    return keep;
  }

  void close() { stack_.pop_back(); }

  /// Names the next member of the open object.
  void key(std::string name) {
    if (ignoring())
      return;
    auto& top = stack_.back();
    if (!valid_utf8(name) || name.find('\0') != std::string::npos)
      throw spec_error(where(), "keys must be valid UTF-8 without NUL bytes");
    if (!top.keys.insert(name).second)
      throw spec_error(join_path(top.path, name), "duplicate key");
    key_ = std::move(name);
  }

  /// The open container's path ("body" at the top), for errors.
  std::string where() const { return stack_.empty() ? "body" : field_or_body(stack_.back().path); }

  doc_value take() { return std::move(root_); }

private:
  struct frame {
    doc_value* node; // nullptr: contents ignored
    std::string path;
    std::set<std::string> keys;
  };

  /// Bounds the values kept: a YAML alias expands into copies at every use.
  void count() {
    if (limits_.max_values != 0 && ++values_ > limits_.max_values)
      throw spec_error("body", "has more than " + std::to_string(limits_.max_values) + " values");
  }

  bool ignoring() const { return !stack_.empty() && stack_.back().node == nullptr; }

  std::string next_path() const {
    if (stack_.empty())
      return {};
    auto& top = stack_.back();
    if (top.node == nullptr)
      return top.path;
    if (top.node->type == kind::object)
      return join_path(top.path, key_);
    return index_path(top.path, top.node->items.size());
  }

  doc_value* add(doc_value v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    auto* parent = stack_.back().node;
    if (parent->type == kind::array)
      return &parent->items.emplace_back(std::move(v));
    return &parent->members.emplace_back(std::move(key_), std::move(v)).second;
  }

  doc_limits limits_;
  size_t values_ = 0;
  doc_value root_;
  std::vector<frame> stack_;
  std::string key_;
};

/// nlohmann's message without its "[json.exception...] parse error at ..:" prefix.
std::string parse_error_detail(const std::string& what) {
  auto at = what.find("parse error");
  auto colon = at == std::string::npos ? at : what.find(": ", at);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

/// Feeds nlohmann's SAX events into a tree_builder.
class json_events : public nlohmann::json_sax<json> {
public:
  explicit json_events(tree_builder& builder) : b_(builder) {}

  bool null() override { return scalar(kind::null, "null"); }
  bool boolean(bool val) override { return scalar(kind::boolean, val ? "true" : "false"); }
  bool number_integer(number_integer_t val) override {
    return scalar(kind::integer, std::to_string(val));
  }
  bool number_unsigned(number_unsigned_t val) override {
    return scalar(kind::integer, std::to_string(val));
  }
  bool number_float(number_float_t, const string_t& raw) override {
    return scalar(kind::floating, raw);
  }
  bool string(string_t& val) override { return scalar(kind::string, std::move(val)); }
  bool binary(binary_t&) override { return true; } // JSON text has no binary values
  bool start_object(std::size_t) override {
    b_.open(kind::object);
    return true;
  }
  bool key(string_t& val) override {
    b_.key(std::move(val));
    return true;
  }
  bool end_object() override {
    b_.close();
    return true;
  }
  bool start_array(std::size_t) override {
    b_.open(kind::array);
    return true;
  }
  bool end_array() override {
    b_.close();
    return true;
  }
  bool parse_error(std::size_t byte, const std::string&, const json::exception& e) override {
    throw spec_error("body", "malformed JSON at byte " + std::to_string(byte) + ": " +
                                 parse_error_detail(e.what()));
  }

private:
  bool scalar(kind type, std::string text) {
    b_.scalar(type, std::move(text));
    return true;
  }

  tree_builder& b_;
};

} // namespace

doc_value parse_json_document(const std::string& body, doc_limits limits) {
  tree_builder builder{limits};
  json_events events{builder};
  if (!json::sax_parse(body, &events))
    throw spec_error("body", "malformed JSON");
  return builder.take();
}

namespace {

/// Replays a YAML node as builder events. Quoted scalars are strings; plain
/// ones stay untyped until the schema reads them.
void walk_yaml(const YAML::Node& node, tree_builder& b) {
  switch (node.Type()) {
  case YAML::NodeType::Sequence:
    if (b.open(kind::array))
      for (const auto& item : node)
        walk_yaml(item, b);
    b.close();
    return;
  case YAML::NodeType::Map:
    if (b.open(kind::object))
      for (const auto& kv : node) {
        if (!kv.first.IsScalar())
          throw spec_error(b.where(), "keys must be strings");
        b.key(kv.first.Scalar());
        walk_yaml(kv.second, b);
      }
    b.close();
    return;
  case YAML::NodeType::Scalar: {
    const auto& tag = node.Tag();
    bool quoted = tag == "!" || tag == "tag:yaml.org,2002:str";
    b.scalar(quoted ? kind::string : kind::plain, node.Scalar());
    return;
  }
  default:
    b.scalar(kind::null, "null");
  }
}

/// Ignores a document's events: count_documents only needs their end.
class no_events final : public YAML::EventHandler {
public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

/// The documents in `body`, counted up to `limit`. Never YAML::LoadAll:
/// yaml-cpp 0.7 never ends it on a stray comma (`{},` yields null documents
/// forever, allocating each; yaml-cpp issue 1040), a 3-byte body to exhaust memory.
size_t count_documents(const std::string& body, size_t limit) {
  std::istringstream in{body};
  YAML::Parser parser{in};
  no_events events;
  size_t n = 0;
  while (n < limit && parser.HandleNextDocument(events))
    ++n;
  return n;
}

} // namespace

doc_value parse_yaml_document(const std::string& body, doc_limits limits) {
  YAML::Node doc;
  try {
    if (count_documents(body, 2) > 1)
      throw spec_error("body", "must hold a single YAML document");
    doc = YAML::Load(body);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null())
      throw spec_error("body", "malformed YAML: " + e.msg);
    throw spec_error("body", "malformed YAML at line " + std::to_string(e.mark.line + 1) +
                                 ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  tree_builder builder{limits};
  walk_yaml(doc, builder);
  return builder.take();
}

std::string join_path(const std::string& path, std::string_view key) {
  return path.empty() ? std::string{key} : path + "." + std::string{key};
}

std::string index_path(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

/// A value as error messages quote it, cut short at a character boundary.
std::string describe(const doc_value& v) {
  switch (v.type) {
  case kind::array:
    return "an array";
  case kind::object:
    return "an object";
  case kind::string:
  case kind::plain: {
    constexpr size_t limit = 40;
    auto cut = std::min(v.text.size(), limit);
    while (cut < v.text.size() && cut > 0 && (v.text[cut] & 0xC0) == 0x80)
      --cut;
    auto shown = v.text.substr(0, cut) + (cut < v.text.size() ? "..." : "");
    return v.type == kind::string ? '"' + shown + '"' : shown;
  }
  default:
    return v.text;
  }
}

const std::string& read_string(const doc_value& v, const std::string& field) {
  if (v.type != kind::string && v.type != kind::plain)
    throw spec_error(field, "must be a string");
  return v.text;
}

std::optional<int64_t> as_integer(const doc_value& v) {
  if (v.type != kind::integer && v.type != kind::plain)
    return std::nullopt;
  std::string_view text = v.text;
  if (text.size() > 1 && text[0] == '+' && text[1] != '-')
    text.remove_prefix(1);
  int64_t out = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (err != std::errc{} || end != text.data() + text.size())
    return std::nullopt;
  return out;
}

int64_t read_integer(const doc_value& v, const std::string& field, int64_t lo, int64_t hi) {
  auto n = as_integer(v);
  if (n && *n >= lo && *n <= hi)
    return *n;
  auto wanted =
      hi == std::numeric_limits<int64_t>::max()
          ? std::string{"must be a non-negative integer"}
          : "must be an integer between " + std::to_string(lo) + " and " + std::to_string(hi);
  throw spec_error(field, wanted + ", got " + describe(v));
}

uint64_t read_count(const doc_value& v, const std::string& field, int64_t hi) {
  return static_cast<uint64_t>(read_integer(v, field, 0, hi));
}

double read_number(const doc_value& v, const std::string& field, double lo, double hi) {
  double out = std::nan("");
  bool numeric = v.type == kind::integer || v.type == kind::floating || v.type == kind::plain;
  if (numeric) {
    // from_chars: no locale, no leading spaces, no hex floats (strtod takes all three).
    std::string_view text = v.text;
    if (text.size() > 1 && text[0] == '+' && text[1] != '-')
      text.remove_prefix(1);
    auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (err != std::errc{} || end != text.data() + text.size())
      out = std::nan("");
  }
  if (std::isfinite(out) && out >= lo && out <= hi)
    return out;
  std::ostringstream wanted;
  wanted << "must be a number between " << lo << " and " << hi << ", got " << describe(v);
  throw spec_error(field, wanted.str());
}

bool read_bool(const doc_value& v, const std::string& field) {
  bool typed = v.type == kind::boolean || v.type == kind::plain;
  if (typed && (v.text == "true" || v.text == "false"))
    return v.text == "true";
  throw spec_error(field, "must be true or false, got " + describe(v));
}

const doc_value& read_array(const doc_value& v, const std::string& field) {
  if (v.type != kind::array)
    throw spec_error(field, "must be an array");
  return v;
}

const doc_value& read_object(const doc_value& v, const std::string& field) {
  if (v.type != kind::object)
    throw spec_error(field, "must be an object");
  return v;
}

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

bool valid_env_name(std::string_view name) {
  auto head = [](char c) { return c == '_' || std::isalpha(static_cast<unsigned char>(c)); };
  auto tail = [](char c) { return c == '_' || std::isalnum(static_cast<unsigned char>(c)); };
  return !name.empty() && head(name[0]) && std::all_of(name.begin() + 1, name.end(), tail);
}

bool valid_label_name(std::string_view name) {
  auto ok = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
           c == '/';
  };
  constexpr size_t max_label_name_chars = 63;
  return !name.empty() && name.size() <= max_label_name_chars &&
         std::all_of(name.begin(), name.end(), ok);
}

} // namespace troupe
