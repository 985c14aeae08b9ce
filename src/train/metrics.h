// Per-step metrics as JSON lines in OUT_DIR/metrics.jsonl (one object per line, flushed
// each step so a crashed run keeps what it logged).
#pragma once
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace temper {

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);  // truncates an existing file
  ~MetricsWriter();
  void write(const nlohmann::json& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FILE* file_ = nullptr;
};

}  // namespace temper
