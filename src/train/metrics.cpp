#include "train/metrics.h"

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace temper {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "w");
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
