#include "train/metrics.h"

#include <cerrno>
#include <cstring>
#include <fstream>

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

}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, int64_t keep_through_step) : path_(path) {
  if (keep_through_step >= 0) {
    // Through a temp file and a rename, so a crash here loses no logged step.
    const std::string kept = lines_through(path, keep_through_step), temp = path + ".tmp";
    FILE* f = std::fopen(temp.c_str(), "w");
    const bool ok = f && std::fwrite(kept.data(), 1, kept.size(), f) == kept.size();
    if (!f || std::fclose(f) != 0 || !ok || std::rename(temp.c_str(), path.c_str()) != 0)
      fail("cannot rewrite metrics file '{}': {}", path, std::strerror(errno));
  }
  file_ = std::fopen(path.c_str(), keep_through_step >= 0 ? "a" : "w");
  if (!file_) fail("cannot open metrics file '{}': {}", path, std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(const nlohmann::json& line) {
  std::string s = line.dump() + "\n";
  if (std::fwrite(s.data(), 1, s.size(), file_) != s.size() || std::fflush(file_) != 0)
    fail("cannot write metrics file '{}': {}", path_, std::strerror(errno));
}

}  // namespace temper
