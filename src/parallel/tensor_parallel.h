// Megatron-style tensor parallelism as a handful of named communication points the model
// calls at fixed places. With one rank every operation is a no-op, so tp = 1 runs the
// same code path without communication.
//
//   column-parallel linear (q, k, v, gate, up): weight rows split; forward needs nothing,
//       backward sums the input gradient over ranks      -> reduce_column_parallel_input_grad
//   row-parallel linear (o, down): weight columns split; forward sums the partial
//       outputs over ranks                                -> reduce_row_parallel_output
//   vocab-parallel embedding: table rows split; ids outside the slice look up a zero row,
//       the lookups are summed over ranks                 -> reduce_embedding_output
//   vocab-parallel cross-entropy: LM-head rows split; per-row (max, Σexp, target logit)
//       partials are all-gathered, never the logits       -> gather_cross_entropy_partials
// and, for LoRA / DoRA on those projections (src/peft/projection.h):
//   row-parallel base, A split by columns: the hidden s·x·Aᵀ [T, r] is a partial sum
//                                                         -> reduce_lora_row_hidden
//   column-parallel base, B split by rows: its gradient dh [T, r] is a partial sum
//                                                         -> reduce_lora_column_hidden_grad
//   DoRA on a row-parallel base: each row's Σ w² is split over the columns
//                                                         -> reduce_dora_row_norms
//   prefix tuning's encoder (replicated): each rank has the gradient of its own heads'
//       columns of the encoder output                     -> reduce_prefix_encoder_grad
#pragma once
#include <cstdint>
#include <vector>

#include "model/parameters.h"
#include "parallel/communicator.h"

namespace temper {

class TensorParallel {
 public:
  TensorParallel() = default;  // one rank
  // `group` moves the backend's tensors (MpiComm on the CPU, NcclComm on CUDA); `host`
  // (default: the same) moves small host values such as gradient-norm partial sums.
  explicit TensorParallel(Communicator& group, Communicator* host = nullptr)
      : comm_(&group), host_(host ? host : &group) {}

  int size() const { return comm_ ? comm_->size() : 1; }
  int rank() const { return comm_ ? comm_->rank() : 0; }
  bool active() const { return size() > 1; }

  void reduce_row_parallel_output(Tensor out) const { sum(out); }
  void reduce_column_parallel_input_grad(Tensor dx) const { sum(dx); }
  void reduce_embedding_output(Tensor out) const { sum(out); }
  void reduce_lora_row_hidden(Tensor h) const { sum(h); }
  void reduce_lora_column_hidden_grad(Tensor dh) const { sum(dh); }
  void reduce_dora_row_norms(Tensor sumsq) const { sum(sumsq); }
  void reduce_prefix_encoder_grad(Tensor dout) const { sum(dout); }
  // all[R, n, 3] = every rank's mine[n, 3], in rank order.
  void gather_cross_entropy_partials(Tensor all, Tensor mine) const;

  // This rank's slice [begin, begin + V / size) of a vocabulary of V tokens.
  int64_t vocab_begin(int64_t V) const { return V / size() * rank(); }
  // ids of the full vocabulary -> ids within this rank's slice, -1 outside it.
  std::vector<int32_t> local_ids(const std::vector<int32_t>& ids, int64_t V) const;

  // Σ over ranks of (sharded sum, replicated sum / size): replicated parameters are the
  // same on every rank and must count once.
  double combine_sum_squares(double sharded, double replicated) const;

 private:
  void sum(Tensor x) const {
    if (active()) comm_->all_reduce(x, ReduceOp::Sum);
  }
  Communicator* comm_ = nullptr;
  Communicator* host_ = nullptr;
};

// Σ g² of the trainable gradients of this rank, split into tensor-parallel shards and
// replicated tensors, over the elements [begin, end) of the flat buffer (all: end = -1).
struct SumSquares {
  double sharded = 0.0, replicated = 0.0;
};
SumSquares gradient_sum_squares(const ParameterSet& params, Backend& backend, int64_t begin = 0,
                                int64_t end = -1);

// The full (unsharded) value of every parameter, host bytes in the parameter dtype, in
// declaration order (an NF4 weight dequantized). Collective over the tp group.
std::vector<std::vector<uint8_t>> gather_full_parameters(ParameterSet& params, Backend& backend,
                                                         const TensorParallel& tp,
                                                         Communicator* group);

}  // namespace temper
