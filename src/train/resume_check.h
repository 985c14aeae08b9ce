// Whether a run may resume from its own checkpoint under the config it is started with now.
//
// A resume continues bit for bit (on the CPU) only when nothing that decides the run's
// course changed since the checkpoint's run started: the seed, the model section, the data
// section, the peft section, the optimizer (AdamW and the lr schedule), the rows a
// micro-batch holds (train.micro_batch_size × train.seq_len) and the global batch
// (train.grad_accum × data-parallel ranks; the rank count itself may change), and for a
// decaying schedule the run's length (train.steps / train.epochs). Logging, evaluation,
// checkpointing, the layout (parallel.*), recompute and the backend may change.
//
// The trainer refuses such a change, naming each key with its value then and now, unless
// checkpoint.resume=force (then it warns and goes on).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "optim/schedule.h"
#include "train/run_config.h"
#include "train/training_run.h"

namespace temper {

// What decides a run's course besides its config keys: the data-parallel size and the
// lr schedule with its resolved length.
struct RunShape {
  int64_t dp = 1;
  LrSchedule schedule;
};

// One line per change that breaks exactness, e.g. "train.seq_len: 128 -> 256" or
// "global batch (train.grad_accum × dp): 2 × 1 -> 2 × 2"; empty when none does.
std::vector<std::string> exactness_breaking_changes(const RunConfig& then, const RunShape& then_shape,
                                                    const RunConfig& now, const RunShape& now_shape);

// Before `run` loads `checkpoint` (cheap: the meta only). `own`: a resume from OUT_DIR, where
// exactness_breaking_changes is an error (or with checkpoint.resume=force a warning) that
// lists them. checkpoint.load from another run: a warning when its data order differs (its
// loader position then points into another order). An unreadable checkpoint is left to the
// load to report. Rank 0 logs; every rank decides the same.
void check_start_config(const TrainingRun& run, const std::string& checkpoint, bool own);

}  // namespace temper
