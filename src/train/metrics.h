// Per-step metrics as JSON lines in OUT_DIR/metrics.jsonl (one object per line, flushed
// each step so a crashed run keeps what it logged), and the same records as rows of
// OUT_DIR/metrics.csv for spreadsheets and plotting tools (docs/user-guide.md, "Metrics").
// The run's events (start, resume, checkpoint, end) go to OUT_DIR/events.jsonl the same way.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace temper {

// The columns of metrics.csv, in order: a step line fills most, a validation line step,
// val_loss and val_perplexity; a cell the line has no value for is empty.
const std::vector<std::string>& metrics_csv_columns();

class MetricsWriter {
 public:
  // keep_through_step < 0: truncates an existing file. Otherwise (a resume) keeps the
  // lines of steps <= keep_through_step and drops later ones (logged by a run that
  // stopped after its last checkpoint), then appends. With a csv_path, the CSV is written
  // afresh from the lines kept (a header row, then one row per line) and appended to.
  MetricsWriter(const std::string& path, int64_t keep_through_step = -1,
                const std::string& csv_path = "", std::vector<std::string> csv_columns = {});
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const nlohmann::json& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_, csv_path_;
  std::vector<std::string> columns_;
  FILE* file_ = nullptr;
  FILE* csv_ = nullptr;
};

// One CSV row of `line`'s values in `columns` order (numbers as JSON writes them, true/false
// as 1/0, text quoted when it must be), without the newline.
std::string csv_row(const nlohmann::json& line, const std::vector<std::string>& columns);

}  // namespace temper
