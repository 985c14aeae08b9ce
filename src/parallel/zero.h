// ZeRO stage 1 over the data-parallel group: the flat parameter buffer (padded to a
// multiple of dp) is cut into dp equal shards; rank r's AdamW keeps fp32 master weights
// and moments for shard r only. Each step: reduce-scatter the gradients (rank r receives
// the global sum for its shard), update the shard, all-gather the parameters. That moves
// Ψ + Ψ bytes, the 2Ψ of plain data parallelism, and needs 4 + 12/dp bytes per parameter
// with bf16 parameters and gradients (2 + 2, and 12 bytes of fp32 state split dp ways).
#pragma once
#include "model/parameters.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "parallel/tensor_parallel.h"

namespace temper {

class ZeroShards {
 public:
  ZeroShards(ParameterSet& params, Communicator& dp);
  // This rank's elements of the flat buffers.
  ElementRange shard() const { return {begin_, end_}; }
  // Gradients: rank r's shard of the flat gradient buffer becomes the sum over ranks.
  void reduce_scatter_gradients();
  // Σ g² over the trainable parameters' elements of every shard (after the
  // reduce-scatter), summed over dp, split into tensor-parallel shards and replicated.
  SumSquares gradient_sum_squares(Backend& backend);
  // Parameters: every rank's updated shard to every rank.
  void all_gather_parameters();

 private:
  ParameterSet& params_;
  Communicator& dp_;
  int64_t begin_ = 0, end_ = 0;
};

// Bytes this rank holds for the model and its optimizer, by kind, and per parameter.
struct MemoryReport {
  size_t parameters = 0, gradients = 0, optimizer = 0;
  int64_t numel = 0;
  double bytes_per_parameter() const;
  std::string str() const;
};
MemoryReport memory_report(const ParameterSet& params, const AdamW& optimizer);

}  // namespace temper
