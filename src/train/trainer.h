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
// config.json) or model.config, then the model.* overrides; finalized.
ModelConfig model_config_for_run(const RunConfig& config);

struct RunSummary {
  std::vector<double> losses;      // training loss per step
  std::vector<double> val_losses;  // per evaluation
  size_t peak_bytes = 0;           // device memory high-water mark
  int64_t skipped_steps = 0;       // steps with non-finite gradients (no update)
};

RunSummary run_training(const RunConfig& config);

// The generated-text corpus a config describes (data.* keys and the seed).
SyntheticTextOptions synthetic_options(const RunConfig& config);

}  // namespace temper
