// Per-step metrics as JSON lines in OUT_DIR/metrics.jsonl (one object per line, flushed
// each step so a crashed run keeps what it logged).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace temper {

class MetricsWriter {
 public:
  // keep_through_step < 0: truncates an existing file. Otherwise (a resume) keeps the
  // lines of steps <= keep_through_step and drops later ones (logged by a run that
  // stopped after its last checkpoint), then appends.
  explicit MetricsWriter(const std::string& path, int64_t keep_through_step = -1);
  ~MetricsWriter();
  void write(const nlohmann::json& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FILE* file_ = nullptr;
};

}  // namespace temper
