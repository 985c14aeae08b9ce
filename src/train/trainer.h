// The training run behind `temper train`: builds backend, model, data and optimizer from
// a RunConfig, then loops: accumulate micro-batches → clip → AdamW → log → evaluate.
#pragma once
#include <string>
#include <vector>

#include "data/synthetic.h"
#include "model/config.h"
#include "train/run_config.h"

namespace temper {

// The model shape for a run: preset (configs/models/<name>.json, or a path to a
// config.json), model.config or model.path; when none is set, the model config stored in
// `checkpoint` (or in checkpoint.load's when that is ""); then the model.* overrides;
// finalized.
ModelConfig model_config_for_run(const RunConfig& config, const std::string& checkpoint = "");

struct RunSummary {
  std::vector<double> losses;      // training loss per step this process ran
  std::vector<double> val_losses;  // per evaluation
  int64_t first_step = 1;          // the step losses[0] belongs to (> 1 after a resume)
  size_t peak_bytes = 0;           // device memory high-water mark
  int64_t skipped_steps = 0;       // steps with a non-finite loss or gradient norm (no update)
  std::string checkpoint;          // the last checkpoint saved ("" if none)
  int stop_signal = 0;             // stopped early by this signal (saved; resumable)
  bool failed = false;             // stopped by train.max_nonfinite_steps (saved; exit 1)
};

struct TrainOptions {
  bool overwrite = false;  // --overwrite: replace an earlier run in OUT_DIR (train/out_dir.h)
};

// Trains per `config`: from scratch, or continuing from OUT_DIR/checkpoints/latest
// (checkpoint.resume) or checkpoint.load; saves checkpoints per checkpoint.* and when
// stopped by SIGTERM / SIGUSR1 / SIGINT (which then ends the run early, not as an error).
// What an existing OUT_DIR may hold: train/out_dir.h.
RunSummary run_training(const RunConfig& config, const TrainOptions& options = {});

// For `temper show-config`: YAML comment lines giving the run's length (train/run_length.h)
// and validation interval as one process would resolve them, from the config's data; a
// config whose data or model cannot be read gets a line saying why instead.
std::string describe_run_length(const RunConfig& config);

// The generated-text corpus a config describes (data.* keys and the seed).
SyntheticTextOptions synthetic_options(const RunConfig& config);

}  // namespace temper
