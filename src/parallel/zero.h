// ZeRO stage 1 over the data-parallel group: the flat parameter buffer (padded to a
// multiple of dp) is cut into dp equal shards; rank r's AdamW keeps fp32 master weights
// and moments for shard r only. Each step: reduce-scatter the gradients (rank r receives
// the global sum for its shard), update the shard, all-gather the parameters. That moves
// Ψ + Ψ bytes, the 2Ψ of plain data parallelism, and needs 4 + 12/dp bytes per parameter
// with bf16 parameters and gradients (2 + 2, and 12 bytes of fp32 state split dp ways).
#pragma once
#include "model/parameters.h"
#include <utility>
#include <vector>

#include "core/allocator.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "parallel/tensor_parallel.h"

namespace temper {

class ZeroShards {
 public:
  // `dp` moves the backend's buffers; `host` (default: dp) small host values.
  ZeroShards(ParameterSet& params, Communicator& dp, Communicator* host = nullptr);
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
  Communicator& host_;
  int64_t begin_ = 0, end_ = 0;
};

// Bytes this rank holds for the model and its optimizer, by kind, and per parameter.
struct MemoryReport {
  size_t parameters = 0, gradients = 0, optimizer = 0;
  size_t transient = 0;  // ZeRO-2 gradient buffers alive during backward (not per parameter)
  int64_t numel = 0;
  double bytes_per_parameter() const;
  std::string str() const;
};
MemoryReport memory_report(const ParameterSet& params, const AdamW& optimizer,
                           const class ZeroGradientShards* zero2 = nullptr);

}  // namespace temper

namespace temper {

// ZeRO stage 2: gradients are sharded too, and the full gradients never exist at once.
// Each gradient group of the model (final norm + head, each block, the embedding) gets a
// transient buffer only while backward fills it (the model's bind hook); when the group
// is done (ready hook) the buffer, padded to a multiple of dp, is reduce-scattered and
// this rank's 1/dp is added into a persistent shard-gradient buffer, then the transient
// buffer is released. Every group is partitioned over dp on its own, so rank r owns the
// r-th slice of each group; AdamW updates those slices (segments()) and the parameters are
// all-gathered group by group. Per rank: parameters 2 + gradients 2/dp + optimizer 12/dp
// bytes per parameter in bf16, plus the transient buffers (a couple of groups at most).
class ZeroGradientShards {
 public:
  ZeroGradientShards(ParameterSet& params, Communicator& dp, Backend& backend,
                     const std::vector<std::pair<size_t, size_t>>& groups,
                     Communicator* host = nullptr);
  void bind(size_t first, size_t last);   // model's grad-bind hook
  void ready(size_t first, size_t last);  // model's grad-ready hook
  void zero();                            // start of a step
  // This rank's pieces of every trainable parameter, with their shard gradients.
  std::vector<AdamWSegment> segments() const;
  SumSquares gradient_sum_squares();  // over the shards, summed over dp
  void all_gather_parameters();
  size_t shard_bytes() const { return shards_.nbytes(); }
  size_t transient_peak_bytes() const { return pool_.peak_bytes(); }

 private:
  struct Group {
    size_t first = 0, last = 0;
    int64_t offset = 0, numel = 0, shard = 0;  // flat offset, elements, elements per rank
    int64_t shard_offset = 0;                  // where this rank's slice sits in shards_
  };
  const Group& group_of(size_t first) const;
  ParameterSet& params_;
  Communicator& dp_;
  Communicator& host_;
  Backend& backend_;
  std::vector<Group> groups_;
  Arena state_, pool_;
  Tensor shards_;  // [Σ shard] this rank's summed gradient slices
  std::vector<std::pair<size_t, Arena::Mark>> bound_;  // stack of (group first, mark)
  std::vector<Tensor> buffers_;                          // the bound groups' buffers
};

}  // namespace temper
