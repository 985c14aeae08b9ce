// One optimizer step over a global batch of micro-batches (gradient accumulation).
// The loss is normalised by the number of target tokens in the WHOLE global batch, so
// how the batch is split into micro-batches never changes the update.
#pragma once
#include <vector>

#include "data/batch.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/loss_scale.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"
#include "parallel/zero.h"

namespace temper {

struct StepResult {
  double loss = 0.0;          // mean over the global batch's target tokens
  int64_t target_tokens = 0;
  int64_t tokens = 0;         // all tokens processed, padding included
  double grad_norm = 0.0;     // before clipping
  float clip = 1.0f;          // factor applied to the gradients
  bool skipped = false;       // non-finite loss or gradient norm: no update was made
  uint64_t grad_comm_bytes = 0;  // dp traffic for gradients and parameters (not scalars)
};

struct StepOptions {
  // f16: gradients are computed for scale × loss and divided back before clipping and
  // the update; a step whose gradient norm is not finite halves the scale.
  DynamicLossScale* loss_scale = nullptr;
  // Data parallelism: `dp` sums scalars (target counts, losses) over host buffers, and
  // `grad_sync` sums the gradients in buckets during the last micro-batch's backward.
  Communicator* dp = nullptr;
  // Where gradients and parameters travel when that is not `dp` (NcclComm on CUDA); its
  // byte counter gives grad_comm_bytes.
  Communicator* dp_tensors = nullptr;
  GradientBuckets* grad_sync = nullptr;
  // ZeRO-1 instead of grad_sync: reduce-scatter the gradients, update this rank's shard
  // (the optimizer was built over zero->shard()), all-gather the parameters.
  ZeroShards* zero = nullptr;
  // ZeRO-2: gradients reduce-scattered group by group as backward finishes them, into
  // per-rank shards (the model has no full gradient buffer; the optimizer was built over
  // zero2->segments()); parameters all-gathered after the update.
  ZeroGradientShards* zero2 = nullptr;
  // Tensor parallelism: gradient norms sum the shards over the tp group.
  const TensorParallel* tp = nullptr;
  // The 0-based index of this step in the run: with the rank's place in the global batch
  // it numbers each micro-batch for the dropout masks (Transformer::set_micro_batch_index).
  int64_t step_index = 0;
};

// `micro` is this rank's share of the global batch. A step whose loss or gradient norm
// is not finite makes no update and reports skipped (every rank alike: both are sums
// over all ranks).
StepResult train_step(Transformer& model, AdamW& optimizer, const std::vector<MicroBatch>& micro,
                      float lr, double max_grad_norm, const StepOptions& options = {});

// Mean loss over batches, without gradients.
double evaluate(Transformer& model, const std::vector<MicroBatch>& batches);

}  // namespace temper
