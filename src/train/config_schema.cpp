#include "train/config_schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fmt/format.h>
#include <set>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace temper {

using namespace config_detail;

const char* config_value_type_name(ConfigValueType type) {
  switch (type) {
    case ConfigValueType::Int: return "int";
    case ConfigValueType::Float: return "float";
    case ConfigValueType::Bool: return "bool";
    case ConfigValueType::String: return "string";
    case ConfigValueType::List: return "list of strings";
  }
  return "?";
}

const std::vector<ConfigKeyInfo>& run_config_schema() {
  static const std::vector<ConfigKeyInfo> schema = [] {
    std::vector<ConfigKeyInfo> keys;
    const RunConfig defaults;
    for_each_config_field(defaults, [&](const char* key, const auto& field, const char* help) {
      using Traits = FieldTraitsOf<decltype(field)>;
      keys.push_back({key, Traits::type, Traits::optional, format_value(field), help});
    });
    return keys;
  }();
  return schema;
}

namespace {

std::string_view last_component(std::string_view key) {
  size_t dot = key.rfind('.');
  return dot == std::string_view::npos ? key : key.substr(dot + 1);
}

}  // namespace

std::optional<std::string> closest_config_key(const std::string& key) {
  // A candidate is close when the whole dotted key is within a few edits, or when the
  // last components are (a key put in the wrong section, or given without one).
  // Edit distances cost len(key) x len(candidate) for each of the schema's keys: a key far
  // longer than any real one (a hostile file) gets no suggestion rather than that work.
  if (key.size() > 128) return std::nullopt;
  const std::string_view last = last_component(key);
  const size_t full_limit = std::max<size_t>(2, key.size() / 4);
  const size_t last_limit = std::max<size_t>(1, (last.size() + 1) / 3);
  std::optional<std::string> best;
  size_t best_score = SIZE_MAX, best_full = SIZE_MAX;
  for (const auto& info : run_config_schema()) {
    size_t full = edit_distance(key, info.key);
    size_t tail = edit_distance(last, last_component(info.key));
    bool close = full <= full_limit || tail <= last_limit;
    if (!close) continue;
    size_t score = std::min(full, tail);
    if (score < best_score || (score == best_score && full < best_full)) {
      best = info.key;
      best_score = score;
      best_full = full;
    }
  }
  return best;
}

namespace config_detail {

std::optional<int64_t> parse_int(std::string_view text) {
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  if (text.empty() || text[0] == '+') return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_float(std::string_view text) {
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  if (text.empty() || text[0] == '+') return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

std::optional<bool> parse_bool(std::string_view text) {
  static const char* const kTrue[] = {"true", "True", "TRUE", "yes", "Yes", "YES",
                                      "on",   "On",   "ON"};
  static const char* const kFalse[] = {"false", "False", "FALSE", "no", "No", "NO",
                                       "off",   "Off",   "OFF"};
  for (const char* t : kTrue)
    if (text == t) return true;
  for (const char* f : kFalse)
    if (text == f) return false;
  return std::nullopt;
}

std::string format_value(int64_t v) { return fmt::format("{}", v); }

std::string format_value(double v) {
  std::string s = fmt::format("{}", v);  // shortest text that reads back exactly
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string format_value(bool v) { return v ? "true" : "false"; }

std::string format_value(const std::string& v) {
  YAML::Emitter out;
  out << YAML::DoubleQuoted << v;
  return out.c_str();
}

std::string format_value(const std::vector<std::string>& v) {
  std::vector<std::string> items;
  for (const auto& s : v) items.push_back(format_value(s));
  return fmt::format("[{}]", fmt::join(items, ", "));
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];  // row[i-1][j-1]
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

bool is_config_key(const std::string& key) {
  for (const auto& info : run_config_schema())
    if (info.key == key) return true;
  return false;
}

bool is_config_section(const std::string& key) {
  for (const auto& info : run_config_schema())
    if (info.key.size() > key.size() && info.key.compare(0, key.size(), key) == 0 &&
        info.key[key.size()] == '.')
      return true;
  return false;
}

std::string describe_valid_keys_near(const std::string& key) {
  // The deepest section that prefixes `key`: "model.rope_scaling.x" -> "model.rope_scaling".
  // Sections are the dotted prefixes of schema keys; one pass over them, whatever the length
  // of `key` (stripping its components one by one took time quadratic in its dots).
  std::string section;
  for (const auto& info : run_config_schema())
    for (size_t dot = info.key.find('.'); dot != std::string::npos; dot = info.key.find('.', dot + 1))
      if (dot > section.size() && key.size() > dot && key[dot] == '.' && key.compare(0, dot, info.key, 0, dot) == 0)
        section = info.key.substr(0, dot);
  const std::string prefix = section.empty() ? "" : section + ".";
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const auto& info : run_config_schema()) {
    if (info.key.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = info.key.substr(prefix.size());
    std::string name = rest.substr(0, rest.find('.'));  // a subsection counts once
    if (seen.insert(name).second) names.push_back(name);
  }
  if (section.empty()) return fmt::format("valid top-level keys: {}", fmt::join(names, ", "));
  return fmt::format("valid keys under '{}': {}", section, fmt::join(names, ", "));
}

}  // namespace config_detail
}  // namespace temper
