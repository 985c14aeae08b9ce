#include "train/out_dir.h"

#include <fmt/ranges.h>

#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

// The step lines of a metrics.jsonl (0 when missing).
int64_t metric_lines(const fs::path& file) {
  std::ifstream in(file);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.find("\"loss\"") != std::string::npos;
  return n;
}

}  // namespace

void remove_previous_run(const fs::path& out_dir) {
  std::vector<std::string> removed;
  for (const char* name : {"checkpoints", "final", "metrics.jsonl", "config.yaml", "model_config.json"}) {
    std::error_code ec;
    if (!fs::exists(out_dir / name, ec)) continue;
    fs::remove_all(out_dir / name, ec);
    if (ec) fail("--overwrite: cannot delete {}: {}", (out_dir / name).string(), ec.message());
    removed.push_back(name);
  }
  if (!removed.empty())
    log::info("--overwrite: deleted the earlier run's {} in {}", fmt::join(removed, ", "),
              out_dir.string());
}

void refuse_to_overwrite_a_run(const fs::path& out_dir) {
  std::error_code ec;
  const bool final_dir = fs::exists(out_dir / "final", ec);
  const int64_t steps = metric_lines(out_dir / "metrics.jsonl");
  if (final_dir)
    fail("out_dir {} holds a finished run (final/{}) and no checkpoint to resume from; a new run "
         "would overwrite it: choose another out_dir, or pass --overwrite to replace it",
         out_dir.string(), steps > 0 ? fmt::format(", {} steps in metrics.jsonl", steps) : "");
  // A run stopped before its first checkpoint (killed, or requeued): the same command
  // starts it again, from step 1.
  if (steps > 0)
    log::warn("out_dir {} holds {} logged steps of a run that stopped before saving a "
              "checkpoint: starting again from step 1 (its metrics.jsonl is replaced)",
              out_dir.string(), steps);
}

OutDirGuard::OutDirGuard(const fs::path& out_dir, bool active) : dir_(out_dir), active_(active) {
  if (!active_) return;
  std::error_code ec;
  existed_ = fs::is_directory(dir_, ec);
  if (existed_)
    for (const auto& e : fs::directory_iterator(dir_, ec)) before_.insert(e.path().filename().string());
}

OutDirGuard::~OutDirGuard() {
  if (!active_) return;
  std::error_code ec;
  if (!existed_) {
    fs::remove_all(dir_, ec);
    return;
  }
  std::vector<fs::path> added;
  for (const auto& e : fs::directory_iterator(dir_, ec))
    if (!before_.count(e.path().filename().string())) added.push_back(e.path());
  for (const fs::path& p : added) fs::remove_all(p, ec);
}

}  // namespace temper
