// A TrainingRun to and from checkpoints: which checkpoint a run starts from, loading it
// (under any layout: the checkpoint library reshards), and saving one atomically.
#pragma once
#include <optional>
#include <string>

#include "train/checkpointing.h"
#include "train/training_run.h"

namespace temper {

struct StartPoint {
  std::string path;  // the checkpoint file
  bool own = false;  // from OUT_DIR/checkpoints (a resume), else checkpoint.load
};

// Decided on rank 0 and shared with every rank (collective over place.world):
//   checkpoint.resume and OUT_DIR/checkpoints has one -> the newest (resume)
//   else checkpoint.load set                          -> that file (or the newest in
//                                                        that directory)
//   else                                              -> nullopt: a fresh start
// Errors: checkpoint.load naming nothing; checkpoint.resume=false while OUT_DIR already
// has checkpoints (a fresh run would mix its saves with them).
std::optional<StartPoint> choose_start_point(const RunConfig& config, const CheckpointDir& dir,
                                             Placement& place);

// checkpoint.load's value as a file: a checkpoint file, or the newest in a run directory or
// its checkpoints/. Errors name the path.
std::string resolve_checkpoint_load(const std::string& load);

// The model shape stored in a checkpoint (a run's, or `temper convert`'s): its HF
// config.json. `load` as checkpoint.load takes it; "" is an error saying what to set.
ModelConfig model_config_of_checkpoint(const std::string& load);

// Loads the model, optimizer state, loader position, loss scale and counters from
// `start` into `run` (collective). Errors name the file and add what to do about it.
RunCounters load_start_point(TrainingRun& run, const StartPoint& start);

// Saves `run` at counters.step as OUT_DIR/checkpoints/step-N.h5 (collective), moves
// `latest` and prunes to checkpoint.keep. A failure (a full disk, ...) removes the
// temporary file, leaves every earlier checkpoint as it was and throws naming the file.
std::string save_run_checkpoint(TrainingRun& run, const CheckpointDir& dir,
                                const RunCounters& counters);

}  // namespace temper
