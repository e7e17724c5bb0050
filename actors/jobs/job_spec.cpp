#include "actors/jobs/job_spec.hpp"

#include <algorithm>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace troupe {

namespace {

using nlohmann::json;
using kind = doc_value::kind;

// The schema looks no deeper than the elements of a top-level field
// (`env.FOO`, `command[2]`), so containers there are kept without contents:
// hostile nesting and YAML alias bombs cost nothing.
constexpr size_t inspected_depth = 2;

constexpr uint64_t max_timeout_seconds = 30 * 24 * 3600;
// process.cpp multiplies by 2^20 for RLIMIT_AS; this keeps that in 64 bits.
constexpr int64_t max_memory_mb = int64_t{1} << 40;
constexpr size_t max_name_chars = 200;
constexpr size_t max_label_value_chars = 256;

// to_json's extra key: users never send it (the type of `command` says
// whether a shell runs), but the stored form needs it to round-trip.
constexpr std::string_view shell_key = "shell";

/// `a/./b//c/` becomes `a/b/c`; absolute paths and `..` are refused.
std::string normalise_cwd(std::string_view raw) {
  auto refuse = [] { return spec_error("cwd", "must be a relative path inside the workspace"); };
  if (!raw.empty() && raw.front() == '/')
    throw refuse();
  std::string out;
  while (!raw.empty()) {
    auto slash = raw.find('/');
    auto part = raw.substr(0, slash);
    raw = slash == std::string_view::npos ? std::string_view{} : raw.substr(slash + 1);
    if (part == "..")
      throw refuse();
    if (part.empty() || part == ".")
      continue;
    if (!out.empty())
      out += '/';
    out += part;
  }
  return out;
}

void read_name(const doc_value& v, job_spec& spec) {
  spec.name = read_string(v, "name");
  if (characters(spec.name) > max_name_chars)
    throw spec_error("name", "must be at most " + std::to_string(max_name_chars) + " characters");
}

void read_command(const doc_value& v, job_spec& spec) {
  if (v.type == kind::string || v.type == kind::plain) {
    if (blank(v.text))
      throw spec_error("command", "must not be empty");
    spec.argv = {"/bin/sh", "-c", v.text};
    spec.shell = true;
    return;
  }
  if (v.type != kind::array)
    throw spec_error("command", "must be a string or an array of strings");
  if (v.items.empty())
    throw spec_error("command", "must not be empty");
  spec.argv.clear();
  for (size_t i = 0; i < v.items.size(); ++i)
    spec.argv.push_back(read_string(v.items[i], "command[" + std::to_string(i) + "]"));
  if (spec.argv.front().empty())
    throw spec_error("command[0]", "must not be empty");
  spec.shell = false;
}

void read_env(const doc_value& v, job_spec& spec) {
  for (const auto& [key, value] : read_object(v, "env").members) {
    auto field = "env." + key;
    if (!valid_env_name(key))
      throw spec_error(field, "must be a variable name of letters, digits and _ "
                              "(not starting with a digit)");
    spec.env[key] = read_string(value, field);
  }
}

void read_cwd(const doc_value& v, job_spec& spec) {
  spec.cwd = normalise_cwd(read_string(v, "cwd"));
}

void read_timeout(const doc_value& v, job_spec& spec) {
  spec.timeout_seconds = read_count(v, "timeout_seconds", max_timeout_seconds);
}

void read_priority(const doc_value& v, job_spec& spec) {
  spec.priority = static_cast<int>(read_integer(v, "priority", 0, 100));
}

void read_retries(const doc_value& v, job_spec& spec) {
  spec.retries = static_cast<int>(read_integer(v, "retries", 0, 100));
}

void read_labels(const doc_value& v, job_spec& spec) {
  for (const auto& [key, value] : read_object(v, "labels").members) {
    auto field = "labels." + key;
    if (!valid_label_name(key))
      throw spec_error(field,
                       "must be a label name of 1 to 63 characters from A-Z a-z 0-9 _ . - /");
    auto& text = read_string(value, field);
    if (characters(text) > max_label_value_chars)
      throw spec_error(field,
                       "must be at most " + std::to_string(max_label_value_chars) + " characters");
    spec.labels[key] = text;
  }
}

void read_resources(const doc_value& v, job_spec& spec) {
  for (const auto& [key, value] : read_object(v, "resources").members) {
    auto field = "resources." + key;
    if (key == "cpu_seconds")
      spec.resources.cpu_seconds = read_count(value, field);
    else if (key == "memory_mb")
      spec.resources.memory_mb = read_count(value, field, max_memory_mb);
    else if (key == "open_files")
      spec.resources.open_files = read_count(value, field);
    else
      throw spec_error(field, "unknown field");
  }
}

struct field_reader {
  std::string_view name;
  void (*read)(const doc_value&, job_spec&);
};

constexpr field_reader fields[] = {
    {"name", read_name},     {"command", read_command},         {"env", read_env},
    {"cwd", read_cwd},       {"timeout_seconds", read_timeout}, {"priority", read_priority},
    {"labels", read_labels}, {"retries", read_retries},         {"resources", read_resources},
};

/// The one validator behind both formats; `root` is an object.
job_spec read_spec(const doc_value& root, const std::optional<std::string>& default_command) {
  job_spec spec;
  bool has_command = false;
  for (const auto& [key, value] : root.members) {
    auto f = std::find_if(std::begin(fields), std::end(fields),
                          [&key = key](const field_reader& r) { return r.name == key; });
    if (f == std::end(fields))
      throw spec_error(key, "unknown field");
    f->read(value, spec);
    has_command = has_command || key == "command";
  }
  if (!has_command) {
    if (!default_command)
      throw spec_error("command", "is required");
    spec.argv = {"/bin/sh", "-c", *default_command};
    spec.shell = true;
  }
  return spec;
}

doc_value json_object_tree(const std::string& body) {
  auto root = parse_json_document(body, {inspected_depth});
  if (root.type != kind::object)
    throw spec_error("body", "must be a JSON object");
  return root;
}

} // namespace

job_spec parse_job_spec_json(const std::string& body,
                             const std::optional<std::string>& default_command) {
  return read_spec(json_object_tree(body), default_command);
}

job_spec parse_job_spec_yaml(const std::string& body,
                             const std::optional<std::string>& default_command) {
  auto root = parse_yaml_document(body, {inspected_depth});
  if (root.type != kind::object)
    throw spec_error("body", "must be a YAML mapping");
  return read_spec(root, default_command);
}

std::string to_json(const job_spec& spec) {
  json resources = {{"cpu_seconds", spec.resources.cpu_seconds},
                    {"memory_mb", spec.resources.memory_mb},
                    {"open_files", spec.resources.open_files}};
  json out = {{"name", spec.name},
              {"command", spec.argv},
              {std::string{shell_key}, spec.shell},
              {"env", spec.env},
              {"cwd", spec.cwd},
              {"timeout_seconds", spec.timeout_seconds},
              {"priority", spec.priority},
              {"labels", spec.labels},
              {"retries", spec.retries},
              {"resources", std::move(resources)}};
  // Parsed specs are valid UTF-8; replacing keeps a hand-built one from throwing.
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

job_spec job_spec_from_json(const std::string& text) {
  auto root = json_object_tree(text);
  auto& members = root.members;
  auto shell = std::find_if(members.begin(), members.end(),
                            [](const auto& m) { return m.first == shell_key; });
  bool is_shell = false;
  if (shell != members.end()) {
    if (shell->second.type != kind::boolean)
      throw spec_error(std::string{shell_key}, "must be a boolean");
    is_shell = shell->second.text == "true";
    members.erase(shell);
  }
  auto spec = read_spec(root, std::nullopt);
  spec.shell = is_shell;
  return spec;
}

} // namespace troupe
