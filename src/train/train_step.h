// One optimizer step over a global batch of micro-batches (gradient accumulation).
// The loss is normalised by the number of target tokens in the WHOLE global batch, so
// how the batch is split into micro-batches never changes the update.
#pragma once
#include <vector>

#include "data/batch.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/loss_scale.h"

namespace temper {

struct StepResult {
  double loss = 0.0;          // mean over the global batch's target tokens
  int64_t target_tokens = 0;
  int64_t tokens = 0;         // all tokens processed, padding included
  double grad_norm = 0.0;     // before clipping
  float clip = 1.0f;          // factor applied to the gradients
  bool skipped = false;       // non-finite gradients: no update was made
};

// With a loss scale (f16), gradients are computed for scale × loss and divided back
// before clipping and the update. A step whose gradient norm is not finite makes no
// update and reports skipped (and halves the loss scale).
StepResult train_step(Transformer& model, AdamW& optimizer, const std::vector<MicroBatch>& micro,
                      float lr, double max_grad_norm, DynamicLossScale* loss_scale = nullptr);

// Mean loss over batches, without gradients.
double evaluate(Transformer& model, const std::vector<MicroBatch>& batches);

}  // namespace temper
