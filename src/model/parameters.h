// Named parameters in two flat allocations (values, gradients), as llm.c does. Names are
// Hugging Face names; every rule (freezing, decay, export, checkpoints) keys on them.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "kernels/backend.h"

namespace temper {

enum class ParamInit { Normal, Ones, Zeros };

struct Parameter {
  std::string name;
  Shape shape;
  ParamInit init = ParamInit::Normal;
  bool trainable = true;
  bool is_norm_or_bias = false;  // excluded from weight decay by default
  int64_t offset = 0;            // element offset in the flat buffers
  // Tensor parallelism: this rank holds shard `shard` of `shards` equal pieces of the
  // full tensor along `split_dim` (-1: the whole tensor, replicated).
  Shape full_shape;
  int split_dim = -1;
  int shard = 0, shards = 1;
  Tensor value;                  // view into the flat value buffer
  Tensor grad;                   // view into the flat gradient buffer (frozen: undefined)
};

class ParameterSet {
 public:
  explicit ParameterSet(Backend& backend) : backend_(backend) {}

  // Declare before allocate(); returns the index. `full_shape` is the logical tensor;
  // with shards > 1 this rank holds piece `shard` of it along split_dim.
  size_t declare(std::string name, Shape full_shape, ParamInit init, bool is_norm_or_bias,
                 int split_dim = -1, int shards = 1, int shard = 0);
  // One flat value buffer of `dtype`, one flat gradient buffer of the same dtype, each
  // padded with zeros to a multiple of `pad_multiple` elements (equal ZeRO shards).
  // Without `gradients` no gradient buffer exists: ZeRO-2 binds gradient storage group
  // by group while backward runs (bind_grads).
  void allocate(DType dtype, int64_t pad_multiple = 1, bool gradients = true);
  // Points the gradients of parameters [first, last) into `buffer` (their elements in
  // declaration order from buffer[0]).
  void bind_grads(size_t first, size_t last, Tensor buffer);
  // HF-style init: N(0, std) for matrices and embeddings, ones for norms, zeros for biases;
  // each tensor draws from its own Philox stream keyed by (seed, init, name), element i
  // of the full tensor from stream element i, so a shard holds exactly its part.
  void init(uint64_t seed, float std);
  void zero_grads();

  Parameter& operator[](size_t i) { return params_[i]; }
  const Parameter& operator[](size_t i) const { return params_[i]; }
  size_t size() const { return params_.size(); }
  std::vector<Parameter>& all() { return params_; }
  const std::vector<Parameter>& all() const { return params_; }
  Parameter* find(const std::string& name);
  Parameter& at(const std::string& name);  // throws naming the missing tensor

  // The flat buffers, padding included ([padded_numel()]).
  Tensor flat_values() const { return values_; }
  Tensor flat_grads() const { return grads_; }
  int64_t numel() const { return numel_; }  // parameters, without padding
  int64_t padded_numel() const { return values_.numel(); }
  size_t bytes() const { return values_.nbytes() + (grads_.defined() ? grads_.nbytes() : 0); }
  int64_t trainable_numel() const;

 private:
  Backend& backend_;
  std::vector<Parameter> params_;
  std::unique_ptr<Arena> arena_;
  Tensor values_, grads_;
  int64_t numel_ = 0;
};

}  // namespace temper
