// Named parameters in flat allocations, as llm.c does. Names are Hugging Face names (PEFT's
// for adapters); every rule (freezing, decay, export, checkpoints) keys on them.
//
// Two regions, fixed at allocate():
//   trainable  one flat value buffer and one flat gradient buffer of the same layout
//              (padded for equal ZeRO shards); data parallelism, ZeRO and AdamW work on it
//   frozen     one flat value buffer and nothing else: no gradient, no optimizer state
// and, outside both, NF4-quantized frozen weights (QLoRA): no dense value at all, their
// packed codes and block statistics in one more allocation (`nf4`, peft/nf4.h).
// A parameter's `offset` is its element offset in its own region. Within a region the
// parameters keep declaration order, so any run of consecutive parameters (a block) has
// its trainable gradients contiguous.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "kernels/backend.h"

namespace temper {

// Normal: N(0, std); Adapter: set by the PEFT code once the base weights exist
// (ParameterSet::init skips it).
enum class ParamInit { Normal, Ones, Zeros, Adapter };
// A random draw: N(0, scale²) or U(-scale, scale).
enum class Draw { Normal, Uniform };

struct Parameter {
  std::string name;
  Shape shape;
  ParamInit init = ParamInit::Normal;
  bool trainable = true;
  bool is_norm_or_bias = false;  // excluded from weight decay by default
  int64_t offset = 0;            // element offset in its region's flat buffer(s)
  // Tensor parallelism: this rank holds shard `shard` of `shards` equal pieces of the
  // full tensor along `split_dim` (-1: the whole tensor, replicated).
  Shape full_shape;
  int split_dim = -1;
  int shard = 0, shards = 1;
  Tensor value;                  // view into its region's value buffer (quantized: undefined)
  Tensor grad;                   // view into the gradient buffer (frozen: undefined)
  // QLoRA: stored as NF4 (frozen, 2-D, this rank's block), dequantized where it is used.
  bool quantized = false;
  bool double_quant = true;
  Nf4Weight nf4;
};

class ParameterSet {
 public:
  explicit ParameterSet(Backend& backend) : backend_(backend) {}

  // Declare before allocate(); returns the index. `full_shape` is the logical tensor;
  // with shards > 1 this rank holds piece `shard` of it along split_dim.
  size_t declare(std::string name, Shape full_shape, ParamInit init, bool is_norm_or_bias,
                 int split_dim = -1, int shards = 1, int shard = 0);
  // Lays out the two regions by each parameter's `trainable` flag (set them first):
  // the trainable values and, with `gradients`, their gradients, each padded with zeros
  // to a multiple of `pad_multiple` elements (equal ZeRO shards); the frozen values.
  // Without `gradients` no gradient buffer exists: ZeRO-2 binds gradient storage group
  // by group while backward runs (bind_grads).
  void allocate(DType dtype, int64_t pad_multiple = 1, bool gradients = true);
  bool allocated() const { return arena_ != nullptr; }
  // Points the gradients of the trainable parameters among [first, last) into `buffer`
  // (their elements in declaration order from buffer[0]).
  void bind_grads(size_t first, size_t last, Tensor buffer);
  // The trainable elements of parameters [first, last): their first offset and count in
  // the trainable region (count 0 when all of them are frozen).
  std::pair<int64_t, int64_t> trainable_range(size_t first, size_t last) const;
  // HF-style init of every non-adapter parameter: N(0, std) for matrices and embeddings,
  // ones for norms, zeros for biases; each tensor draws from its own Philox stream keyed
  // by (seed, init, name), element i of the full tensor from stream element i, so a shard
  // holds exactly its part.
  void init(uint64_t seed, float std);
  // Draws parameter `index` from the same stream the same way (any shard: its part).
  void draw(size_t index, uint64_t seed, Draw kind, float scale);
  void zero_grads();

  Parameter& operator[](size_t i) { return params_[i]; }
  const Parameter& operator[](size_t i) const { return params_[i]; }
  size_t size() const { return params_.size(); }
  std::vector<Parameter>& all() { return params_; }
  const std::vector<Parameter>& all() const { return params_; }
  Parameter* find(const std::string& name);
  const Parameter* find(const std::string& name) const;
  Parameter& at(const std::string& name);  // throws naming the missing tensor
  size_t index_of(const std::string& name) const;  // throws naming the missing tensor

  Backend& backend() const { return backend_; }
  DType dtype() const { return values_.dtype(); }
  // The trainable region's flat buffers, padding included ([padded_numel()]).
  Tensor flat_values() const { return values_; }
  Tensor flat_grads() const { return grads_; }
  Tensor frozen_values() const { return frozen_; }
  int64_t numel() const { return trainable_numel_ + frozen_numel_ + quantized_numel(); }  // all, no padding
  int64_t trainable_numel() const { return trainable_numel_; }        // no padding
  int64_t frozen_numel() const { return frozen_numel_; }
  int64_t padded_numel() const { return values_.numel(); }  // the trainable region
  size_t bytes() const {
    return values_.nbytes() + frozen_.nbytes() + (grads_.defined() ? grads_.nbytes() : 0);
  }
  size_t value_bytes() const { return values_.nbytes() + frozen_.nbytes() + quantized_bytes_; }
  size_t quantized_bytes() const { return quantized_bytes_; }  // NF4 storage
  int64_t quantized_numel() const;

 private:
  void allocate_quantized();
  void init_quantized(size_t index, uint64_t seed, float std);
  Backend& backend_;
  std::vector<Parameter> params_;
  std::unique_ptr<Arena> arena_;
  Tensor values_, grads_, frozen_;
  int64_t trainable_numel_ = 0, frozen_numel_ = 0;
  size_t quantized_bytes_ = 0;
};

}  // namespace temper
