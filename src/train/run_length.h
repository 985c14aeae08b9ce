// How long a run is and how often it validates, from train.steps / train.epochs and
// train.eval_every, once the training data is known.
//
//   train.steps = N > 0     N optimizer steps
//   train.epochs = E > 0    ceil(E × micro-batches per epoch / micro-batches per step)
//   both 0 (the defaults)   one epoch
// where a step takes train.grad_accum × dp micro-batches (the global batch) and an epoch is
// one pass over the training split in micro-batches of train.micro_batch_size rows of
// train.seq_len tokens (DocumentLoader::batches_per_epoch). More data-parallel ranks: a
// larger global batch, so fewer steps for the same epochs.
//
//   train.eval_every = -1 (the default): every 10% of the run (at least every step), when
//   there is a validation split; 0: never; N > 0: every N steps. Always after the last step
//   too when validating at all.
#pragma once
#include <cstdint>
#include <string>

#include "train/run_config.h"

namespace temper {

struct RunLength {
  int64_t steps = 0;              // optimizer steps of the whole run
  int64_t batches_per_epoch = 0;  // micro-batches in one pass over the training split
  int64_t micro_per_step = 1;     // grad_accum × dp
  int64_t eval_every = 0;         // 0: no validation
  double epochs() const;          // steps × micro_per_step / batches_per_epoch
  // "120 steps (train.epochs=1.5: 80 micro-batches of 4 × 128 tokens an epoch, 1 a step)"
  std::string describe(const RunConfig& config) const;
};

// `batches_per_epoch` from the training data, `dp` the data-parallel size, `has_validation`
// whether the validation split has documents.
RunLength run_length(const RunConfig& config, int64_t batches_per_epoch, int dp,
                     bool has_validation);

}  // namespace temper
