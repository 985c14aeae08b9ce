#include "train/metrics.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace temper {

namespace {

// The lines of `path` whose "step" is <= last (unparsable lines are dropped).
std::string lines_through(const std::string& path, int64_t last) {
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= last)
      kept += line + "\n";
  }
  return kept;
}

// Writes `text` to `path` through a temp file and a rename, so a crash loses nothing.
void replace_file(const std::string& path, const std::string& text, const char* what) {
  const std::string temp = path + ".tmp";
  FILE* f = std::fopen(temp.c_str(), "w");
  const bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (!f || std::fclose(f) != 0 || !ok || std::rename(temp.c_str(), path.c_str()) != 0)
    fail("cannot rewrite {} '{}': {}", what, path, std::strerror(errno));
}

void append(FILE* f, const std::string& s, const std::string& path) {
  if (std::fwrite(s.data(), 1, s.size(), f) != s.size() || std::fflush(f) != 0)
    fail("cannot write metrics file '{}': {}", path, std::strerror(errno));
}

std::string csv_cell(const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
  if (v.is_number()) return v.dump();
  std::string text = v.is_string() ? v.get<std::string>() : v.dump();
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char ch : text) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return quoted + "\"";
}

std::string csv_header(const std::vector<std::string>& columns) {
  std::string s;
  for (size_t i = 0; i < columns.size(); ++i) s += (i ? "," : "") + columns[i];
  return s + "\n";
}

}  // namespace

const std::vector<std::string>& metrics_csv_columns() {
  static const std::vector<std::string> columns = {
      "step", "loss", "val_loss", "val_perplexity", "lr", "grad_norm", "tokens", "target_tokens",
      "tokens_seen", "tokens_per_s", "mfu", "elapsed_s", "memory_bytes", "peak_memory_bytes",
      "skipped", "loss_scale", "grad_comm_bytes"};
  return columns;
}

std::string csv_row(const nlohmann::json& line, const std::vector<std::string>& columns) {
  std::string s;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i) s += ",";
    if (line.contains(columns[i])) s += csv_cell(line[columns[i]]);
  }
  return s;
}

MetricsWriter::MetricsWriter(const std::string& path, int64_t keep_through_step,
                             const std::string& csv_path, std::vector<std::string> csv_columns)
    : path_(path), csv_path_(csv_path), columns_(std::move(csv_columns)) {
  std::string kept;
  if (keep_through_step >= 0) {
    kept = lines_through(path, keep_through_step);
    replace_file(path, kept, "metrics file");
  }
  if (!csv_path_.empty()) {
    std::string csv = csv_header(columns_);
    std::istringstream lines(kept);
    for (std::string line; std::getline(lines, line);)
      csv += csv_row(nlohmann::json::parse(line), columns_) + "\n";
    replace_file(csv_path_, csv, "metrics file");
  }
  file_ = std::fopen(path.c_str(), keep_through_step >= 0 ? "a" : "w");
  if (!file_) fail("cannot open metrics file '{}': {}", path, std::strerror(errno));
  if (csv_path_.empty()) return;
  csv_ = std::fopen(csv_path_.c_str(), "a");
  if (!csv_) {
    std::fclose(file_);
    fail("cannot open metrics file '{}': {}", csv_path_, std::strerror(errno));
  }
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
  if (csv_) std::fclose(csv_);
}

void MetricsWriter::write(const nlohmann::json& line) {
  append(file_, line.dump() + "\n", path_);
  if (csv_) append(csv_, csv_row(line, columns_) + "\n", csv_path_);
}

}  // namespace temper
